"""The local engine: a stream of rows (a file or stdin) through one Classifier in bounded memory, chunk by chunk.

Bad rows (empty text, undecodable bytes, malformed records) are reported on stderr with their
line number and written as error rows; they never stop the other rows or vanish silently.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from fastsentiment.classifier import Classifier
from fastsentiment.jobs.job import CHUNK_CHARS, CHUNK_ROWS
from fastsentiment.jobs.journal import ChunkJournal
from fastsentiment.jobs.predict import predict_rows, warn_truncated_rows
from fastsentiment.jobs.rows import Row, RowSource, stream_name
from fastsentiment.jobs.sinks import ConsoleSink, OutputColumns, SchemaMismatch, output_record
from fastsentiment.tokenization import Truncations
from fastsentiment.windows import LongText

log = logging.getLogger("fastsentiment")


def classify_file(
    clf: Classifier,
    rows: RowSource,
    *,
    out: Path | None = None,
    as_json: bool = False,
    resume: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    long_text: LongText = LongText(),
) -> int:
    """Classify every row of a file (or stdin lines) to the console or `out`; return how many rows failed."""
    if out is None:
        with _Progress(rows, progress) as advance:
            return _classify_chunks(clf, _said_if_none(rows), chunk_rows, _printer(clf, as_json), long_text, advance)

    columns = OutputColumns(clf.labels, long_text.reports_lengths, rows.columns, rows.arrow_types)
    journal = ChunkJournal(out, {**job_identity(clf, rows), "long_text": asdict(long_text)}, resume, columns)
    if journal.resumed:
        sys.stderr.write(f"resuming after {journal.rows} rows ({len(journal.parts)} chunks already written)\n")
    try:
        return _classify_into(clf, rows, journal, chunk_rows, long_text, progress, out)
    finally:
        journal.release()  # finished, failed or interrupted: another run may take the output


def _classify_into(
    clf: Classifier,
    rows: RowSource,
    journal: ChunkJournal,
    chunk_rows: int,
    long_text: LongText,
    progress: bool,
    out: Path,
) -> int:
    commit = _committer(clf, journal, lambda chunk: rows.position, long_text.reports_lengths)
    with _Progress(rows, progress, already=journal.rows, start=journal.position) as advance:
        try:
            _classify_chunks(clf, _said_if_none(rows, journal.position), chunk_rows, commit, long_text, advance)
        except SchemaMismatch:
            journal.discard()  # the same rows would fail again on --resume
            raise
        except KeyboardInterrupt:
            if rows.stream or not journal.parts:  # a pipe cannot be read again; nothing written, nothing to resume
                journal.discard()
            else:
                sys.stderr.write(
                    f"interrupted after {journal.saved_rows} rows: the same command with --resume continues from there\n"
                )
            raise
        except Exception:
            # Failed before its first chunk was written (an option the model refuses, a full disk): nothing to
            # resume, and a journal left behind would make the next plain run ask for --resume; nor for a pipe's run,
            # which cannot be read again (its journal blocked every later run on that output).
            if rows.stream or not journal.parts:
                journal.discard()
            raise
    try:
        journal.finish()
    except KeyboardInterrupt:
        if rows.stream:  # every row is classified, but a pipe's run cannot be resumed to join them
            journal.discard()
        else:
            sys.stderr.write(
                f"interrupted while joining the parts of {out.name}: the same command with --resume finishes it\n"
            )
        raise
    return journal.failed


def _said_if_none(source: RowSource, start: dict | None = None) -> Iterator[Row]:
    """The rows of `source` from `start`; a file that holds none (empty, or a header alone) gets a warning, since an
    empty output with exit 0 would otherwise look like success. Empty stdin (or pipe) is a pipeline's ordinary case."""
    empty = True
    for row in source.rows(start=start):
        empty = False
        yield row
    if empty and start is None and not source.stream:
        log.warning("%s holds no rows to classify", source.path)


def classify_rows(
    clf: Classifier, rows: list[Row], out: Path | None, as_json: bool, long_text: LongText = LongText()
) -> int:
    """Classify rows given in memory (command-line texts) to the console or a file; return how many failed."""
    if out is None:
        return _classify_chunks(clf, rows, CHUNK_ROWS, _printer(clf, as_json), long_text)
    columns = OutputColumns(clf.labels, long_text.reports_lengths, ["text"])
    journal = ChunkJournal(out, {"texts": len(rows), "model": clf.model.content_hash}, False, columns)
    commit = _committer(clf, journal, lambda chunk: {"rows": chunk[-1].line}, long_text.reports_lengths)
    try:
        _classify_chunks(clf, rows, CHUNK_ROWS, commit, long_text)
        journal.finish()
    except BaseException:
        journal.discard()  # texts given as arguments cannot be resumed
        raise
    return journal.failed


def _printer(clf: Classifier, as_json: bool) -> Callable[[list[Row], list], None]:
    sink = ConsoleSink(clf.labels, as_json, clf.scores_are_probabilities)

    def write(chunk: list[Row], results: list) -> None:
        for row, result in zip(chunk, results, strict=True):
            sink.write(row, result)
        sys.stdout.flush()

    return write


def _committer(
    clf: Classifier, journal: ChunkJournal, position: Callable[[list[Row]], dict], lengths: bool
) -> Callable[[list[Row], list], None]:
    """Each classified chunk becomes one durable part, with the input position after it."""

    def commit(chunk: list[Row], results: list) -> None:
        records = [output_record(row, result, clf.labels, lengths) for row, result in zip(chunk, results, strict=True)]
        journal.commit(records, position(chunk), sum(result is None for result in results))

    return commit


def job_identity(clf: Classifier, rows: RowSource) -> dict:
    """What a resumed run must share with the interrupted one: the input, and everything that changes its rows'
    scores (the model, the backend and precision it runs in, where long texts are cut)."""
    identity = {
        "column": rows.column,
        "model": clf.model.content_hash,
        "labels": list(clf.labels),
        "backend": clf.backend.spec.name,
        "precision": clf.backend.precision,
        "max_length": clf.encoder.max_length,
    }
    if stream := stream_name(rows.path):  # cannot be resumed: the CLI asks --resume for a --file that is not a pipe
        return {"input": stream, **identity}
    stat = Path(rows.path).stat()
    return {
        "input": str(Path(rows.path).resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        **identity,
    }


def _classify_chunks(
    clf: Classifier,
    rows: Iterable[Row],
    chunk_rows: int,
    emit: Callable[[list[Row], list], None],
    long_text: LongText,
    advance: Callable[[int], None] = lambda rows: None,
) -> int:
    """Classify rows chunk by chunk; `emit` gets each chunk with its predictions (None for bad rows)."""
    failed, truncations = 0, Truncations()
    for chunk in chunks(rows, chunk_rows):
        # may fail rows too (over-long under long_text="error")
        predictions = predict_rows(clf, chunk, long_text, truncations)
        for row in chunk:
            if row.error is not None:
                failed += 1
                sys.stderr.write(f"error: {row.name}: {row.error}\n")
        emit(chunk, predictions)
        advance(len(chunk))
    if truncations.count > truncations.named:  # fewer were each named already
        warn_truncated_rows(truncations.count, clf.encoder)
    return failed


def chunks(rows: Iterable[Row], size: int, max_chars: int = CHUNK_CHARS) -> Iterator[list[Row]]:
    """Rows `size` at a time, or fewer once their texts hold `max_chars` characters. A chunk ends on its last row,
    never on a row read ahead: the source's position after a chunk is where a resumed run starts."""
    chunk: list[Row] = []
    chars = 0
    for row in rows:
        chunk.append(row)
        chars += len(row.text or "")
        if len(chunk) == size or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class _Progress:
    """A rich progress bar over the input (bytes, or rows for Parquet) with rows/s and time left."""

    def __init__(self, rows: RowSource, enabled: bool, already: int = 0, start: dict | None = None) -> None:
        self.rows = rows
        self.enabled = enabled and rows.total is not None
        self.counted = already
        self.completed = rows.consumed_at(start)  # a resumed run starts with its done part filled in

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda rows: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("classifying"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.progress.start()
        task = self.progress.add_task(
            "classify", total=self.rows.total, completed=self.completed, rows=self.counted, rate=0.0
        )
        started, start_count = time.perf_counter(), self.counted

        def advance(rows: int) -> None:
            self.counted += rows
            rate = (self.counted - start_count) / max(time.perf_counter() - started, 1e-9)
            self.progress.update(task, completed=self.rows.consumed, rows=self.counted, rate=rate)

        return advance

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()
