"""`fastsentiment classify`: texts from arguments, stdin or a file."""

from __future__ import annotations

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
        None, "--file", "-f", help="A .txt (one text per line), .csv, .tsv or .jsonl file."
    ),
    column: str | None = typer.Option(
        None, "--column", help="Text column of a .csv/.tsv/.jsonl file [default: sentence, else text]."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write results to this .csv, .tsv or .jsonl file instead of stdout."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input."),
    model: ModelOption = None,
    backend: BackendOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    batch_size: BatchSizeOption = 32,
    max_length: MaxLengthOption = None,
) -> None:
    """Classify texts: one line per input with label, confidence and text."""
    from fastsentiment.classifier import check_texts
    from fastsentiment.filemode import classify_rows, classify_stream, open_sink
    from fastsentiment.tables import Row

    if texts and file:
        raise InputError("give texts as arguments or --file, not both")
    if texts:
        check_texts(texts)  # fail before paying for the model load
    clf = load_classifier(model, backend, device, precision, batch_size, max_length)
    if texts:
        rows = [Row(line=number, fields={"text": text}, text=text) for number, text in enumerate(texts, start=1)]
        with open_sink(out, as_json, clf.labels) as sink:
            failed = classify_rows(clf, rows, sink)
    else:
        source = file if file is not None else "-"
        failed = classify_stream(clf, source, column=column, out=out, as_json=as_json, progress=file is not None)
    if failed:
        raise InputError(f"{failed} input{'s' if failed > 1 else ''} could not be classified (see the errors above)")
