"""Where classified rows go: the console, or .csv/.tsv/.jsonl/.parquet files written part by part.

A file output is a sequence of parts (one per chunk of rows) that `merge` joins into the final
file; writing parts keeps memory bounded and lets an interrupted run resume after its last part.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastsentiment.errors import InputError
from fastsentiment.jobs.rows import Row, clean_fields, import_parquet

log = logging.getLogger("fastsentiment")


class SchemaMismatch(InputError):
    """Rows whose values do not fit the Parquet columns that the first rows set."""


# The result columns besides one score_LABEL per label, with their Arrow types by name (result_fields writes them,
# result_types types them; named, so that CSV output needs no pyarrow).
RESULT_COLUMN_TYPES = {"label": "string", "score": "float64", "tokens": "int64", "windows": "int64", "error": "string"}
RESULT_COLUMNS = tuple(RESULT_COLUMN_TYPES)
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"--out {path}: write .csv, .tsv, .jsonl or .parquet")
    return fmt


def result_fields(prediction, labels: Sequence[str], error: str | None, lengths: bool = False) -> dict[str, Any]:
    """The result columns: label, score, a score per label, with `lengths` the text's tokens and windows, error."""
    fields: dict[str, Any] = {
        "label": None if prediction is None else prediction.label,
        "score": None if prediction is None else prediction.score,
        **{f"score_{label}": None if prediction is None else prediction.scores[label] for label in labels},
    }
    if lengths:
        fields["tokens"] = None if prediction is None else prediction.tokens
        fields["windows"] = None if prediction is None else prediction.windows
    fields["error"] = error if prediction is None else None
    return fields


def output_record(row: Row, prediction, labels: Sequence[str], lengths: bool = False) -> dict[str, Any]:
    """The input's fields, then the results; an input column named like a result column is kept as input_NAME."""
    results = result_fields(prediction, labels, row.error, lengths)
    record: dict[str, Any] = {"line": row.line}
    for name, value in clean_fields(row.fields).items():
        record[output_column(name, results)] = value
    record.update(results)
    return record


def output_column(input_name: str, result_names) -> str:
    """The name an input column gets in the output: input_NAME where it would clash with a result column."""
    return f"input_{input_name}" if input_name in result_names or input_name == "line" else input_name


class ConsoleSink:
    """One line per input (label, confidence, text), or one JSON object per input with --json."""

    def __init__(self, labels: Sequence[str], as_json: bool) -> None:
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
                "tokens": prediction.tokens,
                "windows": prediction.windows,
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(f"{prediction.label:<{self.width}}  {prediction.score:>6.2%}  {row.text}\n")


# ---- file parts -----------------------------------------------------------------------------
class PartWriter:
    """Writes one chunk of output records to a part file, and joins parts into the final file."""

    suffix: str

    def write(self, records: list[dict[str, Any]], path: Path, first: bool) -> None:
        raise NotImplementedError

    def merge(self, parts: Sequence[Path], out: Path) -> None:
        """Concatenate parts byte for byte (text formats: only the first part carries a header)."""
        with open(out, "wb") as target:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, target, 1 << 20)


class JsonlParts(PartWriter):
    suffix = ".jsonl"

    def write(self, records, path, first):
        with open(path, "w", encoding="utf-8") as stream:
            for record in records:
                stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def chunk_columns(records: Sequence[dict[str, Any]]) -> list[str]:
    """Every column the records of a chunk hold (a JSONL input's records may differ, and an error row holds no
    input fields): `line`, the input columns in order of first appearance, then the result columns."""
    names = list(dict.fromkeys(name for record in records for name in record))
    is_result = [name in RESULT_COLUMNS or name.startswith("score_") for name in names]
    inputs = [name for name, result in zip(names, is_result, strict=True) if not result and name != "line"]
    return ["line", *inputs, *(name for name, result in zip(names, is_result, strict=True) if result)]


class _LateColumns:
    """Keys that JSONL records bring after the first chunk fixed a CSV/Parquet file's columns: that file is already
    being written, so they cannot become columns. Said once per key, naming the first line that has it."""

    def __init__(self) -> None:
        self.reported: set[str] = set()

    def report(self, records: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
        known = set(columns)
        for record in records:
            for name in record.keys() - known - self.reported:
                self.reported.add(name)
                log.warning(
                    "line %s: %r is not among the output's columns (the first chunk of rows set them) and is not "
                    "written; write .jsonl to keep every field",
                    record.get("line"),
                    name,
                )


class DelimitedParts(PartWriter):
    """CSV/TSV: the first chunk fixes the columns (every row of a CSV/TSV input has the same ones)."""

    def __init__(self, fmt: str, columns: list[str] | None = None) -> None:
        self.delimiter = "\t" if fmt == "tsv" else ","
        self.suffix = f".{fmt}"
        self.columns = columns
        self.late = _LateColumns()

    def write(self, records, path, first):
        if self.columns is None:
            self.columns = chunk_columns(records)
        self.late.report(records, self.columns)
        with open(path, "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, delimiter=self.delimiter)
            if first:
                writer.writerow(self.columns)
            for record in records:
                writer.writerow(["" if record.get(name) is None else record.get(name) for name in self.columns])


def result_types(labels: Sequence[str]) -> dict[str, Any]:
    """Arrow types of the result columns, fixed whatever the first rows hold (a chunk of errors has null scores)."""
    import pyarrow as pa

    types = {"line": pa.int64()}
    for name, kind in RESULT_COLUMN_TYPES.items():  # in the order result_fields writes them
        types[name] = getattr(pa, kind)()
        if name == "score":
            types.update({f"score_{label}": pa.float64() for label in labels})
    return types


def parquet_schema(names: Sequence[str], types: dict[str, Any]):
    """The one Parquet schema rule of both engines: known types kept, columns seen only as nulls become strings."""
    import pyarrow as pa

    def column_type(name: str):
        known = types.get(name)
        return pa.string() if known is None or pa.types.is_null(known) else known

    return pa.schema([pa.field(name, column_type(name)) for name in names])


class ParquetParts(PartWriter):
    """Parquet: the first chunk fixes the input columns' types; result columns have fixed types."""

    suffix = ".parquet"

    def __init__(self, labels: Sequence[str], schema=None) -> None:
        self.pq = import_parquet("writing Parquet files")
        import pyarrow as pa

        self.pa = pa
        self.labels = labels
        self.schema = schema
        self.late = _LateColumns()

    def write(self, records, path, first):
        pa = self.pa
        if self.schema is None:
            names = chunk_columns(records)
            inferred = pa.Table.from_pylist([{name: record.get(name) for name in names} for record in records]).schema
            types = {field.name: field.type for field in inferred}
            self.schema = parquet_schema(inferred.names, {**types, **result_types(self.labels)})
        self.late.report(records, self.schema.names)
        try:
            table = pa.Table.from_pylist(records, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            lines = f"{records[0]['line']}-{records[-1]['line']}"
            raise SchemaMismatch(
                f"rows {lines} do not fit the Parquet columns set by the first rows ({error}); write .jsonl instead"
            ) from None
        self.pq.write_table(table, path)

    def merge(self, parts, out):
        types = result_types(self.labels)  # an empty input leaves no rows to take columns from: the results' own
        with self.pq.ParquetWriter(out, self.schema or parquet_schema(list(types), types)) as writer:
            for part in parts:
                # One part at a time, read without the dataset layer's threads and read-ahead buffers.
                writer.write_table(self.pq.ParquetFile(part).read(use_threads=False))


def part_writer(fmt: str, labels: Sequence[str], first_part: Path | None = None) -> PartWriter:
    """The writer for `fmt`; given the first part of an interrupted run, it keeps that run's columns."""
    if fmt == "jsonl":
        return JsonlParts()
    if fmt == "parquet":
        schema = import_parquet("writing Parquet files").read_schema(first_part) if first_part else None
        return ParquetParts(labels, schema)
    columns = None
    if first_part is not None:
        with open(first_part, encoding="utf-8", newline="") as stream:
            columns = next(csv.reader(stream, delimiter="\t" if fmt == "tsv" else ","))
    return DelimitedParts(fmt, columns)
