"""`classify --engine ray`: the file job on Ray Data, for inputs larger than one machine.

Ray reads the input (a file or a folder of files on a path every node mounts), a pool of
actors classifies batches, each actor loading the model once from files the driver put in the
object store, and the workers write a folder of Parquet/CSV/JSONL files. Rows that cannot be
classified come out as rows with an `error`, like the local path. Actor restarts and task retries
are set explicitly, so a worker that dies mid-job costs a retry, never a row.

Ray holds rows as typed Arrow columns where the local path holds Python values, which adds two rules:
a JSONL field keeps the JSON type its first value in the file has (a row where it has another becomes
an error row), and rows of a folder job carry the `file` they came from, since Ray's output files
mix the rows of several input files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastsentiment.errors import FastSentimentError, InputError, missing_extra
from fastsentiment.jobs.job import FileJob, ModelOptions
from fastsentiment.jobs.local_engine import chunks
from fastsentiment.jobs.predict import predict_rows, warn_truncated_rows
from fastsentiment.jobs.rows import (
    DEFAULT_TEXT_COLUMNS,
    FORMATS,
    Row,
    RowSource,
    check_text_file,
    checked_text,
    clean_fields,
    rows_from_lines,
    table_format,
)
from fastsentiment.jobs.sinks import (
    delimited_cell,
    json_line,
    output_columns,
    output_record,
    parquet_schema,
    result_fields,
    result_types,
)
from fastsentiment.tokenization import TextEncoder, Truncations
from fastsentiment.windows import LongText

ACTOR_RESTARTS = 4  # a worker killed (OOM, node loss) is replaced this many times before the job fails
TASK_RETRIES = 4  # a batch whose worker died is re-run on a live worker this many times
# Reading and writing reserve no CPU: actors hold every CPU for the model, and I/O tasks that waited
# for a free CPU would never run (Ray Data then waits forever on a 2-core machine with 2 workers).
IO_CPUS = 0
# Columns the reader adds beside the input's own, named with a NUL that no header or field name of real data holds:
# "__line" and the like were taken for the input's columns of those names (a job failed, a Parquet input's "__line"
# would have been read as line numbers).
LINE = "\0line"  # the reader's line number, kept apart from any input column called "line"
READ_ERROR = "\0read_error"  # set by the reader for rows it cannot classify (malformed JSON, empty text, ...)
FILE = "\0file"  # the input file's name, in folder jobs
FILE_COLUMN = "file"  # ... and its output column, before `line`
# The JSON types whose values can share an Arrow column (ints and floats become floats).
JSON_KINDS = {str: "string", int: "number", float: "number", bool: "boolean", dict: "object", list: "array"}


@dataclass
class RayReport:
    rows: int
    failed: int
    files: int
    truncated: int = 0  # rows cut to the model's limit (long_text "truncate")


def run_ray_job(job: FileJob, options: ModelOptions) -> RayReport:
    """Run the job on Ray (joining `job.address`, or starting Ray on this machine) and count what it wrote."""
    try:
        import ray
        import ray.data  # fails when only ray-core is installed
    except ImportError:
        raise missing_extra("ray", "ray", "--engine ray") from None
    from fastsentiment.models import resolve_model

    _check_output(job.out)
    inputs = _input_files(job.source)
    formats = {table_format(path) for path in inputs}
    if "parquet" in formats and formats != {"parquet"}:
        raise InputError(f"{job.source}: mix of Parquet and text files; put them in separate folders")
    text_column = _text_column_of(inputs, job.column)
    for path in inputs[1:] if formats != {"parquet"} else []:  # the first was checked as RowSource read it
        check_text_file(path, table_format(path))  # a folder's UTF-16 or carriage-return file: garbled or merged rows
    # Ray's output files mix the rows of a folder's files: each row names its own (Parquet rows: see the README).
    name_files = Path(job.source).expanduser().is_dir() and formats != {"parquet"}
    model_dir = resolve_model(options.model)
    # The stride's room in the model's windows, checked here: an actor's refusal would be a failed Ray job.
    encoder = TextEncoder.from_model_dir(model_dir, max_length=options.max_length)
    encoder.check_options(job.long_text.long_text, job.long_text.stride, job.long_text.aggregate)
    threads = options.threads or 1  # one compute thread per actor unless asked: actors are the parallelism
    options = _resolved(model_dir, replace(options, threads=threads))

    try:
        ray.init(address=job.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as error:
        hint = (
            "" if job.address is None else " (a cluster with token authentication needs RAY_AUTH_MODE=token here too)"
        )
        raise FastSentimentError(
            f"cannot start or join Ray at {job.address or 'this machine'}: {error}{hint}"
        ) from None
    _quiet_ray_data()
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # output rows follow input rows
        context.enable_progress_bars = sys.stderr.isatty()
        # Nested in a list, the reference is not an actor constructor argument: Ray would warn that restarts
        # fail once it goes out of scope, but the driver holds it until the job ends.
        model_files = [ray.put(_model_files(model_dir))]
        truncations = _truncation_count_class().remote()  # the actors' warnings would reach no terminal: counted
        if formats == {"parquet"}:
            # partitioning=None: a folder named year=2024 added a column "year" the local engine does not add
            dataset = ray.data.read_parquet([str(p) for p in inputs], num_cpus=IO_CPUS, partitioning=None)
        else:
            datasource = _text_rows_datasource_class()(
                [str(p) for p in inputs], column=job.column, name_files=name_files
            )
            dataset = ray.data.read_datasource(datasource, num_cpus=IO_CPUS)
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for actor restarts/retries and flags **ray_remote_args as deprecated.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
            classified = dataset.map_batches(
                _ClassifyBatches,
                fn_constructor_kwargs={
                    "model_files": model_files,
                    "text_column": text_column,
                    "options": options,
                    "long_text": job.long_text,
                    "name_files": name_files,
                    "truncations": truncations,
                },
                batch_size=job.chunk_rows,
                batch_format="pyarrow",
                compute=_actor_pool(job.num_workers, formats),
                num_cpus=threads,
                max_restarts=ACTOR_RESTARTS,
                max_task_retries=TASK_RETRIES,
            )
        if job.ray_output_format == "parquet":
            classified.write_parquet(str(job.out), ray_remote_args={"num_cpus": IO_CPUS})
        else:
            sink = _records_datasink_class()(str(job.out), job.ray_output_format)
            classified.write_datasink(sink, ray_remote_args={"num_cpus": IO_CPUS})
        _one_schema(job.out, job.ray_output_format)
        truncated = ray.get(truncations.total.remote())
    except BaseException as error:
        # What the job wrote is a part of its rows: --out was new or empty, and is again, so that a rerun may write it
        # (a folder of partial files looked like output, and a rerun was refused).
        _remove_partial_output(job.out)
        if not isinstance(error, Exception):  # Ctrl+C
            raise
        if isinstance(error, FastSentimentError) and getattr(error, "cause", None) is None:
            raise  # raised here on the driver (a RayTaskError wrapping ours is an instance of it too)
        # Ray wraps worker errors; the first line of the cause is what a user needs
        raise FastSentimentError(f"the Ray job failed: {_first_line(error)}{_log_hint()}") from None
    finally:
        ray.shutdown()
    if truncated:
        warn_truncated_rows(truncated, encoder)
    report = _count_output(job.out, job.ray_output_format)
    if not report.rows:
        # Ray writes no file, not even the folder, for a job without rows: the folder is made here so that the
        # job's output exists, and the warning says why it is empty, as the local engine does.
        job.out.mkdir(parents=True, exist_ok=True)
        logging.getLogger("fastsentiment").warning("%s holds no rows to classify", job.source)
    return replace(report, truncated=truncated)


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: with --engine ray, --out is a folder that must be new or empty")


def _remove_partial_output(out: Path) -> None:
    """Empty `out` of what a failed job wrote (it was new or empty: `_check_output`), keeping the folder itself."""
    if out.is_dir():
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _input_files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_file():
        table_format(path)  # fail now on an unknown extension
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
        if not files:
            raise InputError(f"{path}: no .txt, .csv, .tsv, .jsonl or .parquet files in the folder")
        if passed := sorted(p.name + "/" for p in path.iterdir() if p.is_dir()):
            # Said, not silent: a folder of shards in subfolders would otherwise be a job of a part of its rows.
            shown = ", ".join(passed[:3]) + (f" and {len(passed) - 3} more" if len(passed) > 3 else "")
            logging.getLogger("fastsentiment").warning(
                "%s: the folder's own files are read, not those in its subfolders (%s)", path, shown
            )
        return files
    raise InputError(f"input not found: {source}")


def _resolved(model_dir, options: ModelOptions) -> ModelOptions:
    """Resolve `auto` once on the driver (every actor runs the same backend, with the actors' thread count) and
    build cached exports (the ONNX file) here, so actors on this machine load them at once."""
    from fastsentiment.backends.registry import auto_choice, prepare_backend

    if options.backend == "auto":
        backend, precision = auto_choice(
            model_dir, options.device, options.precision, options.workload, options.tune, options.threads
        ).path
        options = replace(options, backend=backend, precision=precision, tune=False)
    prepare_backend(model_dir, options.backend, options.device, options.precision)
    return options


def _actor_pool(workers: int, formats: set[str]):
    """The classifying actors. Ray Data's Parquet reader fetches file metadata in tasks of half a CPU once the job
    runs: a pool that starts with every CPU taken (2 actors of 1 thread on 2 CPUs) left them none, and the job waited
    forever. For Parquet the pool starts with one actor and grows to `workers` as rows queue up."""
    import ray

    if formats == {"parquet"} and workers > 1:
        return ray.data.ActorPoolStrategy(min_size=1, max_size=workers)
    return ray.data.ActorPoolStrategy(size=workers)


def _model_files(model_dir) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in model_dir.files}


def _text_column_of(inputs: list[Path], column: str | None) -> str | None:
    """The text column the workers read: Parquet's is chosen from the header, as the local path does, and must be
    the same in every file (the workers read one column name). Text formats were checked by the reader with the local
    path's rules (a JSONL record without --column: its `sentence`, else its `text`), so None leaves the choice to
    `checked_text` per record."""
    chosen: dict[Path, str | None] = {}
    for path in inputs if table_format(inputs[0]) == "parquet" else inputs[:1]:  # a mix was refused before
        try:
            source = RowSource(path, column)  # checks the column exists, as the local path does
        except InputError as error:  # named by its file, as the other files' errors are
            raise InputError(str(error) if str(path) in str(error) else f"{path}: {error}") from None
        chosen[path] = source.column if source.format == "parquet" else column
    (first, first_column), *others = chosen.items()
    for path, other in others:
        if other != first_column:
            raise InputError(
                f"{path}: its text column is {other!r}, {first.name}'s {first_column!r}; name one with --column or "
                "put the files in separate folders"
            )
    return first_column


def _quiet_ray_data() -> None:
    """Our own summary line replaces Ray Data's INFO chatter, and a failed job's one-line error its traceback
    (which still goes to its log file, ray-data.log)."""
    logger = logging.getLogger("ray.data")
    logger.setLevel(logging.ERROR)
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL)


def _first_line(error: BaseException) -> str:
    """The first line of the exception that made the job fail, with its type unless it is one of ours."""
    cause = error
    while getattr(cause, "cause", None) is not None:  # a RayTaskError holds the worker's exception
        cause = cause.cause
    # Ray appends its retry advice after the message, and a RayTaskError's text is a traceback.
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    if isinstance(cause, FastSentimentError) and first:
        return first
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _log_hint() -> str:
    try:
        from ray.data._internal.logging import get_log_directory

        log = Path(get_log_directory() or "", "ray-data.log")
    except Exception:  # a private helper of Ray's: without it, no hint
        return ""
    return f" (details in {log})" if log.is_file() else ""


def _one_schema(out: Path, fmt: str) -> None:
    """Give every Parquet or CSV part file of the output the same columns. Ray writes one file per block with the
    columns of that block's rows: files of a folder with different columns (a JSONL key some files lack) made parts
    that disagree, and a reader of the folder (pyarrow, pandas) took the first part's columns and silently dropped
    the others'. JSON lines need no columns evened out: a record without a key reads as a missing value."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in out.rglob("*") if p.is_file())
    if fmt == "parquet":
        schemas = [pq.read_schema(path) for path in files]
        if all(schema.equals(schemas[0]) for schema in schemas):
            return
        try:
            unified = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise FastSentimentError(f"the input files disagree on a column's type: {_first_line(error)}") from None
        for path, schema in zip(files, schemas, strict=True):
            if not schema.equals(unified):
                table = pq.read_table(path)
                columns = [
                    table.column(field.name).cast(field.type)
                    if field.name in schema.names
                    else pa.nulls(table.num_rows, field.type)
                    for field in unified
                ]
                whole = pa.Table.from_arrays(columns, schema=unified)
                _replace(path, lambda scratch, whole=whole: pq.write_table(whole, scratch))
    elif fmt == "csv":
        headers = []
        for path in files:
            with open(path, encoding="utf-8", newline="") as stream:
                headers.append(next(csv.reader(stream), []))
        names = list(dict.fromkeys(name for header in headers for name in header))
        for path, header in zip(files, headers, strict=True):
            if header != names:
                _replace(path, lambda scratch, path=path: _rewrite_csv(path, scratch, names))


def _rewrite_csv(source: Path, target: Path, names: list[str]) -> None:
    with open(source, encoding="utf-8", newline="") as reading, open(target, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(csv.DictReader(reading))


def _replace(path: Path, write) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    write(scratch)
    os.replace(scratch, path)


def _count_output(out: Path, fmt: str) -> RayReport:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv
    import pyarrow.dataset as ds
    import pyarrow.json

    files = sorted(p for p in out.rglob("*") if p.is_file())
    if not files:  # an input without rows (pyarrow finds no `error` column in no files)
        return RayReport(rows=0, failed=0, files=0)
    # Text formats are typed by inference over the first rows, which may all lack an error: say it is text.
    file_format = {
        "parquet": "parquet",
        "csv": ds.CsvFileFormat(
            # a text's line breaks are quoted inside its cell: read as a row's end, the count failed with a traceback
            parse_options=pyarrow.csv.ParseOptions(newlines_in_values=True),
            convert_options=pyarrow.csv.ConvertOptions(column_types={"error": pa.string()}),
        ),
        "jsonl": ds.JsonFileFormat(
            parse_options=pyarrow.json.ParseOptions(explicit_schema=pa.schema({"error": pa.string()}))
        ),
    }[fmt]
    dataset = ds.dataset([str(p) for p in files], format=file_format)
    errors = dataset.to_table(columns=["error"]).column("error")
    # CSV has no null: a row without an error reads back as an empty string (or a column of nulls).
    messages = pc.fill_null(errors.cast("string"), "")
    failed = pc.sum(pc.not_equal(messages, "")).as_py() or 0
    return RayReport(rows=len(errors), failed=failed, files=len(files))


# ---- the parts that run on workers ---------------------------------------------------------------
def _buffered(stream, block: int = 1 << 20) -> io.BufferedReader:
    """A pyarrow input stream (which has no `readline`) with one, so that the row reader reads an over-long line up
    to its limit only, as on the local path, instead of holding it whole."""
    return io.BufferedReader(stream, block)


def text_row_blocks(stream, path: str, *, column: str | None, name_files: bool, rows: int = 1024) -> Iterator:
    """Arrow tables of `rows` rows each, read from one file's `stream` (a pyarrow input stream) by the local path's
    row reader, with line numbers and errors: what Ray's datasource yields, apart from Ray (constructing the datasource
    starts a Ray instance where none runs)."""
    fmt = table_format(path)
    kinds = _FieldKinds() if fmt == "jsonl" else None  # other formats' values are all text
    file = {FILE: Path(path).name} if name_files else {}
    records: list[dict[str, Any]] = []
    try:
        for row in rows_from_lines(_buffered(stream), fmt, column):
            if kinds is not None:
                _text_kept_as_text(row, column)
                kinds.check(row)
            records.append({**file, LINE: row.line, READ_ERROR: row.error, **clean_fields(row.fields)})
            if len(records) == rows:
                yield _block(records)
                records = []
        if records:
            yield _block(records)
    except InputError as error:  # e.g. a header without the text column: say which file
        raise InputError(f"{path}: {error}") from None


def _text_rows_datasource_class():
    # The datasource subclasses a Ray class, so it is defined only once Ray is imported.
    from ray.data.datasource import FileBasedDatasource

    class TextRowsDatasource(FileBasedDatasource):
        """.txt/.csv/.tsv/.jsonl files read by the same row reader as the local path, with line numbers and errors."""

        def __init__(self, paths: list[str], *, column: str | None, name_files: bool, block_rows: int = 1024):
            super().__init__(paths)
            self.column = column
            self.name_files = name_files
            self.block_rows = block_rows

        def _read_stream(self, f, path: str):
            yield from text_row_blocks(f, path, column=self.column, name_files=self.name_files, rows=self.block_rows)

    return TextRowsDatasource


def _records_datasink_class():
    # The datasink subclasses a Ray class, so it is defined only once Ray is imported.
    from ray.data.datasource import BlockBasedFileDatasink

    class RecordsDatasink(BlockBasedFileDatasink):
        """JSON lines or CSV files written as the local engine writes them (sinks.json_line, sinks.delimited_cell).
        Ray's own writers differ: its JSON writer (pandas) rounds scores to 10 digits and fails on a date column, its
        CSV writer (pyarrow) on a field of nested values, which ours writes as JSON text."""

        def __init__(self, path: str, fmt: str) -> None:
            super().__init__(path, file_format=fmt)  # the files' extension: .jsonl, .csv
            self.format = fmt

        def write_block_to_file(self, block, file) -> None:
            table = block.to_arrow()
            records = table.to_pylist()
            text = io.StringIO()
            if self.format == "jsonl":
                text.writelines(json_line(record) for record in records)
            else:
                names = table.column_names
                writer = csv.writer(text)
                writer.writerow(names)
                writer.writerows([delimited_cell(record[name]) for name in names] for record in records)
            file.write(text.getvalue().encode("utf-8"))

    return RecordsDatasink


def _truncation_count_class():
    # An actor class, defined only once Ray is imported.
    import ray

    @ray.remote(num_cpus=0)
    class TruncationCount:
        """How many rows the job's actors cut to the model's limit."""

        def __init__(self) -> None:
            self.count = 0

        def add(self, count: int) -> None:
            self.count += count

        def total(self) -> int:
            return self.count

    return TruncationCount


def _text_kept_as_text(row: Row, column: str | None) -> None:
    """A JSONL record whose text field holds something else (a number) is an error row, as on the local path, with
    the value written as JSON text: the field's column holds text in every file (a file whose first record had a
    number there made its column numeric, and the whole job failed where it met another file's text)."""
    name = column or next((name for name in DEFAULT_TEXT_COLUMNS if name in row.fields), None)
    value = row.fields.get(name) if name is not None else None
    if value is not None and not isinstance(value, str):
        row.fields[name] = json.dumps(value, ensure_ascii=False)
        row.error = row.error or f"field {name!r} is not text"  # the reader may have said so already


class _FieldKinds:
    """The JSON type of each field's first value in a file. A row whose field has another type cannot share the
    field's Arrow column: it becomes an error row without that field, and the other rows flow."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, int]] = {}

    def check(self, row: Row) -> None:
        for name, value in list(row.fields.items()):
            if value is None:
                continue
            kind = JSON_KINDS.get(type(value), type(value).__name__)
            first_kind, first_line = self.first.setdefault(name, (kind, row.line))
            if kind != first_kind:
                del row.fields[name]
                misfit = (
                    f"field {name!r} is {kind} here, {first_kind} on line {first_line}; Ray needs one type per field"
                )
                row.error = misfit if row.error is None else f"{row.error}; {misfit}"


def _block(records: list[dict[str, Any]]):
    """An Arrow table of every field any record has (pyarrow's from_pylist keeps only the first record's)."""
    import pyarrow as pa

    names = dict.fromkeys(name for record in records for name in record)
    try:
        return pa.table({name: [record.get(name) for record in records] for name in names})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # values nested in objects or arrays that differ in type
        lines = f"{records[0][LINE]}-{records[-1][LINE]}"
        raise InputError(f"lines {lines}: {_first_line(error)}; Ray needs one type per field") from None


class _ClassifyBatches:
    """One Ray actor: loads the model once, then classifies Arrow batches into output rows."""

    def __init__(
        self,
        model_files,
        text_column: str | None,
        options: ModelOptions,
        long_text: LongText,
        name_files: bool,
        truncations,
    ) -> None:
        import ray

        files = ray.get(model_files[0])
        self._folder = tempfile.TemporaryDirectory(prefix="fastsentiment-model-")
        for name, content in files.items():
            Path(self._folder.name, name).write_bytes(content)
        self.classifier = replace(options, model=self._folder.name).load()
        self.labels = self.classifier.labels
        self.text_column = text_column
        self.long_text = long_text
        self.reserved = (FILE_COLUMN,) if name_files else ()  # an input column `file` becomes `input_file`
        self.truncations = truncations  # the driver's count (an actor of `_truncation_count_class`)

    def __call__(self, batch):
        import pyarrow as pa
        import ray

        renamed = self._renamed(batch.schema.names)
        rows, files = [], []
        for record in batch.to_pylist():
            line, error, file = record.pop(LINE, None), record.pop(READ_ERROR, None), record.pop(FILE, None)
            row = Row(line=line, error=error, fields=record)
            if row.error is None:
                # A text-format row was checked by the reader, on its own fields; Arrow gave it a null for each
                # field only other rows of the batch have, which must not change which field is its text.
                present = record if line is None else {name: v for name, v in record.items() if v is not None}
                row.text, row.error = checked_text(present, self.text_column)
            if self.reserved:
                row.fields = {renamed[name]: value for name, value in record.items()}
            rows.append(row)
            files.append(file)
        cuts = Truncations(named=0)
        # In chunks of at most a million characters, as the local engine reads: a batch's texts tokenised at once held
        # gigabytes for rows of long documents (2,048 of 100,000 characters: 26 GB), and the actor was killed.
        predictions = [
            prediction
            for chunk in chunks(rows, max(1, len(rows)))
            for prediction in predict_rows(self.classifier, chunk, self.long_text, cuts)
        ]
        if cuts.count:
            ray.get(self.truncations.add.remote(cuts.count))  # counted before the batch is done
        lengths = self.long_text.reports_lengths
        records = [
            output_record(row, prediction, self.labels, lengths)
            for row, prediction in zip(rows, predictions, strict=True)
        ]
        if self.reserved:
            records = [{FILE_COLUMN: file, **record} for file, record in zip(files, records, strict=True)]
        if batch.num_rows and rows[0].line is None:
            for record in records:
                del record["line"]  # Parquet inputs read by Ray carry no line numbers
        return pa.Table.from_pylist(records, schema=self._output_schema(batch.schema, renamed, records))

    def _renamed(self, names) -> dict[str, str]:
        """The batch's input columns by the names `output_record` gets them under: in a folder job an input column
        `file` makes way for ours (named as sinks.output_columns names any clash)."""
        inputs = [name for name in names if name not in (LINE, READ_ERROR, FILE)]
        return output_columns(inputs, self.reserved) if self.reserved else {name: name for name in inputs}

    def _output_schema(self, input_schema, renamed: dict[str, str], records):
        """Input columns keep their types; result columns have fixed types (sinks.parquet_schema)."""
        import pyarrow as pa

        types = result_types(self.labels)
        if self.reserved:
            types = {FILE_COLUMN: pa.string(), **types}
        results = result_fields(None, self.labels, None, self.long_text.reports_lengths)
        outputs = output_columns(list(renamed.values()), ("line", *results))  # what output_record calls them
        for name, given in renamed.items():
            types[outputs[given]] = input_schema.field(name).type
        names = list(records[0]) if records else [n for n in types if n != "line"]
        return parquet_schema(names, types)
