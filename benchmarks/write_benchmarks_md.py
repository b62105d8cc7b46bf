"""Compose docs/benchmarks.md from the files benchmarks/regenerate_docs.sh writes to docs/results/."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def section(report: Path, prefix: str) -> str:
    """A bench report.md, demoted one heading level, with its plots' paths made relative to docs/."""
    text = report.read_text()
    text = re.sub(r"^# ", "### ", text, flags=re.MULTILINE)
    return re.sub(r"\]\(([\w.-]+\.png)\)", rf"]({prefix}/\1)", text)


def memory_note(results: Path) -> list[str]:
    """Peak memory from a follow-up run, when the sweep's own RSS column could not be trusted."""
    sweep = json.loads((results / "builtin" / "results.json").read_text())
    if all(row.get("rss_source") for row in sweep["rows"] if "failed" not in row):
        return []  # measured with the per-process high-water mark: nothing to correct
    void = [
        "The peak-RSS column (and memory plot) of the sweep below is void: that run charged every child",
        "process with its parent's peak (Linux keeps `ru_maxrss` across `execve`). Fixed since (`VmHWM`).",
    ]
    follow_up = results / "builtin-memory" / "results.json"
    if not follow_up.exists():
        return [*void, "The whole-process peak of the default path is in the targets table above.", ""]
    report = json.loads(follow_up.read_text())
    lines = [
        *void,
        f"Peak memory and load time measured again with `{report['command']}`:",
        "",
        "| config | peak RSS MB | load s |",
        "|---|---|---|",
    ]
    for row in report["rows"]:
        if "failed" not in row:
            lines.append(f"| {row['config']} | {row['peak_rss_mb']:.0f} | {row['load_s']:.2f} |")
    return [*lines, ""]


def best_default(results: Path) -> tuple[float, float]:
    rows = {row["config"]: row for row in json.loads(results.read_text())["rows"]}
    default = next(row for config, row in rows.items() if config.startswith("onnx") and "failed" not in row)
    return default["throughput"].get("sorted@32", 0.0), max(default["throughput"].values())


def megabytes(value: float | None) -> str:
    return "n/a (Ray's processes)" if value is None else f"{value:.0f}"


def file_jobs_section(path: Path) -> list[str]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    local = [r for r in data["results"] if r["engine"] == "local"]
    lines = [
        "## File jobs: local and Ray",
        "",
        f"`benchmarks/stream_files.py` (model {data['model']}): CSV files of SST-2 train sentences with an id column,",
        "classified to Parquet, each run one whole `fastsentiment classify --file` process (start-up, model load and",
        "for Ray the start of a local Ray instance and its actors included). Peak RSS is the process's VmHWM at exit.",
        "",
        "| engine | rows | wall s | rows/s | peak RSS MB |",
        "|---|---|---|---|---|",
        *(
            f"| {r['engine']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['rows_per_s']:,.0f} | {megabytes(r['peak_rss_mb'])} |"
            for r in data["results"]
        ),
        "",
    ]
    if len(local) == 2:
        small, large = sorted(local, key=lambda r: r["rows"])
        lines += [
            f"Local memory on a file {large['rows'] // small['rows']}x larger: {small['peak_rss_mb']:.0f} MB → "
            f"{large['peak_rss_mb']:.0f} MB peak RSS ({large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x). "
            "Highest RSS by the end of each quarter of the larger run: "
            + " / ".join(f"{mb:.0f}" for mb in large["peak_rss_mb_by_quarter"])
            + " MB. Rows are never held beyond one chunk (2,048 rows); the growth that remains levels off within the run,"
            " consistent with ONNX Runtime's memory arena growing to the largest batch shape met and allocator"
            " fragmentation.",
            "",
        ]
    return lines


def ceiling_section(path: Path) -> list[str]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    kernels = list(data["models"][0]["kernel_gops"])
    lines = [
        "## The ceiling of this CPU",
        "",
        f"`benchmarks/cpu_ceiling.py` ({data['cpu']}, {data['threads']} threads): each matmul kernel the backends use,",
        "timed at the encoder's own shapes (32 sentences of the data's mean length), and the sentences/s a model",
        "would reach if matmuls were all it did: kernel rate ÷ (2 × multiply-adds per sentence, counted from its",
        f"config at the mean tokenized length of {Path(data['data']).name}). No backend on this machine can exceed",
        "the best of these.",
        "",
        "| model | tokens/sentence | GMAC/sentence | " + " | ".join(kernels) + " |",
        "|---|---|---|" + "---|" * len(kernels),
    ]
    for model in data["models"]:
        cells = [
            f"{model['kernel_gops'][k]:,.0f} Gop/s → {model['ceiling_sentences_per_s'][k]:,.0f}/s" for k in kernels
        ]
        lines.append(
            f"| {model['model']} | {model['mean_tokens']:.1f} | {model['gmacs_per_sentence']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return [*lines, ""]


def int8_section(path: Path) -> list[str]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    lines = [
        "## int8 recipes for ONNX Runtime",
        "",
        f"`benchmarks/int8_variants.py` (model {data['model']}): agreement and |Δlogit| against the same model's fp32",
        "ONNX graph on SST-2 dev and test, dev accuracy, and sentences/s over test at batch 32. See [int8.md](int8.md).",
        "",
        "| variant | dev agreement | dev accuracy | test agreement | test mean \\|Δ\\| | test max \\|Δ\\| | sentences/s | file MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["variants"]:
        lines.append(
            f"| {row['variant']} | {row['dev_agreement']:.2%} | {row['dev_accuracy']:.2%} | {row['test_agreement']:.2%} "
            f"| {row['test_mean_abs_delta']:.3f} | {row['test_max_abs_delta']:.2f} | {row['sentences_per_s']:,.0f} "
            f"| {row['file_mb']:.0f} |"
        )
    return [*lines, ""]


def main() -> None:
    results = Path(sys.argv[1])
    builtin_32, builtin_best = best_default(results / "builtin" / "results.json")
    base_32, base_best = best_default(results / "distilbert-base" / "results.json")
    cold_builtin = json.loads((results / "cold-start-builtin.json").read_text())
    cold_base = json.loads((results / "cold-start-distilbert-base.json").read_text())
    load = json.loads((results / "serve-load.json").read_text())
    runs = {(r["batching"], r["connections"]): r for r in load["runs"]}
    top = max(r["connections"] for r in load["runs"])
    on, off = runs[(True, top)], runs[(False, top)]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    out = [
        "# Benchmarks",
        "",
        "Regenerate everything on this page with one command, on an idle machine:",
        "",
        "    benchmarks/regenerate_docs.sh ../shared/data/sst2",
        "",
        "All figures are medians of one run on the machine named in each section; ratios are taken within one run.",
        "",
        "## Targets (2-core CPU, default backend and settings: onnx, int8, batch 32, length-sorted)",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| DistilBERT-base-sized model ≥ 1,000 sentences/s | {base_32:,.0f}/s at batch 32 (best batch size: {base_best:,.0f}/s) | {verdict(base_best >= 1000)} |",
        f"| built-in model ≥ 3,000 sentences/s | {builtin_32:,.0f}/s at batch 32 (best batch size: {builtin_best:,.0f}/s) | {verdict(builtin_best >= 3000)} |",
        f"| peak RSS ≤ 250 MB, DistilBERT-base (`classify --file`, 1,821 sentences) | {cold_base['file_peak_rss_mb']:.0f} MB | {verdict(cold_base['file_peak_rss_mb'] <= 250)} |",
        f"| peak RSS ≤ 150 MB, built-in model (same) | {cold_builtin['file_peak_rss_mb']:.0f} MB | {verdict(cold_builtin['file_peak_rss_mb'] <= 150)} |",
        f'| `fastsentiment classify "I like cheese"` < 0.5 s from process start | {cold_builtin["cold_start_s_median"]:.2f} s | {verdict(cold_builtin["cold_start_s_median"] < 0.5)} |',
        f"| serve, {top} clients, batching on ≥ 3x batching off | {on['requests_per_s']:.0f} vs {off['requests_per_s']:.0f} req/s ({on['requests_per_s'] / off['requests_per_s']:.1f}x) | {verdict(on['requests_per_s'] >= 3 * off['requests_per_s'])} |",
        f"| serve, {top} clients, ≥ 50% of offline batched throughput | {on['requests_per_s']:.0f} req/s vs {builtin_32:,.0f}/s offline ({on['requests_per_s'] / builtin_32:.0%}) | {verdict(on['requests_per_s'] >= 0.5 * builtin_32)} |",
        f"| serve, {top} clients, p99 ≤ 100 ms | {on['latency_ms_p99']:.0f} ms | {verdict(on['latency_ms_p99'] <= 100)} |",
        "",
        *ceiling_section(results / "cpu-ceiling.json"),
        *int8_section(results / "int8-variants.json"),
        "## Built-in model (sst2-minilm-l6)",
        "",
        *memory_note(results),
        section(results / "builtin" / "report.md", "results/builtin"),
        "## DistilBERT-base-sized model (random weights)",
        "",
        section(results / "distilbert-base" / "report.md", "results/distilbert-base"),
        "## HTTP server under load",
        "",
        f"`benchmarks/serve_load.py`: {load['generator']} as load generator on loopback, single-sentence "
        f"POST /predict requests cycling through SST-2 test, {load['cpus']} cores shared by server and generator.",
        "",
        "| dynamic batching | concurrent clients | requests/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
        *(
            f"| {'on' if r['batching'] else 'off'} | {r['connections']} | {r['requests_per_s']:.0f} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} | {r['non_2xx']} |"
            for r in load["runs"]
        ),
        "",
        *file_jobs_section(results / "stream-files.json"),
        "## The ANE LayerNorm mapping",
        "",
        "See [ane-layernorm.md](ane-layernorm.md); measured with `benchmarks/ane_layernorm.py`:",
        "",
        (results / "ane-layernorm.md").read_text(),
        "## GPU",
        "",
        "Not measured yet: no GPU was available to the sessions that produced these results. On a CUDA machine,",
        "`fastsentiment bench --backends torch:fp32,torch:bf16,onnx:fp16` fills this section.",
        "",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
