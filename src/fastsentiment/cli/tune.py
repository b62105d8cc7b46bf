"""`fastsentiment tune`: measure which backend x precision `auto` should be for a model on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import DeviceOption, ModelOption, expand_home
from fastsentiment.errors import InputError

if TYPE_CHECKING:
    from fastsentiment.backends.auto import Calibration


@app.command()
def tune(
    model: ModelOption = None,
    device: DeviceOption = "auto",
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="A sample of your own texts (.txt/.csv/.tsv/.jsonl; labels used when present) "
        "\\[default: the project's built-in English sentences].",
        callback=expand_home,
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="The calibration file's text column \\[default: 'sentence' or 'text']."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Measure with this many compute threads, for runs capped to them (`classify --threads`, Ray actors) "
        "\\[default: $FASTSENTIMENT_THREADS, else every usable CPU].",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the decision and its table as JSON."),
) -> None:
    """Measure every backend x precision that runs here and cache what `--backend auto` resolves to."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fastsentiment.backends.auto import (
        DECIDED_WORKLOADS,
        MIN_AGREEMENT,
        Calibration,
        check_decision_can_be_kept,
        decision_for,
        decision_path,
    )
    from fastsentiment.backends.auto import tune as measure
    from fastsentiment.backends.registry import check_device
    from fastsentiment.models import resolve_model

    device = check_device(device)  # cpu:0 is the CPU: its decision's file is the CPU's
    model_dir = resolve_model(model)
    if text_column is not None and calibration is None:
        raise InputError("--text-column names a column of the --calibration file")
    sample = Calibration.from_file(calibration, model_dir.labels, text_column) if calibration else Calibration.builtin()
    check_decision_can_be_kept(model_dir, device, threads)
    console = Console(stderr=True)
    with console.status("measuring") as status:
        decision = measure(model_dir, device, sample, progress=lambda message: status.update(message), threads=threads)
    if as_json:
        typer.echo(json.dumps(decision, indent=2))
        return
    chosen = workloads_won(decision)
    table = Table(
        "backend:precision", "load s", "sentences/s, shorter half", "sentences/s, longer half", "score",
        "p50 ms (batch 1)", "p50 ms, one stream (a server's lone text)", "agreement", "accuracy", "auto",
        title=f"{escape(model_dir.path.name)} on this machine, {sample_size(decision, sample)} (batch 32; "
        "score: geometric mean of the two halves' rates)",
    )  # fmt: skip
    for row in decision["table"]:
        if row["failed"]:
            # escaped: a pip hint's [onnx] is rich markup, and would vanish from the reason
            table.add_row(row["config"], "", "", "", "", "", "", "", "", f"failed: {escape(row['failed'])}")
            continue
        verdict = chosen.get(row["config"], "") if row["faithful"] else (
            f"below the bar (< {MIN_AGREEMENT:.1%} agreement or accuracy lost)"
        )  # fmt: skip
        table.add_row(
            row["config"],
            f"{row['load_s']:.2f}",
            f"{row['short_sentences_per_s']:,.0f}",
            f"{row['long_sentences_per_s']:,.0f}",
            f"{row['sentences_per_s']:,.0f}",
            f"{row['latency_ms']:.2f}",
            "" if row.get("stream_latency_ms") is None else f"{row['stream_latency_ms']:.2f}",
            f"{row['agreement']:.2%}",
            "" if row["accuracy"] is None else f"{row['accuracy']:.2%}",
            verdict,
        )
    Console(width=200).print(table)
    # Whole lines, not cut at 80 columns where stderr is a log file, and no markup read in a path's brackets.
    for workload in DECIDED_WORKLOADS:
        if (chosen_path := decision_for(decision, workload)) is not None:
            console.print(f"auto for {workload}: {chosen_path['why']}", markup=False, soft_wrap=True)
    console.print(f"cached in {decision_path(model_dir, device, threads)}", markup=False, soft_wrap=True)


def workloads_won(decision: dict) -> dict[str, str]:
    """backend:precision -> the workloads `auto` chose it for ("throughput, latency, serve" where it won all)."""
    from fastsentiment.backends.auto import DECIDED_WORKLOADS, decision_for

    won: dict[str, list[str]] = {}
    for workload in DECIDED_WORKLOADS:
        if (chosen := decision_for(decision, workload)) is not None:
            won.setdefault(f"{chosen['backend']}:{chosen['precision']}", []).append(workload)
    return {config: ", ".join(workloads) for config, workloads in won.items()}


def sample_size(decision: dict, sample: Calibration) -> str:
    """The calibration texts measured on, and of how many rows where a longer file was sampled."""
    if sample.drawn_from is None:
        return f"{decision['sample']} calibration texts"
    return f"{decision['sample']} of {sample.drawn_from:,} rows of the calibration file, evenly spaced"
