"""`fastsentiment evaluate`: accuracy of a model on a labelled file (SST-2 dev by default)."""

from __future__ import annotations

import json
import time
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
    TextColumnOption,
    expand_home,
    load_classifier,
    long_text_options,
)
from fastsentiment.errors import InputError


@app.command()
def evaluate(
    data: Path = typer.Argument(
        Path("../shared/data/sst2/dev.tsv"), help="Labelled .tsv/.csv/.jsonl/.parquet file.", callback=expand_home
    ),
    text_column: TextColumnOption = None,
    label_column: str = typer.Option(
        "label", "--label-column", help="The column of the labels: the model's label names (any case) or class ids."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
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
    """Accuracy on a labelled file whose labels are the model's label names or class ids."""
    from dataclasses import asdict

    from fastsentiment.jobs.predict import warn_truncated_rows
    from fastsentiment.jobs.rows import is_stream
    from fastsentiment.tokenization import Truncations
    from fastsentiment.train.data import read_labelled

    reading = long_text_options(long_text, stride, aggregate)
    if not data.is_file():  # before the model loads (a first load may export it)
        if is_stream(data):  # `<(zcat dev.tsv.gz)`: no extension to read its table by
            raise InputError(
                f"{data} is a pipe or stdin: evaluate reads a labelled file (.csv, .tsv, .jsonl, .parquet)"
            )
        raise InputError(
            f"{data} is a folder; name a labelled file" if data.is_dir() else f"input file not found: {data}"
        )
    clf = load_classifier(model, backend, device, precision, batch_size, max_length, labels=labels)
    examples, _ = read_labelled(data, text_column=text_column, label_column=label_column, label_names=clf.labels)
    names = [f"line {line}" for line in examples.lines]  # what a truncation warning or refusal calls a text
    cuts = Truncations()
    started = time.perf_counter()
    predicted = clf.logits(examples.texts, names=names, truncations=cuts, **asdict(reading)).argmax(axis=1)
    seconds = time.perf_counter() - started
    if cuts.count > cuts.named:  # fewer were each named already
        warn_truncated_rows(cuts.count, clf.encoder)
    correct = int((predicted == examples.labels).sum())
    result = {
        "data": str(data),
        "model": str(clf.model.path),
        "backend": clf.backend.spec.name,
        "precision": clf.backend.precision,
        "long_text": reading.long_text,
        "examples": len(examples),
        "truncated": cuts.count,
        "correct": correct,
        "accuracy": correct / len(examples),
        "seconds": round(seconds, 3),
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"accuracy {result['accuracy']:.2%} ({correct}/{len(examples)}) on {data} in {seconds:.2f} s")
