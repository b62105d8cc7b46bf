"""`fastsentiment evaluate`: accuracy of a model on a labelled file (SST-2 dev by default)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from fastsentiment.bench.data import GLUE_SST2, SST2_FOLDER, needs_datasets
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
from fastsentiment.jobs.rows import is_stream

SST2_DEV = f"{SST2_FOLDER}/dev.tsv"


@app.command()
def evaluate(
    data: str | None = typer.Argument(
        None,
        help=f"Labelled .tsv/.csv/.jsonl/.parquet file, or {GLUE_SST2} (with `datasets`) \\[default: "
        f"{SST2_DEV}, where it is].",
        show_default=False,
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

    import numpy as np

    from fastsentiment.bench.data import from_datasets
    from fastsentiment.jobs.predict import warn_truncated_rows
    from fastsentiment.tokenization import Truncations
    from fastsentiment.train.data import LabelledData, read_labelled

    reading = long_text_options(long_text, stride, aggregate)
    if data == GLUE_SST2 and (text_column is not None or label_column != "label"):
        raise InputError(f"{GLUE_SST2} has its own columns: --text-column and --label-column name a file's")
    path = _checked_data(data)  # before the model loads (a first load may export it)
    clf = load_classifier(model, backend, device, precision, batch_size, max_length, labels=labels)
    if path is None:
        validation = from_datasets("evaluate", clf.labels).labelled
        examples = LabelledData(validation.texts, np.array(validation.labels))
        names = [f"{GLUE_SST2} validation row {row}" for row in range(1, len(examples) + 1)]
    else:
        examples, _ = read_labelled(path, text_column=text_column, label_column=label_column, label_names=clf.labels)
        names = [f"line {line}" for line in examples.lines]  # what a truncation warning or refusal calls a text
    cuts = Truncations()
    started = time.perf_counter()
    predicted = clf.logits(examples.texts, names=names, truncations=cuts, **asdict(reading)).argmax(axis=1)
    seconds = time.perf_counter() - started
    if cuts.count > cuts.named:  # fewer were each named already
        warn_truncated_rows(cuts.count, clf.encoder)
    correct = int((predicted == examples.labels).sum())
    result = {
        "data": str(path or GLUE_SST2),
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
        typer.echo(
            f"accuracy {result['accuracy']:.2%} ({correct}/{len(examples)}) on {result['data']} in {seconds:.2f} s"
        )


def _checked_data(data: str | None) -> Path | None:
    """The labelled file `evaluate` reads (None: SST-2's validation split from the hub), refused in one line where
    it is no file: before the model loads, as a first load may export it."""
    if data == GLUE_SST2 and not Path(data).exists():
        needs_datasets("evaluate")
        return None
    path = expand_home(Path(SST2_DEV if data is None else data))
    if data is None and not path.is_file():  # run outside a checkout beside the shared data
        raise InputError(
            f"name a labelled file to evaluate on: the default, SST-2 dev at {SST2_DEV}, is not there "
            f"(or {GLUE_SST2}, with `datasets` and internet access)"
        )
    if not path.is_file():
        if is_stream(path):  # `<(zcat dev.tsv.gz)`: no extension to read its table by
            raise InputError(
                f"{path} is a pipe or stdin: evaluate reads a labelled file (.csv, .tsv, .jsonl, .parquet)"
            )
        raise InputError(
            f"{path} is a folder; name a labelled file" if path.is_dir() else f"input file not found: {path}"
        )
    return path
