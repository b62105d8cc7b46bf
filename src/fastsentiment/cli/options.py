"""Options shared by every command that loads a model, and loading a Classifier from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fastsentiment.errors import InputError
from fastsentiment.labels import distinct_names


def expand_home(path: Path | str | list[Path] | None) -> Path | str | list[Path] | None:
    """A path option's `~` as the shell expands it where it can (not after `--out=`, nor in quotes): a folder named
    `~` made in the working one, the next `rm -rf ~` away from the home folder's end, or an input "not found"."""
    if isinstance(path, list):
        return [item.expanduser() for item in path]
    if isinstance(path, str):  # a program's name or path (--peers)
        return os.path.expanduser(path)
    return None if path is None else path.expanduser()


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Built-in model name, local model directory, or Hugging Face hub id. Default: the built-in model.",
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="Backend (see `fastsentiment backends`), or backend:precision (onnx:int8); auto picks the fastest "
        "that runs here.",
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option("--device", "-d", help="auto, cpu, cuda (cuda:N), gpu, mps or ane (see `fastsentiment backends`)."),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        "-p",
        help="fp32, bf16, int8, fp16; onnx also int8-dynamic, openvino int8-static (see `fastsentiment backends`; "
        "default: the backend's).",
    ),
]
BatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Texts per model call (default: 32, 256 on a CUDA GPU).")
]
MaxLengthOption = Annotated[
    int | None,
    typer.Option("--max-length", min=3, help="Truncate texts to this many tokens (default: the model's limit)."),
]


TextColumnOption = Annotated[
    str | None, typer.Option("--text-column", help="Text column \\[default: 'sentence', else 'text'].")
]
LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels", help="Class names in class-id order, comma-separated (for configs that say LABEL_0, LABEL_1...)."
    ),
]


def label_names(labels: str | None) -> tuple[str, ...] | None:
    """The --labels option as a tuple of names (None when not given)."""
    if labels is None:
        return None
    if not labels.strip():
        raise InputError("--labels needs the class names, comma-separated in class-id order")
    names = tuple(name.strip() for name in labels.split(","))
    if not distinct_names(names):
        raise InputError(f"--labels must be distinct, non-empty names; got {', '.join(names)}")
    return names


def load_classifier(
    model,
    backend,
    device,
    precision,
    batch_size,
    max_length,
    *,
    threads=None,
    workload="throughput",
    tune=False,
    labels: str | None = None,
):
    from fastsentiment import Classifier

    return Classifier.load(
        model=model,
        backend=backend,
        device=device,
        precision=precision,
        batch_size=batch_size,
        max_length=max_length,
        threads=threads,
        workload=workload,
        tune=tune,
        labels=label_names(labels),
    )


LongTextOption = Annotated[
    str,
    typer.Option(
        "--long-text",
        help="Texts longer than the model: truncate (with a warning), chunk (whole, as overlapping windows), or error.",
    ),
]
StrideOption = Annotated[
    int | None,
    typer.Option(
        "--stride",
        min=0,
        help="Tokens shared by consecutive windows with --long-text chunk "
        "\\[default: 32, or a quarter of the window's room where that is less].",
    ),
]
AggregateOption = Annotated[
    str | None,
    typer.Option(
        "--aggregate",
        help="How window scores combine: logit-mean (token-weighted logits), mean (token-weighted probabilities) or "
        "max (the most confident window) \\[default: logit-mean].",
    ),
]


def long_text_options(long_text: str, stride: int | None, aggregate: str | None):
    """The --long-text, --stride and --aggregate options as one value, checked before any model loads."""
    from fastsentiment.windows import LongText, check_options

    check_options(long_text, stride, aggregate, max_length=None)  # the stride's room: once the model is known
    return LongText(long_text, stride, aggregate)
