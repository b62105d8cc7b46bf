"""Compose docs/benchmarks.md from the files benchmarks/regenerate_docs.sh writes to docs/results/."""

from __future__ import annotations

import json
import re
import statistics
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


def long_documents_section(folder: Path) -> list[str]:
    """Each window size's run of benchmarks/long_documents.py: accuracy per long-text setting, and speed."""
    runs = sorted(folder.glob("window-*.json"), key=lambda path: json.loads(path.read_text())["window"])
    if not runs:
        return []
    lines = [
        "## Long documents",
        "",
        "`benchmarks/long_documents.py` on the documents of `scripts/build_long_docs.py` (SST-2 dev sentences: the first",
        "512 tokens alternate the labels, every later sentence carries the document's), classified truncated and as",
        "windows; short-sentence speed is SST-2 sentences (`--short`) on the same classifier in the same process.",
        "",
    ]
    for path in runs:
        data = json.loads(path.read_text())
        machine = data["machine"]
        speed = data["speed"]
        lines += [
            f"### Windows of {data['window']} tokens ({data['model']}, {data['backend']}; {machine['cpu']}, "
            f"{machine['cores']} cores: {', '.join(machine['cpu_flags'])})",
            "",
            f"{data['documents']} documents of {data['document_tokens_mean']:,.0f} tokens on average.",
            "",
            "| long text | stride | aggregate | accuracy |",
            "|---|---|---|---|",
            *(
                f"| {r['long_text']} | {r.get('stride', '–')} | {r.get('aggregate', '–')} | {r['accuracy']:.1%} |"
                for r in data["accuracy"]
            ),
            "",
            f"Chunked documents: {speed['chunk_tokens_per_s']:,.0f} of their tokens per second, "
            f"{speed['chunk_vs_short']:.2f}x the {speed['short_tokens_per_s']:,.0f} tokens/s of short sentences "
            "(the windows' overlap counts against them).",
            "",
        ]
    return lines


def notes_sections(folder: Path) -> list[str]:
    """Sections written by hand about one machine's session (what was measured there beyond these tables), kept
    as files so that regenerating this page keeps them; newest (the highest number) first."""
    notes = sorted(folder.glob("*.md"), key=lambda note: int(note.name.split("-")[0]), reverse=True)  # 12 before 9
    return [_numbered(note.read_text().rstrip() + "\n", int(note.name.split("-")[0])) for note in notes]


def _numbered(text: str, number: int) -> str:
    """A note's title with the number other sections cite it by ("note 16"); note 0, the targets' history, has none."""
    title, _, rest = text.partition("\n")
    return f"{title} [note {number}]\n{rest}" if number else text


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


KERNELS = {  # which of cpu_ceiling.py's matmul kernels a row's precision runs on
    "fp32": "fp32 (MLAS sgemm)",
    "int8": "int8 block-wise (MatMulNBits)",
    "int8-dynamic": "int8 per-tensor (u8s8 VNNI)",
    "int8-static": "int8 per-tensor (u8s8 VNNI)",
    "bf16": "bf16 (OpenVINO)",
}


def row_kernel(row: dict) -> str | None:
    if row["config"].startswith("peer:ctranslate2") or row["config"].startswith("peer:optimum-ort"):
        return KERNELS["int8-dynamic"]  # both quantise activations per tensor at run time
    if row["backend"] == "openvino" and row["precision"] == "int8":
        return KERNELS["bf16"]  # int8-compressed weights, bf16 compute
    return KERNELS.get(row["precision"])


def ceiling_share_section(bench: Path, ceiling: Path) -> list[str]:
    """Every row's best rate as a share of the arithmetic ceiling of its own kernel and of the machine's best."""
    if not (bench.is_file() and ceiling.is_file()):
        return []
    report = json.loads(bench.read_text())
    data = json.loads(ceiling.read_text())
    model = next((m for m in data["models"] if m["model"] == report["model_name"]), None)
    if model is None:
        return []
    ceilings = model["ceiling_sentences_per_s"]
    best_kernel = max(ceilings, key=ceilings.get)
    lines = [
        "Share of this CPU's ceiling (`benchmarks/cpu_ceiling.py`, same run): each row's best sentences/s over the",
        f"ceiling of the matmul kernel its precision runs on, and over the best kernel here ({best_kernel},",
        f"{ceilings[best_kernel]:,.0f} sentences/s).",
        "",
        "| config | best sent/s | kernel | share of its kernel's ceiling | share of the best ceiling |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "failed" in row:
            continue
        best = max(row["throughput"].values())
        kernel = row_kernel(row)
        own = f"{best / ceilings[kernel]:.0%}" if kernel in ceilings else "–"
        lines.append(
            f"| {row['config']} | {best:,.0f} | {kernel or '–'} | {own} | {best / ceilings[best_kernel]:.0%} |"
        )
    return [*lines, ""]


def auto_targets(results: Path, name: str, multiple: float, verdict) -> list[str]:
    """The measured-auto targets for one model's bench: auto against the best faithful row, batch 1, the pipeline
    and the peers, all from the same run."""
    path = results / name / "results.json"
    if not path.is_file():
        return []
    rows = [r for r in json.loads(path.read_text())["rows"] if "failed" not in r]
    auto = next((r for r in rows if r["config"] == "auto"), None)
    pipeline = next((r for r in rows if r["config"] == "pipeline:32"), None)
    if auto is None:
        return []
    faithful = [r for r in rows if r["config"] != "auto" and r.get("agreement", 0) >= 0.995
                and not r["config"].startswith("pipeline")]  # fmt: skip
    best = max(faithful, key=lambda r: max(r["throughput"].values()))
    fastest_single = min(faithful, key=lambda r: r["latency_ms"]["50"])
    rate = max(auto["throughput"].values())
    lines = [
        f"| {name}: `auto` ({auto['backend']}:{auto['precision']}) ≥ 95% of the best faithful row | {rate:,.0f}/s vs "
        f"{best['config']} {max(best['throughput'].values()):,.0f}/s "
        f"({rate / max(best['throughput'].values()):.0%}) | {verdict(rate >= 0.95 * max(best['throughput'].values()))} |",
        f"| {name}: `auto` batch-1 p50 ≤ 1.1x the best batch-1 row | {auto['latency_ms']['50']:.2f} ms vs "
        f"{fastest_single['config']} {fastest_single['latency_ms']['50']:.2f} ms | "
        f"{verdict(auto['latency_ms']['50'] <= 1.1 * fastest_single['latency_ms']['50'])} |",
    ]
    if pipeline:
        base = next(iter(pipeline["throughput"].values()))
        lines.append(
            f"| {name}: `auto` ≥ {multiple:g}x `pipeline:32` | {rate / base:.1f}x ({base:,.0f}/s) | "
            f"{verdict(rate >= multiple * base)} |"
        )
    for peer in (r for r in rows if r["config"].startswith("peer:")):
        peer_rate = max(peer["throughput"].values())
        lines.append(
            f"| {name}: `auto` ahead of {peer['config']} | {rate:,.0f}/s vs {peer_rate:,.0f}/s "
            f"({rate / peer_rate:.2f}x) | {verdict(rate >= peer_rate)} |"
        )
    return lines


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


def _serve_levels(load: dict) -> tuple[dict, dict, dict]:
    """The offline reference, the saturating closed-loop row and the open-loop row at half of it (single sentences)."""
    single = [r for r in load["closed_loop"] if r["sentences_per_request"] == 1]
    saturated = max(single, key=lambda r: r["connections"])
    half = next(r for r in load["open_loop"] if r["sentences_per_request"] == 1 and r["fraction_of_saturation"] == 0.5)
    return load["offline"], saturated, half


def _sessions(load: dict) -> list[dict]:
    """Every server session of a run: the full one and its repeats (the targets' measurements only)."""
    return [load, *load.get("repeats", [])]


def _each(values: list[float], form: str) -> str:
    """'median (each: a, b, c)', or the one value of a single session."""
    median = form.format(statistics.median(values))
    return median if len(values) == 1 else f"median {median} (each: {', '.join(form.format(v) for v in values)})"


def serve_targets(load: dict, verdict) -> list[str]:
    levels = [_serve_levels(session) for session in _sessions(load)]
    offline = levels[0][0]
    shares = [sat["requests_per_s"] / off["sorted_sentences_per_s"] for off, sat, _ in levels]
    errors = sum(sat["errors"] for _, sat, _ in levels)
    tails = [half["latency_ms_p99"] / half["latency_ms_p50"] for _, _, half in levels]
    medians = [half["latency_ms_p50"] for _, _, half in levels]
    limits = [2 * off["batch1_latency_ms_p50"] + 2 for off, _, _ in levels]
    margins = [p50 - limit for p50, limit in zip(medians, limits, strict=True)]
    where = f"serve ({offline['backend']} {offline['precision']})"
    sessions = f"{len(levels)} session{'s' if len(levels) > 1 else ''}"
    return [
        f"| {where}, 64 closed-loop clients, single sentences: ≥ 70% of the offline length-sorted rate at model "
        f"batch {offline['model_batch_size']}, 0 errors ({sessions}) | {_each(shares, '{:.1%}')}, {errors} errors | "
        f"{verdict(statistics.median(shares) >= 0.7 and errors == 0)} |",
        f"| {where}, open loop at 50% of that: p99 ≤ 3x p50 ({sessions}) | {_each(tails, '{:.1f}x')} | "
        f"{verdict(statistics.median(tails) <= 3)} |",
        f"| {where}, open loop at 50%: p50 ≤ 2x batch-1 model latency + 2 ms ({sessions}) | p50 "
        f"{_each(medians, '{:.1f} ms')} against {_each(limits, '{:.1f} ms')} | "
        f"{verdict(statistics.median(margins) <= 0)} |",
    ]


def without_http_section(load: dict) -> list[str]:
    """What the server's own models and batcher do fed without HTTP, beside the served figures of each session."""
    if "without_http" not in load:
        return []
    rows = []
    models = list(load.get("model_alone", {}))  # runs before the model-alone step have none
    for number, session in enumerate(_sessions(load), start=1):
        offline, saturated, half = _serve_levels(session)
        bare = session["without_http"]
        rate = offline["sorted_sentences_per_s"]
        bare_half = _at_rate(bare["open_loop"], half)
        alone = [_at_rate(session["model_alone"][name]["open_loop"], half) for name in models]
        rows.append(
            f"| {number} | {rate:.0f} | {saturated['requests_per_s']:.0f} ({saturated['requests_per_s'] / rate:.0%}) | "
            f"{bare['closed_loop']['requests_per_s']:.0f} ({bare['closed_loop']['requests_per_s'] / rate:.0%}) | "
            f"{half['target_requests_per_s']:.0f} | {half['latency_ms_p50']:.1f} / {half['latency_ms_p99']:.1f} | "
            f"{bare_half['latency_ms_p50']:.1f} / {bare_half['latency_ms_p99']:.1f} | "
            + "".join(f"{row['latency_ms_p50']:.1f} / {row['latency_ms_p99']:.1f} | " for row in alone)
            + f"{2 * offline['batch1_latency_ms_p50'] + 2:.1f} |"
        )
    return [
        "The same models and batcher without HTTP (`load_and_warm` and `model_batcher` of the server, in the benchmark's "
        "process after the server has stopped, fed single sentences by coroutines: 64 closed-loop clients, and the "
        "open-loop rate of the HTTP run), session by session"
        + (
            "; and each of the server's two model configurations alone at that rate, fed tokenised texts by plain "
            "threads with no event loop (`latency`: every thread on one call; `streams`: the batched classifier's "
            "parallel calls):"
            if models
            else ":"
        ),
        "",
        "| session | offline sentences/s | HTTP, 64 clients: req/s | without HTTP, 64 clients | open-loop rate | "
        "HTTP p50 / p99 ms | without HTTP p50 / p99 ms | "
        + "".join(f"{name} model alone p50 / p99 ms | " for name in models)
        + "p50 target ms |",
        "|---|---|---|---|---|---|---|" + "---|" * len(models) + "---|",
        *rows,
        "",
    ]


def _at_rate(rows: list[dict], half: dict) -> dict:
    """The row measured at the HTTP run's half-load rate."""
    return next(r for r in rows if r["target_requests_per_s"] == half["target_requests_per_s"])


def serve_section(load: dict, notes: Path) -> list[str]:
    offline, _, _ = _serve_levels(load)
    return [
        "## HTTP server under load",
        "",
        f"`benchmarks/serve_load.py`, model {load['model']}, `serve --backend {offline['backend']}` "
        f"({offline['precision']}, `--model-batch-size {offline['model_batch_size']}`), {load['cpus']} cores shared "
        f"by server and load generator on 127.0.0.1, CPU flags {' '.join(load['cpu_flags'])}; other processes "
        f"used {load['other_processes_cores']:.2f} cores on average during the run. The same backend offline, "
        f"in the same run: {offline['sorted_sentences_per_s']:.0f} sentences/s length-sorted at batch "
        f"{offline['model_batch_size']}, batch-1 latency {offline['batch1_latency_ms_p50']:.2f} ms (median).",
        "",
        "Closed loop (wrk, 1 thread: each connection sends its next request when the last is answered):",
        "",
        "| sentences per request | connections | requests/s | sentences/s | of offline | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['sentences_per_request']} | {r['connections']} | {r['requests_per_s']:.0f} | "
            f"{r['requests_per_s'] * r['sentences_per_request']:.0f} | "
            f"{r['requests_per_s'] * r['sentences_per_request'] / offline['sorted_sentences_per_s']:.0%} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} | {r['errors']} |"
            for r in load["closed_loop"]
        ),
        "",
        "Open loop (requests sent at a fixed rate, a fraction of the 64-connection rate above for the same body; "
        "latency counted from the moment each request was due):",
        "",
        "| sentences per request | of saturation | requests/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['sentences_per_request']} | {r['fraction_of_saturation']:.0%} | "
            f"{r['achieved_requests_per_s']:.0f} | {r['latency_ms_p50']:.1f} | {r['latency_ms_p90']:.1f} | "
            f"{r['latency_ms_p99']:.1f} | {r['errors']} |"
            for r in load["open_loop"]
        ),
        "",
        *without_http_section(load),
        notes.read_text() if notes.is_file() else "",
    ]


def gpu_section(folder: Path) -> list[str]:
    """The GPU runs of `benchmarks/gpu.sh`: the note, then each bench report."""
    out = ["## GPU", ""]
    if not folder.is_dir():
        return [*out, "Not measured yet. On a CUDA machine, `benchmarks/gpu.sh` fills this section.", ""]
    out += [(folder / "note.md").read_text()]
    for name in ("builtin", "distilbert-base", "auto"):
        out.append(section(folder / name / "report.md", f"results/{folder.name}/{name}"))
    return out


def main() -> None:
    results = Path(sys.argv[1])
    cold_builtin = json.loads((results / "cold-start-builtin.json").read_text())
    load = json.loads((results / "serve-load.json").read_text())

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
        (results / "targets.md").read_text().rstrip() + "\n",
        "## Targets in the generated tables below",
        "",
        "Computed by `benchmarks/write_benchmarks_md.py` from the run whose tables follow (`builtin`, `distilbert-base`,",
        "`cold-start-builtin.json`, `serve-load.json` under docs/results).",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f'| `fastsentiment classify "I like cheese"` < 0.5 s from process start | {cold_builtin["cold_start_s_median"]:.2f} s | {verdict(cold_builtin["cold_start_s_median"] < 0.5)} |',
        *serve_targets(load, verdict),
        *auto_targets(results, "builtin", 6, verdict),
        *auto_targets(results, "distilbert-base", 5, verdict),
        "",
        *notes_sections(results / "notes"),
        *ceiling_section(results / "cpu-ceiling.json"),
        *int8_section(results / "int8-variants.json"),
        "## Built-in model (sst2-minilm-l6)",
        "",
        *memory_note(results),
        section(results / "builtin" / "report.md", "results/builtin"),
        *ceiling_share_section(results / "builtin" / "results.json", results / "cpu-ceiling.json"),
        "## DistilBERT-base-sized model (random weights)",
        "",
        section(results / "distilbert-base" / "report.md", "results/distilbert-base"),
        *ceiling_share_section(results / "distilbert-base" / "results.json", results / "cpu-ceiling.json"),
        *serve_section(load, results / "serve-path.md"),
        *file_jobs_section(results / "stream-files.json"),
        *long_documents_section(results / "long-docs"),
        "## The ANE LayerNorm mapping",
        "",
        "See [ane-layernorm.md](ane-layernorm.md); measured with `benchmarks/ane_layernorm.py`:",
        "",
        (results / "ane-layernorm.md").read_text(),
        *gpu_section(results / "gpu-h200"),
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
