"""What a file job is: its input, output and engine (`FileJob`) and the model it runs (`ModelOptions`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from fastsentiment.errors import InputError

ENGINES = ("local", "ray")
RAY_OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
CHUNK_ROWS = 2048


@dataclass(frozen=True)
class ModelOptions:
    """How to load the classifier: the arguments of `Classifier.load`."""

    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str | None = None
    batch_size: int = 32
    max_length: int | None = None
    threads: int | None = None

    def load(self):
        from fastsentiment.classifier import Classifier

        options = asdict(self)
        threads = options.pop("threads")
        if threads:  # interim: until backends take `threads` as a parameter
            os.environ["FASTSENTIMENT_THREADS"] = str(threads)
        return Classifier.load(**options)


@dataclass(frozen=True)
class FileJob:
    """Classify the rows of `source` (a file, '-' for stdin, or with Ray a folder) to the console or `out`."""

    source: str
    out: Path | None = None
    column: str | None = None
    as_json: bool = False
    resume: bool = False
    chunk_rows: int = CHUNK_ROWS
    engine: str = "local"
    # Ray only: the cluster to join (None: start Ray here), actors, and the files in the output folder.
    address: str | None = None
    num_workers: int = 1
    out_format: str | None = None

    def check(self) -> None:
        """Every combination of options that cannot work, refused before anything is loaded."""
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r}; choose local or ray")
        if self.resume and (self.source == "-" or self.out is None):
            raise InputError("--resume continues a --file run written with --out")
        if self.engine == "ray":
            if self.source == "-" or self.out is None:
                raise InputError("--engine ray classifies a --file (or folder) into an --out folder")
            if self.resume:
                raise InputError("--resume is for the local engine; a Ray job retries failed work itself")
            if self.ray_output_format not in RAY_OUTPUT_FORMATS:
                raise InputError(f"--out-format {self.ray_output_format!r}: choose parquet, csv or jsonl")
        elif self.address or self.out_format:
            raise InputError("--address and --out-format belong to --engine ray")

    @property
    def ray_output_format(self) -> str:
        suffix = self.out.suffix.lower() if self.out else ""
        return self.out_format or {".csv": "csv", ".jsonl": "jsonl"}.get(suffix, "parquet")
