"""Benchmark scripts that the docs quote: they still run, and their arithmetic is right."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def test_cpu_ceiling_on_data_without_a_readable_text_says_so_in_one_line(bert_dir, tmp_path):
    """A header alone was a StatisticsError's traceback (the mean length of no texts); a missing file an InputError's."""
    header_only, missing = tmp_path / "header.tsv", tmp_path / "missing.tsv"
    header_only.write_text("sentence\n")
    for data, message in [
        (header_only, f"error: {header_only}: no text to measure the model's work on (0 row(s), none readable)\n"),
        (missing, f"error: input file not found: {missing}\n"),
    ]:
        result = subprocess.run(
            [sys.executable, "benchmarks/cpu_ceiling.py", "--model", str(bert_dir), "--data", str(data)],
            cwd=ROOT,
            capture_output=True,
            timeout=300,
        )
        assert (result.returncode, result.stderr.decode()) == (1, message)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_cpu_ceiling_counts_encoder_work_and_times_real_kernels(kind, bert_dir, distilbert_dir, tmp_path):
    model = bert_dir if kind == "bert" else distilbert_dir
    data = tmp_path / "texts.tsv"
    data.write_text("sentence\nI like cheese\nthe film was not good , but the cake was great\n")
    out = tmp_path / "ceiling.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/cpu_ceiling.py", "--model", str(model), "--data", str(data), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    (entry,) = json.loads(out.read_text())["models"]
    # tiny models: 2 layers, hidden 32, feed-forward 4 × 32 (see tiny_models.py), read from either config spelling
    assert entry["shape"] == {"layers": 2, "hidden": 32, "ffn": 128}
    tokens = entry["mean_tokens"]
    per_token = 4 * 32 * 32 + 2 * 32 * 128 + 2 * tokens * 32
    assert entry["gmacs_per_sentence"] * 1e9 == pytest.approx(2 * tokens * per_token)
    assert set(entry["kernel_gops"]) >= {
        "fp32 (MLAS sgemm)",
        "int8 block-wise (MatMulNBits)",
        "int8 per-tensor (u8s8 VNNI)",
    }
    for kernel, gops in entry["kernel_gops"].items():
        assert gops > 0
        assert entry["ceiling_sentences_per_s"][kernel] == pytest.approx(
            gops * 1e9 / (2 * entry["gmacs_per_sentence"] * 1e9)
        )


def test_the_benchmarks_page_is_what_its_generator_writes_from_the_results():
    """docs/benchmarks.md is written by benchmarks/write_benchmarks_md.py from docs/results (hand-written sections
    live there as files): an edit made to the page alone would be lost by the next regeneration."""
    result = subprocess.run(
        [sys.executable, "benchmarks/write_benchmarks_md.py", "docs/results"], cwd=ROOT, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == (ROOT / "docs" / "benchmarks.md").read_text(), (
        "docs/benchmarks.md differs from what benchmarks/write_benchmarks_md.py docs/results writes: edit the notes "
        "under docs/results/notes (or docs/results/targets.md) and regenerate the page"
    )


def test_the_auto_targets_are_read_from_a_bench_with_an_auto_row(tmp_path):
    """A results.json's percentiles are keyed by strings: the page's generator looked them up by number and failed
    (KeyError: 50) on every bench with an `auto` row."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import write_benchmarks_md
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    (tmp_path / "builtin").mkdir()
    shutil.copy(ROOT / "docs/results/auto-builtin/results.json", tmp_path / "builtin" / "results.json")
    lines = write_benchmarks_md.auto_targets(tmp_path, "builtin", 6, lambda met: "met" if met else "not met")
    assert (
        "| builtin: `auto` batch-1 p50 ≤ 1.1x the best batch-1 row | 3.44 ms vs onnx:int8 3.12 ms | not met |" in lines
    )
