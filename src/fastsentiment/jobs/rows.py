"""Reading the row files a user hands us: .txt, .csv, .tsv, .jsonl and .parquet.

Rows are streamed, never loaded whole, and a `RowSource` always knows its position after the last
row it gave out, so an interrupted job can start again from exactly there. Bytes are decoded with
`surrogateescape` so that one undecodable line becomes one error row that names its line, while
every other row still flows. A UTF-8 byte order mark at the start of a file (Excel's "CSV UTF-8") is
skipped, but counted in the byte position.

Memory stays bounded by the chunk, not the file: a text over `MAX_TEXT_CHARS` (tokenised whole, it would cost
about a hundred times its size) and a line over `MAX_LINE_BYTES` (never held whole) are error rows.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Protocol

from fastsentiment.errors import InputError, missing_extra
from fastsentiment.texts import MAX_TEXT_CHARS, replace_undecodable, text_problem

DEFAULT_TEXT_COLUMNS = ("sentence", "text")
FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
# The longest line a reader holds (a longer one is skipped as it is read): the longest text in 4-byte characters,
# with room for a record's other fields.
MAX_LINE_BYTES = 8 * MAX_TEXT_CHARS
SPLIT_IT = "(split it into shorter rows)"
# No CSV value may outgrow a text either: this also stops a quote that is never closed from swallowing the file.
csv.field_size_limit(MAX_TEXT_CHARS)


@dataclass
class Row:
    """One input row: its 1-based line (row number for Parquet), all its fields, and why it is unusable."""

    line: int
    fields: dict[str, Any]
    error: str | None = None
    text: str | None = field(default=None)
    called: str = "line"  # what messages call the row beside its number: "line 12", or "input 2" for argument texts

    @property
    def name(self) -> str:
        return f"{self.called} {self.line}" if self.line is not None else f"a {self.called}"


def table_format(path: str | Path, override: str | None = None) -> str:
    if override:
        if override not in FORMATS.values():
            raise InputError(f"unknown format {override!r}; expected one of txt, csv, tsv, jsonl, parquet")
        return override
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: cannot tell the format from the extension {suffix!r}; use .txt, .csv, .tsv, .jsonl or .parquet"
        )
    return FORMATS[suffix]


def import_parquet(purpose: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "parquet", purpose) from None
    return pq


class RowSource:
    """The rows of one file (or '-' for stdin lines), each with `text` set from the text column and checked.

    `position` is where the next row starts (bytes and lines for text formats, rows for Parquet);
    `rows(start=position)` continues from it. `consumed`/`total` drive progress bars.
    """

    def __init__(
        self, path: str | Path, column: str | None = None, fmt: str | None = None, column_option: str = "--column"
    ) -> None:
        """`column_option`: the command's option that names the text column, for the message when it is missing."""
        self.path = path
        self.stream = is_stream(path)  # stdin or a pipe: read once, from its start, so never resumed
        if not self.stream and not Path(path).is_file():
            raise InputError(missing_input(path))
        self.format = input_format(path, fmt)
        if self.format == "parquet" and self.stream:
            raise InputError(f"{path} is a pipe: Parquet is read from a file (it is read from its end)")
        if self.format != "parquet" and not self.stream:
            check_text_file(Path(path), self.format)
        self._reader: _Reader = (
            ParquetReader(path) if self.format == "parquet" else TextReader(path, self.format, self.stream)
        )
        self.header = self._reader.header
        if self.header is not None:
            _refuse_duplicate_columns(self.header, f"{path}: ")
        self.column = _pick_text_column(self.header, column, column_option) if self.header is not None else column
        self.column_option = column_option

    @property
    def columns(self) -> list[str] | None:
        """The input's columns where its format fixes them (a text file's lines are one `text` column); None for
        JSONL, whose records bring their own."""
        return ["text"] if self.format == "txt" else self.header

    @property
    def arrow_types(self) -> dict[str, Any] | None:
        """A Parquet input's column types (None for other formats)."""
        return self._reader.arrow_types if isinstance(self._reader, ParquetReader) else None

    @property
    def total(self) -> int | None:
        return None if self.stream else self._reader.total

    @property
    def consumed(self) -> int:
        return self._reader.consumed

    @property
    def position(self) -> dict[str, int]:
        return self._reader.position

    def consumed_at(self, position: dict[str, int] | None) -> int:
        """What `consumed` was when this source gave out `position` (0 for the start)."""
        return self._reader.consumed_at(position) if position else 0

    def rows(self, start: dict[str, int] | None = None) -> Iterator[Row]:
        """Yield rows from the beginning, or from `start` (a `position` this source gave out earlier)."""
        column = "text" if self.format == "txt" else self.column
        yield from _checked_rows(self._reader.records(start), column, self.column_option)


class _Reader(Protocol):
    """Raw records of one file with a resumable position; `RowSource` picks the text and checks it."""

    header: list[str] | None
    total: int | None
    consumed: int
    position: dict[str, int]

    def records(self, start: dict[str, int] | None) -> Iterator[Row]: ...

    def consumed_at(self, position: dict[str, int]) -> int: ...


class TextReader:
    """.txt/.csv/.tsv/.jsonl files, or stdin or a pipe (`stream`); the position is a byte offset and a line count.

    A stream is opened once and its header read from the same lines its rows then continue (it cannot be reopened
    or sought); a file is reopened for its rows, at the position to start from."""

    def __init__(self, path: str | Path, fmt: str, stream: bool = False) -> None:
        self.path = path
        self.stream = stream
        self.format = fmt
        self.header: list[str] | None = None
        self._data_start = (0, 0)
        self._lines: _LineStream | None = None
        if stream:
            self._lines = _LineStream(sys.stdin.buffer if str(path) == "-" else open(path, "rb"))
            if fmt in ("csv", "tsv"):  # its header is read now, which waits for the first bytes anyway
                self._check_stream_start()
        if fmt in ("csv", "tsv"):
            self.header, self._data_start = self._read_header()

    @property
    def total(self) -> int:
        return Path(self.path).stat().st_size

    @property
    def consumed(self) -> int:
        return self._lines.offset if self._lines else 0

    @property
    def position(self) -> dict[str, int]:
        lines = self._lines
        return {"offset": lines.offset, "lines": lines.lines} if lines else {"offset": 0, "lines": 0}

    def consumed_at(self, position: dict[str, int]) -> int:
        return position["offset"]

    def records(self, start: dict[str, int] | None) -> Iterator[Row]:
        if self.stream:
            yield from self._stream_records(start)
            return
        if self.format in ("csv", "tsv") and self.header is None:
            return  # an empty file: no header, no rows
        offset, lines = (start["offset"], start["lines"]) if start else self._data_start
        with open(self.path, "rb") as binary:
            if offset:
                binary.seek(offset)
            self._lines = _LineStream(binary, offset, lines)
            yield from _text_records(self._lines, self.format, self.header)

    def _check_stream_start(self) -> None:
        """`_check_text_encoding` on the bytes of a stream that have arrived, left there for the reading; done as the
        rows are first read, not as the job starts: the model loads meanwhile, however long the first line takes."""
        peek = getattr(self._lines.binary, "peek", None)
        if peek is not None:
            _check_text_encoding(peek(1 << 16)[: 1 << 16], "stdin" if str(self.path) == "-" else str(self.path))

    def _stream_records(self, start: dict[str, int] | None) -> Iterator[Row]:
        lines = self._lines
        if start or lines is None:
            raise InputError(f"{self.path} is a pipe or stdin: it cannot be read again")
        try:
            if self.format not in ("csv", "tsv"):
                self._check_stream_start()
            if self.format not in ("csv", "tsv") or self.header is not None:  # else empty: no header, no rows
                yield from _text_records(lines, self.format, self.header)
        finally:
            if lines.binary is not sys.stdin.buffer:
                lines.binary.close()

    def _read_header(self) -> tuple[list[str] | None, tuple[int, int]]:
        if self._lines is not None:  # a stream: its rows follow in the same lines
            return self._header(self._lines)
        with open(self.path, "rb") as binary:
            return self._header(_LineStream(binary))

    def _header(self, lines: _LineStream) -> tuple[list[str] | None, tuple[int, int]]:
        try:
            header = next(delimited_reader(lines, self.format))
        except StopIteration:
            return None, (0, 0)
        except csv.Error as error:
            raise InputError(f"{self.path}: malformed {self.format.upper()} header ({error})") from None
        except LineTooLong as error:
            raise InputError(f"{self.path}: the header is {error}") from None
        return header, (lines.offset, lines.lines)


def check_text_file(path: Path, fmt: str) -> None:
    """A text-format file's refusals that do not wait for its rows (`RowSource`'s, and a Ray job's for the files it
    reads without one): UTF-16, lone carriage returns, a JSON array in a JSON lines file."""
    with open(path, "rb") as binary:
        _check_text_encoding(binary.read(1 << 16), str(path))
    if fmt == "jsonl" and _starts_an_array(path):
        raise InputError(f"{path} holds a JSON array: write one JSON object or string per line (JSON Lines)")


def _check_text_encoding(start: bytes, path: str) -> None:
    """Refuse what reading line by line as UTF-8 would turn into one garbled text or header: UTF-16 (Excel's
    "Unicode text"), and lines ended by lone carriage returns (classic Mac), which hold no line feed at all. `start`:
    the input's first bytes (of a stream, those that have arrived)."""
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"{path}: UTF-16 text (it starts with that byte order mark); save it as UTF-8")
    if b"\r" in start.rstrip(b"\r") and b"\n" not in start:
        raise InputError(f"{path}: lines end in lone carriage returns (\\r); convert them to line feeds (\\n)")


class ParquetReader:
    """Parquet files, read a record batch at a time; the position is a row count."""

    def __init__(self, path: str | Path) -> None:
        pq = import_parquet("reading Parquet files")
        try:
            self._file = pq.ParquetFile(path)
        except Exception as error:
            raise InputError(f"{path}: not a readable Parquet file ({error})") from None
        self.header: list[str] | None = self._file.schema_arrow.names
        self.arrow_types = {field.name: field.type for field in self._file.schema_arrow}
        self.consumed = 0

    @property
    def total(self) -> int:
        return self._file.metadata.num_rows

    @property
    def position(self) -> dict[str, int]:
        return {"rows": self.consumed}

    def consumed_at(self, position: dict[str, int]) -> int:
        return position["rows"]

    def records(self, start: dict[str, int] | None) -> Iterator[Row]:
        start_row = start["rows"] if start else 0
        metadata = self._file.metadata
        first_row, groups = 0, []
        for group in range(metadata.num_row_groups):
            rows_in_group = metadata.row_group(group).num_rows
            if first_row + rows_in_group > start_row or groups:
                groups.append(group)
            else:
                first_row += rows_in_group
        self.consumed = start_row
        skip = start_row - first_row
        if not groups:
            return
        for batch in self._file.iter_batches(batch_size=1024, row_groups=groups):
            records = batch.to_pylist()
            if skip:
                records, skip = records[skip:], max(0, skip - len(records))
            for record in records:
                self.consumed += 1
                yield Row(line=self.consumed, fields=record)


def rows_from_lines(binary_lines: Iterable[bytes], fmt: str, column: str | None) -> Iterator[Row]:
    """Checked rows of a text-format file given as binary lines (for readers that hand us a stream)."""
    lines = _LineStream(binary_lines)
    header = None
    if fmt in ("csv", "tsv"):
        header = next(delimited_reader(lines, fmt), None)
        if header is None:
            return
        _refuse_duplicate_columns(header)
        column = _pick_text_column(header, column)
    yield from _checked_rows(_text_records(lines, fmt, header), "text" if fmt == "txt" else column)


def _checked_rows(records: Iterable[Row], column: str | None, column_option: str = "--column") -> Iterator[Row]:
    for row in records:
        if row.error is None:
            row.text, row.error = checked_text(row.fields, column, column_option)
        yield row


def _text_records(lines: _LineStream, fmt: str, header: list[str] | None) -> Iterator[Row]:
    if fmt == "txt":
        return _txt_rows(lines)
    if fmt == "jsonl":
        return _jsonl_rows(lines)
    return _delimited_rows(lines, fmt, header)


def _pick_text_column(header: list[str], column: str | None, option: str = "--column") -> str:
    if column is None:
        column = next((name for name in DEFAULT_TEXT_COLUMNS if name in header), None)
        if column is None:
            raise InputError(f"no 'sentence' or 'text' column (columns: {', '.join(header)}); choose one with {option}")
    elif column not in header:
        raise InputError(f"no column {column!r} (columns: {', '.join(header)}); choose one with {option}")
    return column


def _refuse_duplicate_columns(header: list[str], where: str = "") -> None:
    """Columns that share a name would keep only one of their values in every row: refuse them."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen:
            raise InputError(
                f"{where}two columns are named {name!r} (columns {seen[name]} and {number}); "
                "rename one so that neither is lost"
            )
        seen[name] = number


def _starts_an_array(path: Path) -> bool:
    """Whether the file's first character that is not white space (or a byte order mark) opens a JSON array."""
    with open(path, "rb") as stream:
        while block := stream.read(4096):
            start = block.removeprefix(codecs.BOM_UTF8).lstrip()
            if start:
                return start.startswith(b"[")
    return False


def missing_input(path: str | Path) -> str:
    """Why an input that is not a readable file cannot be read."""
    if Path(path).is_dir():
        return f"{path} is a folder; name a file (--engine ray reads a folder of files)"
    if Path(path).exists():
        return f"{path} is not a regular file or a pipe; give its rows on stdin with --file -"
    return f"input file not found: {path}"


def stream_name(path: str | Path) -> str | None:
    """What a message calls an input that is read once ("stdin" or "a pipe"; `is_stream`), or None for a file."""
    if not is_stream(path):
        return None
    return "stdin" if str(path) == "-" else "a pipe"


def is_stream(path: str | Path) -> bool:
    """Whether `path` is read once, from its start: '-' (stdin), or a pipe or terminal (`--file <(head -3 x.txt)`,
    `--file /dev/stdin`), which exist as paths but cannot be sought, reopened or read again to resume."""
    if str(path) == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def input_format(path: str | Path, override: str | None = None) -> str:
    """The format of an input: by its extension (or `override`); stdin, a pipe without an extension (`<(cmd)` is
    /dev/fd/63) and stdin by another name (`--file /dev/stdin < rows.txt`, where it is a file) are lines of text."""
    if str(path) == "-" or (override is None and not Path(path).suffix and (is_stream(path) or _names_stdin(path))):
        return "txt"
    return table_format(path, override)


def _names_stdin(path: str | Path) -> bool:
    return str(path) in ("/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")


class LineTooLong(Exception):
    """A line over `MAX_LINE_BYTES`, skipped (and counted) as it was read; the line after it reads on."""

    def __init__(self, size: int) -> None:
        self.what = f"a line of {size:,} bytes, over the limit of {MAX_LINE_BYTES:,}"
        super().__init__(f"{self.what} {SPLIT_IT}")


class _LineStream:
    """Lines of a binary stream decoded as text, counting the bytes and lines consumed so far.

    An iterator, not a generator, so that it reads on after raising `LineTooLong` (through a csv reader too). Where
    the stream has `readline`, a line is read up to the limit only, so a file without line ends is never held."""

    def __init__(self, binary: Iterable[bytes], offset: int = 0, lines: int = 0) -> None:
        self.binary = binary
        self.offset = offset
        self.lines = lines
        self._readline = getattr(binary, "readline", None)
        self._iterator = None if self._readline else iter(binary)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        at_file_start = self.offset == 0
        if self._readline is None:
            raw = next(self._iterator)
            size = len(raw)
        else:
            raw = self._readline(MAX_LINE_BYTES + 1)
            size = len(raw)
            if not raw:
                raise StopIteration
            while size > MAX_LINE_BYTES and not raw.endswith(b"\n") and (raw := self._readline(1 << 20)):
                size += len(raw)  # the rest of an over-long line, read and dropped
        self.offset += size  # the mark's bytes too: offsets are where to seek in the file
        self.lines += 1
        if size > MAX_LINE_BYTES:
            raise LineTooLong(size)
        if at_file_start:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        return raw.decode("utf-8", "surrogateescape")

    def drain(self) -> None:
        """Read to the end, counting (a CSV reader lost in a runaway quote cannot find the rows that follow)."""
        while True:
            try:
                next(self)
            except StopIteration:
                return
            except LineTooLong:
                continue


def delimited_reader(lines: Iterable[str], fmt: str):
    """The rows of .csv (standard quoting) or .tsv text: the one reading rule, for inputs and for resumed outputs."""
    # GLUE-style TSV files are unquoted and contain bare quote characters as text.
    if fmt == "tsv":
        return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    # strict: a quote never closed is an error at the end of the data, not a value that silently swallows every
    # later row, and text after a closing quote ('"a"b') is an error, not quietly joined to the value.
    return csv.reader(lines, strict=True)


def _numbered_lines(lines: _LineStream) -> Iterator[tuple[int, str, str | None]]:
    """Each line with its number and None, or for a line too long to hold, "" and why."""
    while True:
        try:
            line, error = next(lines), None
        except StopIteration:
            return
        except LineTooLong as too_long:
            line, error = "", str(too_long)
        yield lines.lines, line, error


def _txt_rows(lines: _LineStream) -> Iterator[Row]:
    for number, line, error in _numbered_lines(lines):
        yield Row(line=number, fields={"text": line.rstrip("\r\n")}, error=error)


def _delimited_rows(lines: _LineStream, fmt: str, header: list[str]) -> Iterator[Row]:
    reader = delimited_reader(lines, fmt)
    while True:
        first = lines.lines + 1  # a quoted value may span lines: a record is numbered by the line it starts on
        try:
            values = next(reader)
        except StopIteration:
            return
        except (csv.Error, LineTooLong) as error:
            yield Row(line=first, fields=dict.fromkeys(header, ""), error=_unreadable_record(error, fmt, first, lines))
            continue
        if not values:
            continue  # a blank line between rows is layout, not data
        if len(values) != len(header):
            yield Row(
                line=first,
                fields=dict(zip_longest(header, values[: len(header)], fillvalue="")),
                error=f"expected {len(header)} fields, found {len(values)}",
            )
            continue
        yield Row(line=first, fields=dict(zip(header, values, strict=False)))


def _unreadable_record(error: csv.Error | LineTooLong, fmt: str, first: int, lines: _LineStream) -> str:
    """Why the CSV/TSV record that starts on line `first` cannot be read. A quoted value may span lines, so once one
    runs to the end of the data or past a limit, where the rows after it start can no longer be told: those lines
    are read to the end unclassified (reading on would make rows of a value's lines), and the error says so."""
    message, last, malformed = str(error), lines.lines, f"malformed {fmt.upper()} row"
    if message == "unexpected end of data":  # strict csv: the data ended inside a quoted value
        if last == first:
            return f"{malformed} (a quote opened in it is never closed)"
        return (
            f"{malformed} (a quote opened in it is never closed: lines {first}-{last} were read as one value, so the "
            "rows on them cannot be told apart and none is classified; close the quote and run again)"
        )
    if isinstance(error, LineTooLong):
        past = error.what
    elif message.startswith("field larger than field limit"):
        past = f"a value over the limit of {MAX_TEXT_CHARS:,} characters"
    else:
        return f"{malformed} ({message})"
    if last == first:
        return f"{past} {SPLIT_IT}"
    lines.drain()  # the error came inside a value quoted over several lines
    return (
        f"{malformed} (a quoted value that starts in it runs on to line {last}, where it is {past}: most likely a "
        f"quote never closed, so the rows of lines {first}-{lines.lines} cannot be told apart and none is "
        "classified; fix the quote and run again)"
    )


def _jsonl_rows(lines: _LineStream) -> Iterator[Row]:
    for number, line, too_long in _numbered_lines(lines):
        if too_long:
            yield Row(line=number, fields={}, error=too_long)
            continue
        if not line.strip():
            continue
        # Undecodable bytes (kept as surrogate escapes) parse as characters of their string: the record keeps its
        # fields, as a CSV row does, and only a text that holds them is an error (checked_text).
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


def checked_text(
    fields: dict[str, Any], column: str | None, column_option: str = "--column"
) -> tuple[str | None, str | None]:
    """The text of a record's column and None, or None and why the record cannot be classified (`column_option`:
    the command's option that names the text field)."""
    if column is None:
        column = next((name for name in DEFAULT_TEXT_COLUMNS if name in fields), None)
        if column is None:
            wanted = " or ".join(map(repr, DEFAULT_TEXT_COLUMNS))
            return None, f"no {wanted} field (name the text field with {column_option})"
    if column not in fields:
        return None, f"no field {column!r}"
    value = fields[column]
    if value is not None and not isinstance(value, str):
        return None, f"field {column!r} is not text"
    if value is not None and len(value) > MAX_TEXT_CHARS:
        return None, f"a text of {len(value):,} characters, over the limit of {MAX_TEXT_CHARS:,} {SPLIT_IT}"
    problem = text_problem(value)
    return (None, problem) if problem else (value, None)


def clean_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields made safe to write: undecodable bytes and lone surrogates become U+FFFD so output files stay valid
    UTF-8, in names (a header's) and values, nested ones (JSONL objects and lists) too."""
    return {_clean(key): _clean(value) for key, value in fields.items()}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return replace_undecodable(value)
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value
