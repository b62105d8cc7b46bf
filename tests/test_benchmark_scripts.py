"""Benchmark scripts that the docs quote: they still run, and their arithmetic is right."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT


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
