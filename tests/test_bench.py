"""`fastsentiment bench --quick` and `fastsentiment compare` on real backends and real files."""

import csv
import json

import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def quick_report(bert_dir, sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cache = tmp_path_factory.mktemp("cache")
    result = run_cli(
        "bench",
        "--quick",
        "-m",
        str(bert_dir),
        "--data",
        str(sst2_dir),
        "--out",
        str(out),
        "--backends",
        "torch:fp32,onnx:int8,onnx:fp16,pipeline",
        env={"FASTSENTIMENT_CACHE": str(cache)},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return out, result


def test_quick_bench_writes_every_output_well_formed(quick_report):
    out, result = quick_report
    report = json.loads((out / "results.json").read_text())
    assert report["machine"]["cores"] >= 1 and "onnxruntime" in report["machine"]["libraries"]
    assert len(report["model_hash"]) == 64
    rows = {row["config"]: row for row in report["rows"]}
    assert set(rows) == {"torch:fp32", "onnx:int8", "onnx:fp16", "pipeline"}
    for name in ("torch:fp32", "onnx:int8", "pipeline"):
        row = rows[name]
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 50
        assert row["latency_ms"]["50"] <= row["latency_ms"]["99"]
        assert all(rate > 0 for rate in row["throughput"].values())
        assert 0 <= row["accuracy"] <= 1
    assert set(rows["onnx:int8"]["throughput"]) == {f"{s}@{b}" for s in ("fixed", "dynamic", "sorted") for b in (1, 32)}
    # agreement is computed against the Hugging Face fp32 reference of the same run
    assert rows["torch:fp32"]["agreement"] == 1.0 and rows["torch:fp32"]["max_abs_logit_delta"] == 0.0
    assert rows["pipeline"]["max_abs_logit_delta"] <= 1e-4
    # a configuration that fails mid-run is reported with its reason; the others ran
    assert rows["onnx:fp16"]["failed"] == "onnx fp16 runs on cuda; on cpu use int8, int8-dynamic or fp32"

    with open(out / "results.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert {r["config"] for r in table} == set(rows)
    assert all(float(r["sentences_per_s"]) > 0 for r in table if not r["failed"])

    markdown = (out / "report.md").read_text()
    assert "| onnx:int8 | ok |" in markdown and "failed: " in markdown
    assert f"machine: {report['machine']['cpu']}" in markdown
    for plot in ("throughput.png", "latency.png", "memory_load.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fastsentiment bench" in result.stdout.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backends", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--backends", "onnx:fp8"], "backend onnx has no precision 'fp8'"),
        (["--backends", "coreml"], "CoreML predicts on macOS only"),
    ],
)
def test_bad_configurations_fail_before_any_run(bert_dir, tmp_path, args, message):
    result = run_cli("bench", "-m", str(bert_dir), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert message in result.stderr.decode() and "Traceback" not in result.stderr.decode()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review\tlabel\ngood\t1\n", "no column 'sentence'"),
        ("sentence\tlabel\ngood\tmaybe\n", "unknown label 'maybe'"),
        ("sentence\tlabel\ngood\t7\n", "label id 7 does not exist in the model"),
    ],
)
def test_bad_data_fails_before_any_run(bert_dir, tmp_path, content, message):
    data = tmp_path / "data.tsv"
    data.write_text(content)
    result = run_cli("bench", "-m", str(bert_dir), "--data", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr.decode()


def test_compare_reports_agreement_and_worst_disagreements(bert_dir, tmp_path):
    from tiny_models import build_model

    other = build_model(tmp_path / "other", "bert", seed=7)
    data = tmp_path / "data.tsv"
    sentences = ["good film", "bad film", "i like cheese", "i hate cake", "the movie was not great", "a"]
    data.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences)))
    same = json.loads(
        run_cli("compare", "onnx:fp32", "torch:fp32", "-m", str(bert_dir), "--data", str(data), "--json").stdout
    )
    assert same["agreement"] == 1.0 and same["max_abs_logit_delta"] <= 1e-4 and same["disagreements"] == []
    result = run_cli(
        "compare", "torch", "torch", "-m", str(bert_dir), "--model-b", str(other), "--data", str(data), "--json"
    )
    different = json.loads(result.stdout)
    assert different["sentences"] == len(sentences) and different["max_abs_logit_delta"] > 0.01
    disagreement_count = round((1 - different["agreement"]) * len(sentences))
    assert len(different["disagreements"]) == min(disagreement_count, 10)
    confidences = [d["a_score"] + d["b_score"] for d in different["disagreements"]]
    assert confidences == sorted(confidences, reverse=True)
    for row in different["disagreements"]:
        assert row["a"] != row["b"] and row["text"] in sentences
