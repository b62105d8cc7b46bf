"""Benchmark results as a terminal table, Markdown, JSON, CSV and PNG plots."""

from __future__ import annotations

import csv
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastsentiment.backends.base import cpu_flags, inference_threads, usable_cpus
from fastsentiment.outputs import strict_json

LIBRARIES = ("fastsentiment", "numpy", "tokenizers", "onnxruntime", "openvino", "torch", "transformers", "coremltools")
# Those that decide a path: bf16 natively (avx512_bf16, amx_bf16), and the onnx int8-dynamic variant (any VNNI or AMX
# int8: export.onnx.int8_dynamic_variant).
CPU_FLAGS = (
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


MEMORY_MEANING = (
    "the process's high-water mark (VmHWM) once the model that ran the batches has run them and the labelled texts; "
    "a second model loaded afterwards for batch 1 (auto's latency decision, OpenVINO's one-call model) is not counted"
)


def machine() -> dict:
    cpu, flags = platform.processor(), cpu_flags()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        gpu = query.stdout.strip() or None
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": usable_cpus(),
        # what every row computed with (its process inherits $FASTSENTIMENT_THREADS), and `auto`'s decision is keyed by
        "threads": inference_threads(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in flags],
        "gpu": gpu,
        "python": platform.python_version(),
        "libraries": versions,
    }


def headline(row: dict, reference_rate: float | None) -> dict:
    """The numbers one row of the summary table shows."""
    if "failed" in row:
        return {"config": row["config"], "status": f"failed: {row['failed']}"}
    throughput = row["throughput"]
    # A pipeline row has one rate, at its own batch: shown only where that is 32 (a batch-1 rate in a column of rates
    # at 32 read as the pipeline at 32); any other row shows sorted@32, or nothing where 32 was not measured.
    pipeline = row["config"].split(":")[0] == "pipeline"
    sorted_32 = throughput.get("pipeline@32") if pipeline else throughput.get("sorted@32")
    best = max(row["throughput"].values())
    config = row["config"]
    if config.partition(":")[0] == "auto":  # auto:int8 too: which backend it stood for
        batched = f"{row['backend']}:{row['precision']}"
        config = f"{config} = {batched}"
        if row.get("latency_config", batched) != batched:
            config += f" (batch 1: {row['latency_config']})"
    return {
        "config": config,
        "status": _ok(row),
        "load s": row["load_s"],
        "p50 ms": row["latency_ms"][50],
        "p90 ms": row["latency_ms"][90],
        "p99 ms": row["latency_ms"][99],
        "sent/s @32": sorted_32,
        "best sent/s": best,
        "x pipeline": sorted_32 / reference_rate if reference_rate and sorted_32 else None,
        "peak RSS MB": row["peak_rss_mb"],
        "accuracy": row.get("accuracy"),
        "agreement": row.get("agreement"),
        "max |Δlogit|": row.get("max_abs_logit_delta"),
    }


def reference_rate(rows: list[dict]) -> float | None:
    """The transformers.pipeline rate at batch 32 that every row's sorted@32 is a multiple of; None where no pipeline
    ran at 32 (a ratio of batch 32 to the pipeline's batch 1 would credit batching to the backend)."""
    for row in rows:
        if "failed" not in row and "pipeline@32" in row.get("throughput", {}):
            return row["throughput"]["pipeline@32"]
    return None


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        if value < 1 and value > 0:
            return f"{value:.4f}" if value >= 0.01 else f"{value:.1e}"
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def _ok(row: dict) -> str:
    """A measured row's status: "ok", or which of its runs failed, where its medians are of fewer runs than asked."""
    failed = row.get("failed_runs", [])
    if not failed:
        return "ok"
    return f"ok in {row['repeats']} of {row['repeats'] + len(failed)} runs (failed: {'; '.join(failed)})"


def print_table(rows: list[dict], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    lines = [headline(row, reference_rate(rows)) for row in rows]
    columns = list(next((line for line in lines if line["status"].startswith("ok")), lines[0]))
    table = Table(*columns, title="fastsentiment bench")
    for line in lines:  # cells are text: a failure's "[/b]" was read as markup (a MarkupError's traceback)
        table.add_row(*(escape(_fmt(line.get(column))) for column in columns))
    console.print(table)


def write_outputs(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = report["rows"]
    lean = [{k: v for k, v in row.items() if k not in ("labelled_logits", "latency_samples")} for row in rows]
    # Strict JSON: a figure not measured (the pipeline's tokenization time) is null, not NaN, which JSON lacks
    (out / "results.json").write_text(strict_json({**report, "rows": lean}, indent=2) + "\n")
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
                "config",
                "backend",  # what `auto` resolved to; the config's own backend otherwise
                "precision",
                "latency_config",  # what ran the single texts: for `auto`, its latency decision, which may differ
                "strategy",
                "batch_size",
                "sentences_per_s",
                "load_s",
                "latency_ms_p50",
                "latency_ms_p99",
                "peak_rss_mb",
                "accuracy",
                "agreement",
                "max_abs_logit_delta",
                "failed",
                "failed_runs",  # of a measured row's repeats, those that failed: its figures are of the others
            ]
        )
        for row in rows:
            if "failed" in row:
                writer.writerow([row["config"], *[""] * 13, row["failed"], ""])
                continue
            for key, rate in row["throughput"].items():
                strategy, size = key.split("@")
                writer.writerow(
                    [
                        row["config"],
                        row["backend"],
                        row["precision"],
                        row.get("latency_config", f"{row['backend']}:{row['precision']}"),
                        strategy,
                        size,
                        f"{rate:.2f}",
                        f"{row['load_s']:.4f}",
                        f"{row['latency_ms'][50]:.3f}",
                        f"{row['latency_ms'][99]:.3f}",
                        f"{row['peak_rss_mb']:.1f}",
                        row.get("accuracy", ""),
                        row.get("agreement", ""),
                        row.get("max_abs_logit_delta", ""),
                        "",
                        "; ".join(row.get("failed_runs", [])),
                    ]
                )
    plots = _plots(rows, out)
    (out / "report.md").write_text(markdown(report, plots))
    return [out / "results.json", out / "results.csv", out / "report.md", *plots]


def device_lines(report: dict) -> list[str]:
    """Where the rows ran when it was asked (`--device`), with PyTorch's peak GPU memory per row that used CUDA."""
    device = report.get("device", "auto")
    if device == "auto":
        return []
    held = [f"{row['config']} {row['peak_gpu_mb']:,.0f} MB" for row in report["rows"] if "peak_gpu_mb" in row]
    return [f"- device: {device}" + (f"; PyTorch's peak GPU memory: {', '.join(held)}" if held else "")]


def markdown(report: dict, plots: list[Path]) -> str:
    rows = report["rows"]
    m = report["machine"]
    lines = [
        f"# fastsentiment bench: {report['model_name']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['threads']} compute threads, flags: {', '.join(m['cpu_flags']) or 'none'}, GPU: {m['gpu'] or 'none'}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in m['libraries'].items())}; Python {m['python']}",
        f"- model: `{report['model']}` (content sha256 `{report['model_hash'][:16]}…`)",
        f"- data: {report['data']} — "
        + (
            f"accuracy on {report['labelled_sentences']} labelled sentences, "
            if report["labelled_sentences"]
            else "no labels (speed only), "
        )
        + f"speed on {report['speed_sentences']} sentences; repeats: {report['repeats']} (medians)",
        f"- command: `{report['command']}`",
        *device_lines(report),
        "",
        "| " + " | ".join(column.replace("|", "\\|") for column in headline_columns()) + " |",  # cells of its own
        "|" + "---|" * len(headline_columns()),
    ]
    rate = reference_rate(rows)
    for row in rows:
        line = headline(row, rate)
        lines.append(
            "| " + " | ".join(_fmt(line.get(c)) if c != "status" else line["status"] for c in headline_columns()) + " |"
        )
    lines += ["", "Throughput (sentences/s) by padding strategy and batch size:", ""]
    keys = sorted({k for r in rows if "failed" not in r for k in r["throughput"]}, key=_order)
    lines += ["| config | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row in rows:
        if "failed" not in row:
            lines.append(f"| {row['config']} | " + " | ".join(_fmt(row["throughput"].get(k)) for k in keys) + " |")
    lines += [
        "",
        "fixed: every text cut and padded to 128 tokens (what a fixed-shape CoreML model needs); dynamic: the texts "
        "whole up to the model's max_length, each batch padded to its longest, input order; sorted: the same, in "
        "length-sorted batches. Rates count the model calls on texts tokenized and padded before the clock starts "
        "(tokenize_s in results.json); a pipeline row's rate includes its tokenization, as transformers.pipeline runs. "
        "x pipeline: sent/s @32 over transformers.pipeline's rate at batch 32 (pipeline:32). "
        f"peak RSS: {MEMORY_MEANING}.",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def headline_columns() -> list[str]:
    return [
        "config",
        "status",
        "load s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "sent/s @32",
        "best sent/s",
        "x pipeline",
        "peak RSS MB",
        "accuracy",
        "agreement",
        "max |Δlogit|",
    ]


def _order(key: str):
    strategy, size = key.split("@")
    return (strategy, int(size))


def _plots(rows: list[dict], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    ok = [row for row in rows if "failed" not in row]
    if not ok:  # nothing to draw (empty plots, and matplotlib's warning about an empty legend on stderr)
        return []
    paths = []

    figure, axis = plt.subplots(figsize=(8, 5))
    for row in ok:
        points = sorted(
            (int(k.split("@")[1]), v) for k, v in row["throughput"].items() if k.startswith(("sorted", "pipeline"))
        )
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=row["config"])
    axis.set(xscale="log", xlabel="batch size", ylabel="sentences / s", title="Throughput (length-sorted batches)")
    axis.legend(fontsize=8)
    paths.append(_save(figure, out / "throughput.png"))

    figure, axis = plt.subplots(figsize=(8, 5))
    axis.boxplot([row["latency_samples"] for row in ok], showfliers=False)
    axis.set_xticks(range(1, len(ok) + 1), [row["config"] for row in ok], rotation=30, ha="right", fontsize=8)
    axis.set(yscale="log", ylabel="ms per sentence", title="Batch-1 latency (one sentence at a time)")
    paths.append(_save(figure, out / "latency.png"))

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    names = [row["config"] for row in ok]
    left.barh(names, [row["peak_rss_mb"] for row in ok])
    left.set(xlabel="MB", title="Peak RSS with the throughput model")
    right.barh(names, [row["load_s"] for row in ok])
    right.set(xlabel="s", title="Model load time")
    paths.append(_save(figure, out / "memory_load.png"))
    return paths


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
