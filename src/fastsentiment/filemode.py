"""Classify a stream of rows (a file or stdin) in bounded memory, writing results as they come.

Bad rows (empty text, undecodable bytes, malformed records) are reported on stderr with their
line number and written as error rows; they never stop the other rows or vanish silently.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO, Any

from fastsentiment.classifier import Classifier
from fastsentiment.errors import InputError
from fastsentiment.tables import FORMATS, Row, clean_fields, iter_rows, open_text, table_format

CHUNK_ROWS = 2048


def classify_stream(
    clf: Classifier,
    source: str | Path,
    *,
    column: str | None = None,
    out: Path | None = None,
    as_json: bool = False,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Classify every row of `source` ('-' for stdin lines); return how many rows failed."""
    fmt = "txt" if str(source) == "-" else table_format(source)
    sink = open_sink(out, as_json, clf.labels)
    with open_text(source) as stream, sink, _progress_bar(source, stream, progress) as advance:
        return classify_rows(clf, iter_rows(stream, fmt, column), sink, advance, chunk_rows)


def classify_rows(
    clf: Classifier, rows: Iterable[Row], sink, advance=lambda rows: None, chunk_rows: int = CHUNK_ROWS
) -> int:
    """Classify rows chunk by chunk into `sink`, reporting bad rows; return how many failed."""
    failed = 0
    for chunk in _chunks(rows, chunk_rows):
        good = [row for row in chunk if row.error is None]
        predictions = iter(clf.predict([row.text for row in good]) if good else [])
        for row in chunk:
            if row.error is not None:
                failed += 1
                sys.stderr.write(f"error: line {row.line}: {row.error}\n")
                sink.write(row, None)
            else:
                sink.write(row, next(predictions))
        advance(len(chunk))
    return failed


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class _progress_bar:
    """A rich progress bar over the bytes of the input file (stdin has no known size)."""

    def __init__(self, source, stream: IO[str], enabled: bool) -> None:
        self.enabled = enabled and str(source) != "-"
        self.stream = stream
        self.total = os.path.getsize(source) if self.enabled else 0

    def __enter__(self):
        if not self.enabled:
            return lambda rows: None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("classifying"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.progress.start()
        task = self.progress.add_task("classify", total=self.total, rows=0)
        counted = [0]

        def advance(rows: int) -> None:
            counted[0] += rows
            position = self.stream.buffer.tell() if hasattr(self.stream, "buffer") else self.total
            self.progress.update(task, completed=min(position, self.total), rows=counted[0])

        return advance

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()


# ---- sinks: where results go ---------------------------------------------------------------
def open_sink(out: Path | None, as_json: bool, labels: list[str]):
    if out is None:
        return _ConsoleSink(labels, as_json)
    suffix = out.suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt not in ("csv", "tsv", "jsonl"):
        raise InputError(f"--out {out}: write .csv, .tsv or .jsonl")
    return _JsonlSink(out, labels) if fmt == "jsonl" else _TableSink(out, labels, fmt)


def result_fields(prediction, labels: list[str], error: str | None) -> dict[str, Any]:
    if prediction is None:
        return {"label": None, "score": None, **{f"score_{label}": None for label in labels}, "error": error}
    return {
        "label": prediction.label,
        "score": prediction.score,
        **{f"score_{label}": prediction.scores[label] for label in labels},
        "error": None,
    }


def output_record(row: Row, prediction, labels: list[str]) -> dict[str, Any]:
    """The input's fields, then the results; an input column named like a result column is kept as input_NAME."""
    results = result_fields(prediction, labels, row.error)
    record: dict[str, Any] = {"line": row.line}
    for name, value in clean_fields(row.fields).items():
        record[f"input_{name}" if name in results or name == "line" else name] = value
    record.update(results)
    return record


class _ConsoleSink:
    def __init__(self, labels: list[str], as_json: bool) -> None:
        self.labels = labels
        self.as_json = as_json
        self.width = max(len(label) for label in labels)

    def write(self, row: Row, prediction) -> None:
        if prediction is None:
            if self.as_json:
                sys.stdout.write(json.dumps({"line": row.line, "error": row.error}) + "\n")
            return
        if self.as_json:
            record = {
                "text": row.text,
                "label": prediction.label,
                "score": prediction.score,
                "scores": prediction.scores,
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(f"{prediction.label:<{self.width}}  {prediction.score:>6.2%}  {row.text}\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()


class _JsonlSink:
    def __init__(self, path: Path, labels: list[str]) -> None:
        self.labels = labels
        self.stream = open(path, "w", encoding="utf-8")

    def write(self, row: Row, prediction) -> None:
        record = output_record(row, prediction, self.labels)
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()


class _TableSink:
    """CSV/TSV output: the input's columns in order, then the result columns."""

    def __init__(self, path: Path, labels: list[str], fmt: str) -> None:
        self.labels = labels
        self.stream = open(path, "w", encoding="utf-8", newline="")
        self.writer = csv.writer(self.stream, delimiter="\t" if fmt == "tsv" else ",")
        self.columns: list[str] | None = None

    def write(self, row: Row, prediction) -> None:
        record = output_record(row, prediction, self.labels)
        if self.columns is None:
            # The first row fixes the columns (every row of a CSV/TSV input has the same ones).
            self.columns = list(record)
            self.writer.writerow(self.columns)
        self.writer.writerow(["" if record.get(name) is None else record.get(name) for name in self.columns])

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()
