"""`fastsentiment classify`: texts from arguments, stdin or a file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from fastsentiment.cli import app
from fastsentiment.cli.options import (
    BackendOption,
    BatchSizeOption,
    DeviceOption,
    MaxLengthOption,
    ModelOption,
    PrecisionOption,
    load_classifier,
)
from fastsentiment.errors import InputError


@app.command()
def classify(
    texts: list[str] = typer.Argument(
        None, help="Texts to classify. With none (and no --file), lines are read from stdin."
    ),
    file: Path | None = typer.Option(
        None,
        "--file",
        "-f",
        help="A .txt (one text per line), .csv, .tsv, .jsonl or .parquet file; with --engine ray also a folder of them.",
    ),
    column: str | None = typer.Option(
        None, "--column", help="Text column of a .csv/.tsv/.jsonl/.parquet file [default: sentence, else text]."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write results to this .csv, .tsv, .jsonl or .parquet file (a folder with --engine ray) instead of stdout.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted --file run from its last completed chunk (needs --out)."
    ),
    chunk_rows: int = typer.Option(
        2048, "--chunk-rows", min=1, help="Rows read, classified and written at a time (a Ray batch with --engine ray)."
    ),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data; extra: ray)."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (e.g. 127.0.0.1:6379 or auto); default: start Ray here."
    ),
    num_workers: int = typer.Option(1, "--num-workers", min=1, help="Ray actors, each holding the model once."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Compute threads (per Ray actor) [default: every usable CPU; 1 per actor]."
    ),
    out_format: str | None = typer.Option(
        None, "--out-format", help="Files in the --engine ray output folder: parquet, csv or jsonl [default: parquet]."
    ),
    model: ModelOption = None,
    backend: BackendOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    batch_size: BatchSizeOption = 32,
    max_length: MaxLengthOption = None,
) -> None:
    """Classify texts: one line per input with label, confidence and text."""
    from fastsentiment.classifier import check_texts
    from fastsentiment.filemode import classify_file, classify_rows
    from fastsentiment.sinks import output_format
    from fastsentiment.tables import Row, RowSource

    if texts and file:
        raise InputError("give texts as arguments or --file, not both")
    if engine not in ("local", "ray"):
        raise InputError(f"unknown engine {engine!r}; choose local or ray")
    if resume and (file is None or out is None):
        raise InputError("--resume continues a --file run written with --out")
    if engine == "ray":
        from fastsentiment.ray_engine import RayJob

        if file is None or out is None:
            raise InputError("--engine ray classifies a --file (or folder) into an --out folder")
        if resume:
            raise InputError("--resume is for the local engine; a Ray job retries failed work itself")
        job = RayJob(
            source=str(file),
            out=out,
            out_format=_ray_output_format(out, out_format),
            column=column,
            model=model,
            backend=backend,
            device=device,
            precision=precision,
            batch_size=batch_size,
            max_length=max_length,
            address=address,
            num_workers=num_workers,
            threads=threads or 1,
            chunk_rows=chunk_rows,
        )
        _classify_on_ray(job)
        return
    if address or out_format:
        raise InputError("--address and --out-format belong to --engine ray")
    if threads:
        os.environ["FASTSENTIMENT_THREADS"] = str(threads)
    if texts:
        check_texts(texts)  # fail before paying for the model load
    # A missing file or column fails before the model load too.
    source = None if texts else RowSource(file if file is not None else "-", column)
    if out is not None:
        output_format(out)
    clf = load_classifier(model, backend, device, precision, batch_size, max_length)
    if texts:
        rows = [Row(line=number, fields={"text": text}, text=text) for number, text in enumerate(texts, start=1)]
        failed = classify_rows(clf, rows, out, as_json)
    else:
        failed = classify_file(
            clf,
            source,
            out=out,
            as_json=as_json,
            resume=resume,
            progress=file is not None,
            chunk_rows=chunk_rows,
        )
    if failed:
        raise InputError(f"{failed} input{'s' if failed > 1 else ''} could not be classified (see the errors above)")


def _ray_output_format(out: Path, requested: str | None) -> str:
    from fastsentiment.ray_engine import RAY_OUTPUT_FORMATS

    chosen = requested or {".csv": "csv", ".jsonl": "jsonl"}.get(out.suffix.lower(), "parquet")
    if chosen not in RAY_OUTPUT_FORMATS:
        raise InputError(f"--out-format {chosen!r}: choose parquet, csv or jsonl")
    return chosen


def _classify_on_ray(job) -> None:
    from fastsentiment.ray_engine import run_ray_job

    report = run_ray_job(job)
    sys.stderr.write(f"wrote {report.rows:,} rows to {job.out}/ in {report.files} {job.out_format} files\n")
    if report.failed:
        raise InputError(
            f"{report.failed} input{'s' if report.failed > 1 else ''} could not be classified "
            f"(rows with an error in {job.out}/)"
        )
