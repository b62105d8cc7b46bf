"""`fastsentiment explain`: where a backend actually runs the model's operations."""

from __future__ import annotations

import json

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import BackendOption, DeviceOption, ModelOption, PrecisionOption
from fastsentiment.errors import InputError


@app.command()
def explain(
    model: ModelOption = None,
    backend: BackendOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    workload: str = typer.Option(
        "throughput",
        "--workload",
        help="What `auto` is chosen for: throughput (files, stdin), latency (interactive), start (texts given as "
        "arguments) or serve (the server).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Report where the model's operations run: providers, devices, precision actually used."""
    from fastsentiment.backends import load_backend
    from fastsentiment.backends.base import WORKLOADS
    from fastsentiment.backends.registry import auto_choice, named_precision
    from fastsentiment.cli.info import AUTO_WORKLOADS
    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import load_tokenizer

    if workload not in WORKLOADS:
        raise InputError(f"--workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    model_dir = resolve_model(model)
    load_tokenizer(model_dir)  # a folder that cannot serve is refused as every command refuses it
    runtime = load_backend(model_dir, backend, device, precision, workload=workload)
    report = {"model": str(model_dir.path), "backend": runtime.spec.name, "device": runtime.device}
    name, precision = named_precision(backend, precision)
    if name == "auto":  # what it stood for here and why (with a precision too: "auto:bf16" said nothing)
        choice = auto_choice(model_dir, device, precision, workload)
        # `auto` differs by workload: `classify "a text"` may run another backend than a file job
        report["workload"] = f"{workload} ({AUTO_WORKLOADS[workload]})"
        report["auto"] = f"{choice.config} ({choice.reason})"
    report.update(runtime.explain())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for inner, count in value.items():
                typer.echo(f"  {inner}: {count}")
        else:
            typer.echo(f"{key}: {value}")
