"""`fastsentiment classify`: texts from arguments, stdin or a file."""

from __future__ import annotations

from pathlib import Path

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import (
    AggregateOption,
    BackendOption,
    BatchSizeOption,
    DeviceOption,
    LabelsOption,
    LongTextOption,
    MaxLengthOption,
    ModelOption,
    PrecisionOption,
    StrideOption,
    expand_home,
    label_names,
    long_text_options,
)
from fastsentiment.errors import InputError


@app.command()
def classify(
    texts: list[str] = typer.Argument(
        None, help="Texts to classify. With none, or - (and no --file), lines are read from stdin."
    ),
    file: Path | None = typer.Option(
        None,
        "--file",
        "-f",
        help="A .txt (one text per line), .csv, .tsv, .jsonl or .parquet file; with --engine ray also a folder of them.",
        callback=expand_home,
    ),
    column: str | None = typer.Option(
        None, "--column", help="Text column of a .csv/.tsv/.jsonl/.parquet file \\[default: sentence, else text]."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write results to this .csv, .tsv, .jsonl or .parquet file (a folder with --engine ray) instead of stdout.",
        callback=expand_home,
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
        None, "--threads", min=1, help="Compute threads (per Ray actor) \\[default: every usable CPU; 1 per actor]."
    ),
    out_format: str | None = typer.Option(
        None,
        "--out-format",
        help="Files in the --engine ray output folder: parquet, csv or jsonl \\[default: parquet].",
    ),
    model: ModelOption = None,
    backend: BackendOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    batch_size: BatchSizeOption = None,
    max_length: MaxLengthOption = None,
    long_text: LongTextOption = "truncate",
    stride: StrideOption = None,
    aggregate: AggregateOption = None,
    labels: LabelsOption = None,
) -> None:
    """Classify texts: one line per input with label, confidence and text."""
    from fastsentiment.jobs.job import FileJob, ModelOptions
    from fastsentiment.jobs.run import run_file_job

    if texts == ["-"]:  # as cat and grep read it: stdin, not the text "-"
        texts = []
    elif texts and "-" in texts:
        raise InputError("- reads the texts from stdin; give it alone, not among texts given as arguments")
    if texts and file:
        raise InputError("give texts as arguments or --file, not both")
    # Texts given as arguments are a one-off call, where start-up dominates; files and stdin are batched work.
    workload = "start" if texts else "throughput"
    options = ModelOptions(
        model, backend, device, precision, batch_size, max_length, threads, workload, labels=label_names(labels)
    )
    job = FileJob(
        source=None if texts else "-" if file is None else str(file),
        out=out,
        column=column,
        as_json=as_json,
        resume=resume,
        chunk_rows=chunk_rows,
        engine=engine,
        long_text=long_text_options(long_text, stride, aggregate),
        address=address,
        num_workers=num_workers,
        out_format=out_format,
    )
    if texts:
        job.check()
        failed = _classify_arguments(texts, job, options)
    else:
        failed = run_file_job(job, options)
    if failed:
        if out is None:
            where = " (see the errors above)"
        else:  # a resumed run counts the interrupted one's too, whose lines it does not repeat
            where = f" (their rows in {out}{'/' if engine == 'ray' else ''} have an error)"
        raise InputError(f"{failed} input{'s' if failed > 1 else ''} could not be classified{where}")


def _classify_arguments(texts: list[str], job, options) -> int:
    from fastsentiment.classifier import check_texts
    from fastsentiment.jobs.local_engine import classify_rows
    from fastsentiment.jobs.rows import Row
    from fastsentiment.texts import text_problem

    # As lines of a file: a text that cannot be classified is an error row, and the others are classified.
    rows = [
        Row(line=number, fields={"text": text}, text=text, error=text_problem(text), called="input")
        for number, text in enumerate(texts, 1)
    ]
    if all(row.error for row in rows):
        check_texts(texts)  # nothing to classify: fail before paying for the model load
    return classify_rows(options.load(), rows, job.out, job.as_json, job.long_text)
