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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastsentiment.errors import InputError
from fastsentiment.jobs.rows import Row, clean_fields, delimited_reader, import_parquet
from fastsentiment.outputs import one_line, strict_json
from fastsentiment.texts import replace_undecodable

log = logging.getLogger("fastsentiment")


class SchemaMismatch(InputError):
    """Rows whose values do not fit one Parquet type per column."""


# The result columns besides one score_LABEL per label, with their Arrow types by name (result_fields writes them,
# result_types types them; named, so that CSV output needs no pyarrow).
RESULT_COLUMN_TYPES = {"label": "string", "score": "float64", "tokens": "int64", "windows": "int64", "error": "string"}
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"--out {path}: write .csv, .tsv, .jsonl (or .json) or .parquet")
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
    """The input's fields (named by `output_columns`), then the results."""
    results = result_fields(prediction, labels, row.error, lengths)
    fields = clean_fields(row.fields)
    names = output_columns(fields, ("line", *results))
    record: dict[str, Any] = {"line": row.line}
    for name, value in fields.items():
        record[names[name]] = value
    record.update(results)
    return record


def output_columns(input_names: Collection[str], written: Collection[str]) -> dict[str, str]:
    """The name each input column gets in an output where the tool writes the columns `written` beside them
    (`output_column`)."""
    # Output files are UTF-8: a header's undecodable bytes are written as U+FFFD, as in values (clean_fields).
    return {name: output_column(replace_undecodable(name), written) for name in input_names}


INPUT_PREFIX = "input_"


def output_column(input_name: str, written: Collection[str]) -> str:
    """`input_` + the name for an input column named like a column the tool writes (`label`, `line`), or like one so
    renamed (`input_label`, the tool's own output classified again); the name as it is otherwise. It depends on the
    name alone, so a column keeps its output name in every row and every file, whatever other columns they have."""
    base = input_name
    while base.startswith(INPUT_PREFIX):
        base = base[len(INPUT_PREFIX) :]
    return INPUT_PREFIX + input_name if base in written else input_name


@dataclass(frozen=True)
class OutputColumns:
    """The output's columns as far as they are known before any row: the labels' score columns, whether token
    counts are written, and the input's own columns where the input has a fixed set (a CSV, TSV, Parquet or text
    file; JSONL records bring theirs), with a Parquet input's Arrow types. An input that holds no rows still gets
    the header or schema the same input with rows would."""

    labels: Sequence[str]
    lengths: bool = False
    inputs: Sequence[str] | None = None
    input_types: dict[str, Any] | None = None

    def names(self) -> list[str] | None:
        """Every output column in order, or None while the rows must tell."""
        if self.inputs is None:
            return None
        renamed = output_columns(self.inputs, self.written())
        return ["line", *(renamed[name] for name in self.inputs), *self.result_names()]

    def arrow_types(self) -> dict[str, Any]:
        """The Arrow types fixed before any row: the results', and a Parquet input's own columns' (under their
        output names), so that Parquet in gives the same types Parquet out."""
        types = result_types(self.labels)
        if self.inputs is not None and self.input_types:
            renamed = output_columns(self.inputs, self.written())
            types |= {renamed[name]: kind for name, kind in self.input_types.items() if name in renamed}
        return types

    def without_rows(self) -> list[str]:
        """The columns of an output that got no rows: the input's own where known, and the results'."""
        return self.names() or list(self.written())

    def written(self) -> tuple[str, ...]:
        """The columns the tool writes beside the input's: `line` and the results'."""
        return ("line", *self.result_names())

    def result_names(self) -> list[str]:
        return list(result_fields(None, self.labels, None, self.lengths))


CONSOLE_ERROR = "ERROR"  # in the label column of an input that could not be classified


class ConsoleSink:
    """One line per input, in input order, so that stdout matches the inputs line for line: label, confidence and
    text (control characters in it shown as escapes: \\n, \\t, \\x1b), or `ERROR` and the error's stderr line for
    an input that could not be classified; or one JSON object per input with --json."""

    def __init__(self, labels: Sequence[str], as_json: bool, percentages: bool = True) -> None:
        """`percentages`: scores are probabilities, shown as percentages (a regression's raw outputs are not)."""
        self.as_json = as_json
        self.percentages = percentages
        self.width = max(len(label) for label in (*labels, CONSOLE_ERROR))

    def write(self, row: Row, prediction) -> None:
        if prediction is None:
            if self.as_json:
                sys.stdout.write(json.dumps({"line": row.line, "error": row.error}) + "\n")
            else:
                sys.stdout.write(f"{CONSOLE_ERROR:<{self.width}}  {one_line(f'{row.name}: {row.error}')}\n")
            return
        if self.as_json:
            record = {
                "line": row.line,  # an error row's record has it too: records and inputs match up by it
                "text": row.text,
                "label": prediction.label,
                "score": prediction.score,
                "scores": prediction.scores,
                "tokens": prediction.tokens,
                "windows": prediction.windows,
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            score = f"{prediction.score:>6.2%}" if self.percentages else f"{prediction.score:>7.4f}"
            sys.stdout.write(f"{prediction.label:<{self.width}}  {score}  {one_line(row.text)}\n")


# ---- file parts -----------------------------------------------------------------------------
class PartWriter:
    """Writes one chunk of output records to a part file, and joins parts into the final file."""

    suffix: str
    # The output's column names once fixed (CSV/TSV): kept in the journal's manifest, so that a resumed run writes
    # the same columns, by their real names (a TSV header shows a tab or line break in a name as a space).
    columns: list[str] | None = None
    # Whether the output is its parts' bytes one after another (text formats: only the first part has a header),
    # so that the journal can join them by appending to the first.
    concatenates = True

    def write(self, records: list[dict[str, Any]], path: Path, first: bool) -> None:
        raise NotImplementedError

    def merge(self, parts: Sequence[Path], out: Path) -> None:
        """Concatenate parts byte for byte (text formats: only the first part carries a header)."""
        with open(out, "wb") as target:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, target, 1 << 20)


def json_line(record: dict[str, Any]) -> str:
    """A JSON lines record as both engines write it: floats in full, dates and times as ISO text (`str`)."""
    return strict_json(record, ensure_ascii=False, default=str) + "\n"


class JsonlParts(PartWriter):
    suffix = ".jsonl"

    def write(self, records, path, first):
        with open(path, "w", encoding="utf-8") as stream:
            stream.writelines(json_line(record) for record in records)


def chunk_columns(records: Sequence[dict[str, Any]], results: Sequence[str]) -> list[str]:
    """Every column the records of a chunk hold (a JSONL input's records may differ, and an error row holds no
    input fields): `line`, the input columns in order of first appearance, then the result columns. `results` names
    those (`OutputColumns.result_names`): an input field called `score_x` or `tokens` is an input column, in its
    place, as the same column of a CSV input is."""
    written = {"line", *results}
    inputs = dict.fromkeys(name for record in records for name in record if name not in written)
    return ["line", *inputs, *results]


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


def delimited_cell(value: Any) -> Any:
    """A value as a CSV/TSV cell: JSON's objects, arrays and booleans (a JSONL input's, a Parquet input's lists and
    structs) as JSON text that a JSON parser reads back, not as Python's repr; a null as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple, bool)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


# A tab or line break inside a TSV value would start a new field or row: unquoted TSV has no way to hold one.
_TSV_BREAKS = str.maketrans("\t\r\n", "   ")


class DelimitedParts(PartWriter):
    """CSV/TSV: the first chunk fixes the columns (every row of a CSV/TSV input has the same ones).

    TSV is written the way .tsv is read (GLUE style: no quoting, \\n line ends), so the tool reads its own output
    back; a tab or line break inside a value is written as a space, with a warning."""

    def __init__(self, fmt: str, output: OutputColumns, columns: list[str] | None = None) -> None:
        """`output`: the columns known before any row; `columns`: an interrupted run's (None: `output`'s, else the
        first chunk's)."""
        self.format = fmt
        self.suffix = f".{fmt}"
        self.columns = columns or output.names()
        self.without_rows = output.without_rows()
        self.results = output.result_names()
        self.late = _LateColumns()
        self.said_breaks = False

    def write(self, records, path, first):
        if self.columns is None:
            self.columns = chunk_columns(records, self.results)
        self.late.report(records, self.columns)
        rows = [[delimited_cell(record.get(name)) for name in self.columns] for record in records]
        with open(path, "w", encoding="utf-8", newline="") as stream:
            if self.format == "csv":
                writer = csv.writer(stream)
                if first:
                    writer.writerow(self.columns)
                writer.writerows(rows)
                return
            if first:
                stream.write(self._tsv_line(self.columns, "the header"))
            for record, values in zip(records, rows, strict=True):
                stream.write(self._tsv_line(values, f"line {record.get('line')}"))

    def _tsv_line(self, values: Sequence[Any], where: str) -> str:
        texts = [str(value) for value in values]
        spaced = [text.translate(_TSV_BREAKS) for text in texts]
        if spaced != texts and not self.said_breaks:
            self.said_breaks = True
            log.warning(
                "%s: a value holds a tab or line break, which unquoted TSV cannot hold; they are written as spaces "
                "(in any later row too): write .csv to keep them",
                where,
            )
        return "\t".join(spaced) + "\n"

    def merge(self, parts, out):
        if not parts and self.without_rows is not None:  # no rows: the header alone, as the same input with rows has
            self.columns = self.columns or self.without_rows
            self.write([], out, first=True)
            return
        super().merge(parts, out)


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
    """Parquet: the first chunk fixes the columns and result columns have fixed types. An input column's type is the
    one that fits its values in every chunk so far: a column null in the first chunks (Arrow's null type) takes its
    type from the first values that come, numbers widen to floats once one has a fraction, JSON objects gather their
    keys. `merge` gives every part the final types (a column that never held a value becomes text); values that
    share no type (a number and a string) stop the job at their chunk."""

    suffix = ".parquet"
    concatenates = False  # one footer per file: parts are rewritten into one

    def __init__(self, columns: OutputColumns, schema=None) -> None:
        """`schema`: the columns and types of an interrupted run's parts."""
        self.pq = import_parquet("writing Parquet files")
        import pyarrow as pa

        self.pa = pa
        self.fixed = columns.arrow_types()
        self.without_rows = columns.without_rows()
        self.results = columns.result_names()
        names = columns.names()
        if schema is None and names is not None:
            schema = pa.schema([(name, self.fixed.get(name, pa.null())) for name in names])
        self.schema = schema
        self.late = _LateColumns()
        # What Arrow raises for values that share no type (OverflowError: an int beyond 64 bits).
        self.unfit = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)

    def write(self, records, path, first):
        pa = self.pa
        if self.schema is None:
            self.schema = pa.schema([(name, pa.null()) for name in chunk_columns(records, self.results)])
        self.late.report(records, self.schema.names)
        names = self.schema.names
        columns = [
            self._column(records, name, self.fixed.get(name), earlier)
            for name, earlier in zip(names, self.schema.types, strict=True)
        ]
        self.schema = pa.schema([(name, column.type) for name, column in zip(names, columns, strict=True)])
        self.pq.write_table(pa.Table.from_arrays(columns, schema=self.schema), path)

    def _column(self, records: Sequence[dict[str, Any]], name: str, fixed, earlier):
        """The chunk's values of one column, as an Arrow array of its fixed type, or of the type that fits both them
        and the earlier chunks' values (`earlier`, the column's type so far)."""
        pa = self.pa
        values = [record.get(name) for record in records]
        if fixed is not None:  # a result column (a chunk of errors has null scores) or a Parquet input's column
            try:
                return pa.array(values, type=fixed)
            except self.unfit as error:
                raise self._mismatch(records, f"column {name!r} holds values that are not {fixed}", error) from None
        try:
            column = pa.array(values)
        except self.unfit as error:
            raise self._mismatch(
                records, f"column {name!r} holds values that do not fit one Parquet type", error
            ) from None
        if column.type == earlier:  # the usual chunk: nothing to reconcile
            return column
        try:
            kind = pa.unify_schemas(
                [pa.schema([(name, earlier)]), pa.schema([(name, column.type)])], promote_options="permissive"
            ).types[0]
            pa.array([], type=earlier).cast(kind)  # what merge will do to the earlier parts
            return column.cast(kind, safe=False)  # see merge
        except self.unfit as error:
            what = f"column {name!r} holds {column.type} values where earlier rows hold {earlier}"
            raise self._mismatch(records, what, error) from None

    @staticmethod
    def _mismatch(records: Sequence[dict[str, Any]], what: str, error: Exception) -> SchemaMismatch:
        """One line: which rows, what Arrow could not do, and what to write instead."""
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return SchemaMismatch(
            f"rows {records[0].get('line')}-{records[-1].get('line')}: {what} ({reason}); "
            "a Parquet column has one type: write .jsonl instead"
        )

    def merge(self, parts, out):
        pa = self.pa
        if parts:
            # Each part has the types of its time; the last types fit them all (so the earlier parts cast to them).
            # Every such cast widens, so an unsafe one only lets an integer beyond 2**53 round to the nearest float,
            # as JSON readers do, where a safe one would fail after the whole input was classified.
            schema = pa.unify_schemas([self.pq.read_schema(part) for part in parts], promote_options="permissive")
            schema = parquet_schema(schema.names, dict(zip(schema.names, schema.types, strict=True)))
        else:  # no rows: the columns known without them (the input's and the results'), else the results' own
            names = self.schema.names if self.schema is not None else self.without_rows
            schema = parquet_schema(names, self.fixed)
        with self.pq.ParquetWriter(out, schema) as writer:
            for part in parts:
                # One part at a time, read without the dataset layer's threads and read-ahead buffers.
                writer.write_table(self.pq.ParquetFile(part).read(use_threads=False).cast(schema, safe=False))


def part_writer(
    fmt: str, columns: OutputColumns, first_part: Path | None = None, written: list[str] | None = None
) -> PartWriter:
    """The writer for `fmt`; given the first part of an interrupted run, it keeps that run's columns: `written`, the
    names it recorded (`PartWriter.columns`), else a CSV/TSV part's header."""
    if fmt == "jsonl":
        return JsonlParts()
    if fmt == "parquet":
        schema = None
        if first_part is not None:
            # Every counted part lies beside the first (the journal has removed any it does not count); a column null
            # in the first parts may have its type from a later one.
            pq = import_parquet("writing Parquet files")
            import pyarrow as pa

            parts = sorted(first_part.parent.glob(f"*{ParquetParts.suffix}"))
            schema = pa.unify_schemas([pq.read_schema(part) for part in parts], promote_options="permissive")
        return ParquetParts(columns, schema)
    if first_part is None or written:
        return DelimitedParts(fmt, columns, written)
    # A run of an earlier version recorded no names. Its header has them as written, which is exact for CSV; a TSV
    # header has a tab or line break in a name as a space, so such a column's values would be lost.
    with open(first_part, encoding="utf-8", newline="") as stream:
        return DelimitedParts(fmt, columns, next(delimited_reader(stream, fmt)))
