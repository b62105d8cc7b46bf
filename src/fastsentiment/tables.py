"""Reading and writing the row files a user hands us: .txt, .csv, .tsv and .jsonl.

Rows are streamed, never loaded whole. Bytes are decoded with `surrogateescape` so that one
undecodable line becomes one error row that names its line, while every other row still flows.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import IO, Any

from fastsentiment.errors import InputError

DEFAULT_TEXT_COLUMNS = ("sentence", "text")
FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
csv.field_size_limit(1 << 30)


@dataclass
class Row:
    """One input row: its 1-based line number, all its fields, and why it is unusable (if it is)."""

    line: int
    fields: dict[str, Any]
    error: str | None = None
    text: str | None = field(default=None)


def table_format(path: str | Path, override: str | None = None) -> str:
    if override:
        if override not in FORMATS.values():
            raise InputError(f"unknown format {override!r}; expected one of txt, csv, tsv, jsonl")
        return override
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: cannot tell the format from the extension {suffix!r}; use .txt, .csv, .tsv or .jsonl"
        )
    return FORMATS[suffix]


def open_text(path: str | Path) -> IO[str]:
    """Open a file (or '-' for stdin) as text that never raises on bad bytes."""
    if str(path) == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="")
    file = Path(path)
    if not file.is_file():
        raise InputError(f"input file not found: {file}")
    return open(file, encoding="utf-8", errors="surrogateescape", newline="")


def has_undecodable(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)


def iter_rows(stream: IO[str], fmt: str, text_column: str | None) -> Iterator[Row]:
    """Yield rows with `text` set from `text_column` (the whole line for .txt) and checked."""
    if fmt == "txt":
        rows = _txt_rows(stream)
        text_column = "text"
    elif fmt in ("csv", "tsv"):
        rows = _delimited_rows(stream, fmt, text_column)
    else:
        rows = _jsonl_rows(stream)
    for row in rows:
        if row.error is None:
            row.text, row.error = _checked_text(row.fields, text_column, row.line)
        yield row


def _txt_rows(stream: IO[str]) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        yield Row(line=number, fields={"text": line.rstrip("\r\n")})


def _delimited_rows(stream: IO[str], fmt: str, text_column: str | None) -> Iterator[Row]:
    # GLUE-style TSV files are unquoted and contain bare quote characters as text.
    reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        return
    if text_column is None:
        text_column = next((name for name in DEFAULT_TEXT_COLUMNS if name in header), None)
        if text_column is None:
            raise InputError(
                f"no 'sentence' or 'text' column in the header (columns: {', '.join(header)}); choose one with --column"
            )
    elif text_column not in header:
        raise InputError(
            f"no column {text_column!r} in the header (columns: {', '.join(header)}); choose one with --column"
        )
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Row(
                line=reader.line_num, fields=dict.fromkeys(header, ""), error=f"malformed {fmt.upper()} row ({error})"
            )
            continue
        if not values:
            continue  # a blank line between rows is layout, not data
        if len(values) != len(header):
            yield Row(
                line=reader.line_num,
                fields=dict(zip_longest(header, values[: len(header)], fillvalue="")),
                error=f"expected {len(header)} fields, found {len(values)}",
            )
            continue
        yield Row(line=reader.line_num, fields=dict(zip(header, values, strict=False)))


def _jsonl_rows(stream: IO[str]) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        if has_undecodable(line):
            yield Row(line=number, fields={}, error="not valid UTF-8")
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield Row(line=number, fields={}, error=f"malformed JSON ({error.msg})")
            continue
        if isinstance(value, str):
            value = {"text": value}
        if not isinstance(value, dict):
            yield Row(line=number, fields={}, error="expected a JSON object or string")
            continue
        yield Row(line=number, fields=value)


def _checked_text(fields: dict[str, Any], column: str | None, line: int) -> tuple[str | None, str | None]:
    if column is None:
        column = next((name for name in DEFAULT_TEXT_COLUMNS if name in fields), DEFAULT_TEXT_COLUMNS[-1])
    if column not in fields:
        return None, f"no field {column!r}"
    value = fields[column]
    if not isinstance(value, str):
        return None, f"field {column!r} is not text"
    if has_undecodable(value):
        return None, "not valid UTF-8"
    if not value.strip():
        return None, "empty text"
    return value, None


def clean_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields made safe to write: undecodable bytes become U+FFFD so output files stay valid UTF-8."""
    return {
        key: value.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if isinstance(value, str) else value
        for key, value in fields.items()
    }
