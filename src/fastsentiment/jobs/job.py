"""What a file job is: its input, output and engine (`FileJob`) and the model it runs (`ModelOptions`)."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastsentiment.errors import InputError
from fastsentiment.jobs.journal import check_no_interrupted_run, check_resumable
from fastsentiment.jobs.rows import import_parquet, input_format, is_stream, missing_input, stream_name
from fastsentiment.windows import LongText

ENGINES = ("local", "ray")
RAY_OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
# The output folder's extension, read as the local engine reads an output file's (.json: JSON lines); a .tsv folder is
# named so that it can be refused (Ray writes no TSV) rather than filled with Parquet files. Others: Parquet.
RAY_OUTPUT_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv"}
CHUNK_ROWS = 2048
# A chunk also ends once its texts hold this many characters (at most twice this with its last row): a chunk's
# texts are tokenised together, at about 130 bytes a character, so 2048 documents of 100,000 characters held 26 GB.
CHUNK_CHARS = 1_000_000
# A file this large keeps the model busy for tens of seconds or more, so measuring what `auto` is pays back.
TUNE_WORTH_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelOptions:
    """How to load the classifier: the arguments of `Classifier.load`."""

    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str | None = None
    batch_size: int | None = None  # None: the device's
    max_length: int | None = None
    threads: int | None = None
    workload: str = "throughput"
    tune: bool = False  # measure what `auto` is now when no decision is cached
    labels: tuple[str, ...] | None = None  # class names in id order, replacing the config's

    def load(self):
        from fastsentiment.classifier import Classifier

        return Classifier.load(**asdict(self))


@dataclass(frozen=True)
class FileJob:
    """Classify the rows of `source` (a file, '-' for stdin, or with Ray a folder; None: texts given as arguments)
    to the console or `out`."""

    source: str | None
    out: Path | None = None
    column: str | None = None
    as_json: bool = False
    resume: bool = False
    chunk_rows: int = CHUNK_ROWS
    engine: str = "local"
    long_text: LongText = field(default_factory=LongText)
    # Ray only: the cluster to join (None: start Ray here), actors, and the files in the output folder.
    address: str | None = None
    num_workers: int = 1
    out_format: str | None = None

    def check(self) -> None:
        """Every combination of options that cannot work, refused before anything is loaded."""
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r}; choose local or ray")
        if self.path is not None and not self.path.exists():
            raise InputError(missing_input(self.source))
        if self.source == "-" and sys.stdin is None:  # started with stdin closed (`<&-`; some daemons)
            raise InputError("stdin is closed: give texts as arguments, or a --file")
        if self.resume and self.out is None:
            raise InputError("--resume continues a --file run written with --out")
        if self.resume and self.source is None:
            raise InputError("--resume continues a --file run written with --out, not texts given as arguments")
        stream = None if self.source is None else stream_name(self.source)
        if self.resume and stream:
            raise InputError(f"--resume continues a --file run written with --out; {stream} cannot be read again")
        if self.resume and self.engine == "local":
            check_resumable(self.out)  # before the model loads
        if not self.resume and self.engine == "local" and self.out is not None:
            check_no_interrupted_run(self.out, stream)
        if self.as_json and self.out is not None:
            raise InputError("--json is for the console; with --out the file's extension chooses the format")
        if self.column is not None and (self.path is None or _holds_plain_text(self.source)):
            where = "" if self.path is None else f"; {self.source} {'holds' if self.path.is_dir() else 'is'} plain text"
            raise InputError(f"--column names the text column of .csv, .tsv, .jsonl or .parquet files{where}")
        if self.engine == "ray":
            if self.source is None or is_stream(self.source) or self.out is None:
                raise InputError("--engine ray classifies a --file (or folder) into an --out folder")
            if self.resume:
                raise InputError("--resume is for the local engine; a Ray job retries failed work itself")
            if self.ray_output_format not in RAY_OUTPUT_FORMATS:
                given = f"--out-format {self.out_format!r}" if self.out_format else f"--out {self.out}"
                raise InputError(
                    f"{given}: --engine ray writes parquet, csv or jsonl files; choose one with --out-format"
                )
        elif self.address or self.out_format or self.num_workers != 1:
            raise InputError("--address, --out-format and --num-workers belong to --engine ray")
        if self.out is not None:
            from fastsentiment.jobs.sinks import output_format
            from fastsentiment.outputs import check_output_place, through_link

            if self.engine != "ray" and output_format(self.out) == "parquet":
                import_parquet("writing Parquet files")  # before the model loads
            check_output_place(through_link(self.out), folder=self.engine == "ray")  # where it is written
            if self.path is not None and _same_place(self.path, self.out):
                raise InputError(f"--out {self.out} is the input itself: it would be overwritten; choose another path")

    @property
    def path(self) -> Path | None:
        """The input file or folder; None for stdin ('-') and texts given as arguments."""
        return None if self.source in (None, "-") else Path(self.source)

    @property
    def worth_tuning(self) -> bool:
        """Whether this job is large enough for `auto` to be measured before it runs."""
        path = self.path
        if path is None or is_stream(path):
            return False
        size = sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size
        return size >= TUNE_WORTH_BYTES

    @property
    def ray_output_format(self) -> str:
        suffix = self.out.suffix.lower() if self.out else ""
        return self.out_format or RAY_OUTPUT_SUFFIXES.get(suffix, "parquet")


def _holds_plain_text(source: str) -> bool:
    """A .txt file or a pipe read as one (`input_format`), or a folder (Ray's input) with one among its files: lines
    without columns."""
    path = Path(source)
    if path.is_dir():
        return any(child.suffix.lower() == ".txt" for child in path.iterdir() if child.is_file())
    return path.suffix.lower() == ".txt" or (is_stream(source) and input_format(source) == "txt")


def _same_place(source: Path, out: Path) -> bool:
    """Whether `out` is `source` itself, by any path or link. (A Ray output folder inside an input folder is fine:
    only the folder's own files are read.)"""
    return out.exists() and os.path.samefile(source.expanduser(), out.expanduser())
