"""`fastsentiment bench` and `fastsentiment compare`: options in, bench/ does the work, tables out."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from fastsentiment.bench.data import SST2_FOLDER
from fastsentiment.cli.app import app
from fastsentiment.cli.options import DeviceOption, ModelOption, TextColumnOption, expand_home


@app.command()
def bench(
    model: ModelOption = None,
    device: DeviceOption = "auto",
    backends: str | None = typer.Option(
        None,
        "--backends",
        help="backend[:precision],… (default: every backend that runs here, the reference and the pipeline rows).",
    ),
    data: str = typer.Option(
        SST2_FOLDER,
        "--data",
        help="SST-2-style directory (dev.tsv, test.tsv), a .tsv/.csv/.jsonl/.parquet file, or glue/sst2.",
    ),
    text_column: TextColumnOption = None,
    label_column: str | None = typer.Option(
        None, "--label-column", help="Label column \\[default: 'label' where there is one; without labels: speed only]."
    ),
    batch_sizes: str | None = typer.Option(
        None, "--batch-sizes", help="Comma-separated \\[default: 1,8,32,128; with --quick: 1,32]."
    ),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Runs per configuration; medians are reported."),
    quick: bool = typer.Option(False, "--quick", help="A subset that finishes in about a minute."),
    out: Path = typer.Option(
        Path("bench-results"),
        "--out",
        help="Directory for report.md, results.json/.csv and plots.",
        callback=expand_home,
    ),
    timeout: float = typer.Option(
        1800, "--timeout", min=0.001, help="Seconds one configuration may take before it is reported as failed."
    ),
    peers: str | None = typer.Option(
        None,
        "--peers",
        help="Python interpreter of the peers' environment (scripts/build_peers_venv.sh): adds optimum-intel "
        "OpenVINO, optimum ONNX Runtime int8 and CTranslate2 int8 rows, run on the same batches and threads.",
        callback=expand_home,
    ),
) -> None:
    """Measure backends side by side: load time, latency, throughput, memory, accuracy, agreement."""
    from fastsentiment.outputs import check_output_place

    check_output_place(out, folder=True)  # before the runs, not after them with the results lost
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fastsentiment.bench.report import print_table, write_outputs
    from fastsentiment.bench.suite import BenchRequest, run_bench, run_count

    request = BenchRequest(
        model=model,
        # given but empty (" , ") is an error in run_bench, not the whole default suite
        configs=None if backends is None else [c.strip() for c in backends.split(",") if c.strip()],
        data=data,
        text_column=text_column,
        label_column=label_column,
        batch_sizes=batch_sizes,
        repeat=repeat,
        quick=quick,
        timeout=timeout,
        peers_python=peers,
        device=device,
        command="fastsentiment " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
    )
    console = Console(stderr=True)
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console)
    tasks = []

    def follow(message: str, done: int) -> None:
        # The bar starts with the first run, so that a bench refused before it leaves its error alone on stderr.
        if not tasks:
            bar.start()
            tasks.append(bar.add_task("benchmark", total=run_count(request)))
        bar.update(tasks[0], description=message, completed=done)

    try:
        report = run_bench(request, follow)
    finally:
        if tasks:  # a Progress never started still writes a line when stopped
            bar.stop()
    stdout = Console()
    print_table(report["rows"], stdout if stdout.is_terminal else Console(width=220))
    for path in write_outputs(report, out):
        # a folder may be named "[/x]"; one line per file, however long its path
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    if all("failed" in row for row in report["rows"]):
        console.print("error: every configuration failed (the table says why)", style="bold red", highlight=False)
        raise SystemExit(1)


@app.command()
def compare(
    a: str = typer.Argument(..., help="backend[:precision], e.g. onnx:int8"),
    b: str = typer.Argument(..., help="backend[:precision], e.g. torch:fp32"),
    model: ModelOption = None,
    model_b: str | None = typer.Option(None, "--model-b", help="A different model for B (default: the same)."),
    device: DeviceOption = "auto",
    device_b: str | None = typer.Option(
        None, "--device-b", help="A different device for B, e.g. cpu against cuda (default: the same)."
    ),
    data: str = typer.Option(
        SST2_FOLDER,
        "--data",
        help="The texts compared on: a file of texts (labels not needed), a folder holding dev.tsv, or glue/sst2.",
    ),
    text_column: TextColumnOption = None,
    show: int = typer.Option(10, "--show", min=0, help="Disagreements to list, worst first."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Where two backends (or models) disagree: agreement, |Δlogit|, and the sentences, worst first."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fastsentiment.bench.compare import compare_configs
    from fastsentiment.outputs import one_line

    result = compare_configs(
        a,
        b,
        model=model,
        model_b=model_b,
        data=data,
        text_column=text_column,
        show=show,
        device=device,
        device_b=device_b,
    )
    if as_json:
        typer.echo(json.dumps(result))  # one line, as evaluate --json writes it
        return
    if result["device_a"] != result["device_b"]:  # one backend on two devices: say which side ran where
        a, b = f"{a} on {result['device_a']}", f"{b} on {result['device_b']}"
    console = Console()
    if not console.is_terminal:  # piped or redirected: rich would cut lines at 80 columns (as bench widens its table)
        console = Console(width=220)
    console.print(
        f"{a} vs {b} on {result['sentences']} sentences of {data}: agreement {result['agreement']:.2%} "
        f"({result['differ']} differ), max |Δlogit| {result['max_abs_logit_delta']:.2e}, "
        f"mean |Δlogit| {result['mean_abs_logit_delta']:.2e}",
        markup=False,  # a path may hold brackets
        soft_wrap=True,  # one line, for grep and scripts, however long the path
    )
    if result["disagreements"]:
        table = Table("text", f"{a}", f"{b}", "logits A", "logits B", title="Disagreements, most confident first")
        for row in result["disagreements"]:
            table.add_row(
                # a review's "[/b]" was read as markup (a MarkupError's traceback), its escape sequences acted on the
                # terminal and its line breaks split its row
                escape(one_line(row["text"])),
                f"{row['a']} {row['a_score']:.2%}",
                f"{row['b']} {row['b_score']:.2%}",
                str([round(v, 2) for v in row["a_logits"]]),
                str([round(v, 2) for v in row["b_logits"]]),
            )
        console.print(table)
