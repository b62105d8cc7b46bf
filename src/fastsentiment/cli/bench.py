"""`fastsentiment bench` and `fastsentiment compare`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from fastsentiment.cli import app
from fastsentiment.cli.options import ModelOption

DEFAULT_DATA = "../shared/data/sst2"


@app.command()
def bench(
    model: ModelOption = None,
    backends: str | None = typer.Option(
        None,
        "--backends",
        help="backend[:precision],… (default: every backend that runs here, the reference and the pipeline rows).",
    ),
    data: str = typer.Option(
        DEFAULT_DATA,
        "--data",
        help="SST-2-style directory (dev.tsv, test.tsv), a .tsv/.csv/.jsonl/.parquet file, or glue/sst2.",
    ),
    text_column: str = typer.Option("sentence", "--text-column"),
    label_column: str = typer.Option("label", "--label-column"),
    batch_sizes: str = typer.Option("1,8,32,128", "--batch-sizes"),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Runs per configuration; medians are reported."),
    quick: bool = typer.Option(False, "--quick", help="A subset that finishes in about a minute."),
    out: Path = typer.Option(
        Path("bench-results"), "--out", help="Directory for report.md, results.json/.csv and plots."
    ),
    timeout: float = typer.Option(
        1800, "--timeout", help="Seconds one configuration may take before it is reported as failed."
    ),
) -> None:
    """Measure backends side by side: load time, latency, throughput, memory, accuracy, agreement."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fastsentiment.bench.data import load_bench_data
    from fastsentiment.bench.measure import Spec
    from fastsentiment.bench.report import machine, print_table, write_outputs
    from fastsentiment.bench.run import (
        REFERENCE,
        add_agreement,
        check_config,
        default_configs,
        prepare_config,
        run_config,
        summarise,
    )
    from fastsentiment.errors import InputError
    from fastsentiment.models import resolve_model

    model_dir = resolve_model(model)
    configs = [c.strip() for c in backends.split(",") if c.strip()] if backends else default_configs()
    if quick and not backends:
        configs = [c for c in configs if c != "pipeline:32"]
    if REFERENCE not in configs and backends is None:
        configs.insert(0, REFERENCE)
    for config in configs:
        check_config(config)
    try:
        sizes = sorted({int(size) for size in batch_sizes.split(",")})
    except ValueError:
        raise InputError(f"--batch-sizes takes comma-separated integers, got {batch_sizes!r}") from None
    bench_data = load_bench_data(data, text_column, label_column, model_dir.labels)  # fails before any run
    spec = dict(
        model=str(model_dir.path),
        data=data,
        text_column=text_column,
        label_column=label_column,
        labels=model_dir.labels,
        batch_sizes=sizes,
    )
    if quick:
        spec.update(batch_sizes=[1, 32], speed_limit=128, labelled_limit=100, latency_samples=30)
    console = Console(stderr=True)
    rows = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("benchmark", total=len(configs) * repeat)
        for config in configs:
            runs = []
            progress.update(task, description=f"{config}: preparing (exports are cached, not timed)")
            try:
                prepare_config(config, model_dir)
            except Exception as error:  # reported in its row, like any other failure of this configuration
                rows.append({"config": config, "failed": f"prepare: {str(error).splitlines()[0]}"})
                progress.advance(task, repeat)
                continue
            for attempt in range(repeat):
                progress.update(task, description=f"{config} (run {attempt + 1}/{repeat})")
                runs.append(run_config(Spec(config=config, **spec), timeout))
                progress.advance(task)
            rows.append(summarise(runs))
    add_agreement(rows)
    labelled = bench_data.labelled.texts if bench_data.labelled else []
    report = {
        "model": str(model_dir.path),
        "model_name": model_dir.path.name,
        "model_hash": model_dir.content_hash,
        "data": data,
        "labelled_sentences": min(len(labelled), spec.get("labelled_limit") or len(labelled)),
        "speed_sentences": min(len(bench_data.speed.texts), spec.get("speed_limit") or len(bench_data.speed.texts)),
        "repeats": repeat,
        "command": "fastsentiment " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        "machine": machine(),
        "rows": rows,
    }
    stdout = Console()
    print_table(rows, stdout if stdout.is_terminal else Console(width=220))
    for path in write_outputs(report, out):
        console.print(f"wrote {path}")


@app.command()
def compare(
    a: str = typer.Argument(..., help="backend[:precision], e.g. onnx:int8"),
    b: str = typer.Argument(..., help="backend[:precision], e.g. torch:fp32"),
    model: ModelOption = None,
    model_b: str | None = typer.Option(None, "--model-b", help="A different model for B (default: the same)."),
    data: str = typer.Option(DEFAULT_DATA, "--data"),
    text_column: str = typer.Option("sentence", "--text-column"),
    show: int = typer.Option(10, "--show", help="Disagreements to list, worst first."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Where two backends (or models) disagree: agreement, |Δlogit|, and the sentences, worst first."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from fastsentiment import Classifier
    from fastsentiment.bench.data import load_bench_data
    from fastsentiment.bench.run import check_config
    from fastsentiment.errors import InputError

    for config in (a, b):
        check_config(config)
        if config.startswith("pipeline"):
            raise InputError("compare takes backends; the pipeline reference is torch:fp32 here")
    first = Classifier.load(model, backend=a.split(":")[0], precision=a.partition(":")[2] or None)
    second = Classifier.load(model_b or model, backend=b.split(":")[0], precision=b.partition(":")[2] or None)
    if first.labels != second.labels:
        raise InputError(f"the models' labels differ: {first.labels} vs {second.labels}")
    split = load_bench_data(data, text_column, "label", first.labels)
    texts = (split.labelled or split.speed).texts
    left, right = first.logits(texts), second.logits(texts)
    left_p, right_p = first.scores(left), second.scores(right)
    left_y, right_y = left.argmax(1), right.argmax(1)
    delta = np.abs(left - right)
    disagree = np.flatnonzero(left_y != right_y)
    worst = disagree[np.argsort(-(left_p.max(1) + right_p.max(1))[disagree], kind="stable")][:show]
    names = first.labels
    result = {
        "a": a,
        "b": b,
        "model_a": str(first.model.path),
        "model_b": str(second.model.path),
        "sentences": len(texts),
        "agreement": float((left_y == right_y).mean()),
        "max_abs_logit_delta": float(delta.max()),
        "mean_abs_logit_delta": float(delta.mean()),
        "disagreements": [
            {
                "text": texts[i],
                "a": names[left_y[i]],
                "a_score": float(left_p[i].max()),
                "b": names[right_y[i]],
                "b_score": float(right_p[i].max()),
                "a_logits": left[i].tolist(),
                "b_logits": right[i].tolist(),
            }
            for i in worst
        ],
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    console = Console()
    console.print(
        f"{a} vs {b} on {len(texts)} sentences of {data}: agreement {result['agreement']:.2%} "
        f"({len(disagree)} differ), max |Δlogit| {result['max_abs_logit_delta']:.2e}, "
        f"mean |Δlogit| {result['mean_abs_logit_delta']:.2e}"
    )
    if result["disagreements"]:
        table = Table("text", f"{a}", f"{b}", "logits A", "logits B", title="Disagreements, most confident first")
        for row in result["disagreements"]:
            table.add_row(
                row["text"],
                f"{row['a']} {row['a_score']:.2%}",
                f"{row['b']} {row['b_score']:.2%}",
                str([round(v, 2) for v in row["a_logits"]]),
                str([round(v, 2) for v in row["b_logits"]]),
            )
        console.print(table)
