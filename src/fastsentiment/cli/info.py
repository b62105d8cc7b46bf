"""`fastsentiment models` and `fastsentiment backends`: what is installed and what can run here."""

from __future__ import annotations

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import ModelOption

AUTO_WORKLOADS = {
    "throughput": "files, stdin, bench, evaluate, the Python API",
    "latency": "interactive",
    "start": "texts given as arguments",
    "serve": "serve",
}


@app.command()
def models() -> None:
    """List the built-in models with their paths and labels."""
    from rich.console import Console
    from rich.table import Table

    from fastsentiment.errors import FastSentimentError
    from fastsentiment.models import BUILTIN_MODELS, DEFAULT_MODEL, load_model_dir

    table = Table("name", "labels", "path", "description")
    for name, builtin in BUILTIN_MODELS.items():
        try:
            labels = ", ".join(load_model_dir(builtin.path).labels)
        except FastSentimentError as error:
            labels = f"unavailable: {error}"
        marker = " (default)" if name == DEFAULT_MODEL else ""
        table.add_row(name + marker, labels, str(builtin.path), builtin.description)
    Console(width=200).print(table)


@app.command()
def backends(
    device: str = typer.Option("auto", "--device", "-d", help="Check availability for this device."),
    model: ModelOption = None,
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="What `auto` is for runs with this many compute threads (`classify --threads`, `tune --threads`) "
        "\\[default: $FASTSENTIMENT_THREADS, else every usable CPU].",
    ),
) -> None:
    """List every backend and whether it can run on this machine, and if not, why; and what `auto` is."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fastsentiment.backends import availability, backend_names, get_backend
    from fastsentiment.backends.registry import check_device
    from fastsentiment.models import resolve_model

    device = check_device(device)
    # Without --model the table answers for the default model, whose architecture every backend runs.
    model_dir = resolve_model(model)
    table = Table("backend", "runs here", "devices", "precisions (default first)", "extra", "why / why not")
    runnable = []
    for name in backend_names():
        spec = get_backend(name).spec
        status = availability(name, device, model_dir)
        if status.runnable:
            runnable.append(name)
        precisions = [spec.default_precision, *(p for p in spec.precisions if p != spec.default_precision)]
        table.add_row(
            name,
            "yes" if status.runnable else "no",
            ", ".join(spec.devices),
            ", ".join(precisions),
            spec.extra,
            escape(status.reason),  # its pip hint holds [extra], which rich would read as markup
        )
    console = Console(width=200)
    console.print(table)
    if not runnable:  # the table says why; `auto` has nothing to choose from
        console.print(f"auto: no backend runs on device {device!r} here", markup=False)
        return
    from fastsentiment.backends.auto import choose

    for workload, used_by in AUTO_WORKLOADS.items():
        choice = choose(model_dir, device, workload, threads=threads)  # a decision is measured per thread cap
        console.print(f"auto for {workload} ({used_by}): {choice.config} - {choice.reason}", markup=False)
