"""`fastsentiment bench --quick` and `fastsentiment compare` on real backends and real files."""

import csv
import json
import os

import pytest

from conftest import ROOT, run_cli


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
        "torch:fp32,onnx:int8,pipeline",
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
    assert set(rows) == {"torch:fp32", "onnx:int8", "pipeline"}
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

    with open(out / "results.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert {r["config"] for r in table} == set(rows)
    assert all(float(r["sentences_per_s"]) > 0 for r in table if not r["failed"])

    markdown = (out / "report.md").read_text()
    assert "| onnx:int8 | ok |" in markdown
    assert f"machine: {report['machine']['cpu']}" in markdown
    for plot in ("throughput.png", "latency.png", "memory_load.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fastsentiment bench" in result.stdout.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backends", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--backends", "onnx:fp8"], "backend onnx has no precision 'fp8'"),
        # refused before its export (45 MB for this model, minutes for a large one), not as a row after it
        (["--backends", "onnx:fp16"], "onnx:fp16: onnx fp16 runs on cuda; on cpu use int8, int8-dynamic or fp32"),
        (["--backends", "auto:fp16"], "auto:fp16: no backend `auto` chooses from runs fp16 here"),
        (["--backends", "coreml"], "CoreML predicts on macOS only"),
        (["--batch-sizes", "0,8"], "--batch-sizes must be at least 1"),
        (["--batch-sizes", ""], "--batch-sizes takes comma-separated integers, got ''"),  # was the default
        (["--backends", "pipeline:0"], "pipeline:0: write pipeline or pipeline:BATCH_SIZE (1 or more)"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--backends", " , "], "--backends names no configuration"),  # ran the whole default suite
    ],
)
def test_bad_configurations_fail_before_any_run(bert_dir, tmp_path, args, message):
    result = run_cli("bench", "-m", str(bert_dir), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert message in result.stderr.decode() and result.stderr.decode().count("\n") == 1  # no progress bar before
    assert not (tmp_path / "out").exists()


def _has_cuda() -> bool:
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available()


def test_a_device_without_backends_fails_before_any_run(bert_dir, tmp_path):
    if _has_cuda():
        pytest.skip("this machine has CUDA")
    result = run_cli("bench", "-m", str(bert_dir), "--device", "cuda", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.decode().startswith(
        "error: --device cuda: no backend runs there on this machine"
    )
    assert result.stderr.decode().count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_bench_on_cuda_runs_every_row_there_the_pipeline_too(bert_dir, sst2_dir, tmp_path):
    if not _has_cuda():
        pytest.skip("no CUDA device")
    out = tmp_path / "out"
    rows = "torch:fp32,torch:fp16,pipeline:32"
    result = run_cli(
        "bench", "--quick", "-m", str(bert_dir), "--device", "cuda", "--data", str(sst2_dir), "--backends", rows,
        "--out", str(out), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["device"] == "cuda"
    rows = {row["config"]: row for row in report["rows"]}
    assert {row.get("failed") for row in rows.values()} == {None}
    assert {row["device"] for row in rows.values()} == {"cuda"}
    assert all(row["peak_gpu_mb"] > 0 for row in rows.values())  # PyTorch's allocator, the pipeline's too
    assert rows["pipeline:32"]["max_abs_logit_delta"] <= 1e-3 and rows["torch:fp16"]["agreement"] >= 0.9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review\tlabel\ngood\t1\n", "no 'sentence' or 'text' column"),
        ("sentence\tlabel\ngood\tmaybe\n", "unknown label 'maybe'"),
        ("sentence\tlabel\ngood\t\u00b9\n", "unknown label '\u00b9'"),  # a digit to str.isdigit, not to int()
        ("sentence\tlabel\ngood\t\u0661\n", "unknown label '\u0661'"),  # read as class 1 before
        ("sentence\tlabel\ngood\t--1\n", "unknown label '--1'"),
        ("sentence\tlabel\ngood\t7\n", "label id 7 does not exist in the model"),
        # a row without a label among labelled ones: accuracy on part of the file (the run said "speed only")
        ("sentence\tlabel\ngood\t1\nbad\t-1\n", "data.tsv, line 3: the label -1 marks a row without a label"),
    ],
)
def test_bad_data_fails_before_any_run(bert_dir, tmp_path, content, message):
    data = tmp_path / "data.tsv"
    data.write_text(content)
    result = run_cli("bench", "-m", str(bert_dir), "--data", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr.decode()


def test_compare_reports_agreement_and_worst_disagreements(bert_dir, tmp_path):
    from fastsentiment.backends.torch_backend import best_device
    from tiny_models import build_model

    other = build_model(tmp_path / "other", "bert", seed=7)
    data = tmp_path / "data.tsv"
    sentences = ["good film", "bad film", "i like cheese", "i hate cake", "the movie was not great", "a"]
    data.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences)))
    same = json.loads(
        run_cli("compare", "onnx:fp32", "torch:fp32", "-m", str(bert_dir), "--data", str(data), "--json").stdout
    )
    assert same["agreement"] == 1.0 and same["max_abs_logit_delta"] <= 1e-4 and same["disagreements"] == []
    # torch takes the GPU for its default device where there is one (the H200 run of benchmarks/gpu.sh found
    # this test expecting the CPU there)
    assert (same["device_a"], same["device_b"]) == ("cpu", best_device())
    result = run_cli(
        "compare", "torch", "torch", "-m", str(bert_dir), "--model-b", str(other), "--data", str(data), "--json"
    )
    assert result.stdout.count(b"\n") == 1  # one line, as evaluate --json writes it (was indented over many)
    different = json.loads(result.stdout)
    assert different["sentences"] == len(sentences) and different["max_abs_logit_delta"] > 0.01
    disagreement_count = round((1 - different["agreement"]) * len(sentences))
    assert len(different["disagreements"]) == min(disagreement_count, 10)
    confidences = [d["a_score"] + d["b_score"] for d in different["disagreements"]]
    assert confidences == sorted(confidences, reverse=True)
    if _has_cuda():  # one backend on the CPU and on the GPU
        on_both = run_cli(
            "compare", "torch", "torch", "-m", str(bert_dir), "--device", "cpu", "--device-b", "cuda", "--data",
            str(data), "--json",
        )  # fmt: skip
        assert json.loads(on_both.stdout)["max_abs_logit_delta"] <= 1e-3
    else:
        on_both = run_cli("compare", "torch", "torch", "-m", str(bert_dir), "--device-b", "cuda", "--data", str(data))
        assert on_both.returncode == 2 and on_both.stderr.decode() == (
            "error: backend torch: no CUDA device visible to torch\n"
        )
    # cpu:0 is the CPU, the same device: no "on" to tell the sides apart (it read "torch on cpu vs torch on cpu:0")
    text = run_cli("compare", "torch", "torch", "-m", str(bert_dir), "--device-b", "cpu:0", "--data", str(data))
    assert text.stdout.decode().startswith("torch vs torch on 6 sentences")
    empty = run_cli("compare", "torch", "torch", "-m", str(bert_dir), "--device-b", "", "--data", str(data))
    assert empty.returncode == 2 and empty.stderr.decode().startswith("error: unknown device ''")
    for row in different["disagreements"]:
        assert row["a"] != row["b"] and row["text"] in sentences
    # an SST-2-style folder is compared on its dev split, as README says (test.tsv was read: 1,821 sentences)
    (tmp_path / "glue").mkdir()
    (tmp_path / "glue" / "dev.tsv").write_text(data.read_text())
    (tmp_path / "glue" / "test.tsv").write_text("index\tsentence\n0\tgood film\n1\tbad film\n")
    folder = run_cli("compare", "onnx:fp32", "torch:fp32", "-m", str(bert_dir), "--data", str(tmp_path / "glue"))
    assert folder.returncode == 0 and folder.stdout.decode().startswith("onnx:fp32 vs torch:fp32 on 6 sentences")
    # a text cut to the model's limit is named by its file's line, once (not "input 2", and not once per side)
    (tmp_path / "long.tsv").write_text("sentence\tlabel\ngood\t1\n" + "good film " * 40 + "\t0\n")
    cut = run_cli("compare", "onnx:fp32", "torch:fp32", "-m", str(bert_dir), "--data", str(tmp_path / "long.tsv"))
    assert cut.returncode == 0 and cut.stderr.decode() == (
        "warning: long.tsv, line 3 has 82 tokens; truncated to the model's limit of 64 (18 tokens dropped)\n"
    )


PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


@pytest.mark.skipif(not PEERS_PYTHON.is_file(), reason="peers' environment not built (scripts/build_peers_venv.sh)")
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_peer_rows_run_in_their_own_environment_on_the_same_batches(kind, bert_dir, distilbert_dir, tmp_path):
    model = bert_dir if kind == "bert" else distilbert_dir
    data = tmp_path / "data.tsv"
    sentences = ["good film", "bad film", "i like cheese", "i hate cake", "the movie was not great", "a"] * 4
    data.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences)))
    out = tmp_path / "out"
    result = run_cli(
        "bench", "--quick", "-m", str(model), "--data", str(data), "--out", str(out),
        "--backends", "torch:fp32", "--peers", str(PEERS_PYTHON),
        env={"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    rows = {row["config"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"torch:fp32", "peer:optimum-openvino", "peer:optimum-ort-int8", "peer:ctranslate2-int8"}
    for name, row in rows.items():
        assert "failed" not in row, (name, row.get("failed"))
        assert set(row["throughput"]) == set(rows["torch:fp32"]["throughput"])  # the same batches, every strategy
        assert row["load_s"] > 0 and row["peak_rss_mb"] > 50
    # each peer ran the model it was given: logits close to the fp32 reference (int8 and bf16 shift them a little)
    assert rows["peer:optimum-ort-int8"]["precision"] == "int8-dynamic"
    assert rows["peer:ctranslate2-int8"]["precision"] == "int8"
    assert rows["peer:optimum-openvino"]["precision"] in ("bf16", "fp32")  # OpenVINO's choice for this CPU ("bfp16")
    for name in ("peer:optimum-openvino", "peer:optimum-ort-int8", "peer:ctranslate2-int8"):
        assert rows[name]["max_abs_logit_delta"] < 0.25, (name, rows[name]["max_abs_logit_delta"])


def test_peer_rows_need_the_peers_environment(bert_dir, tmp_path):
    result = run_cli("bench", "-m", str(bert_dir), "--backends", "peer:ctranslate2-int8", "--out", str(tmp_path))
    assert result.returncode == 2 and "add --peers PYTHON" in result.stderr.decode()
    result = run_cli("bench", "-m", str(bert_dir), "--peers", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert result.returncode == 2 and "no such interpreter" in result.stderr.decode()


def labelled_rows(count: int) -> str:
    words = ["good", "bad", "fine", "awful", "great", "dull"]
    return "".join(f"{words[i % 6]} film number {i}\t{i % 2}\n" for i in range(count))


def test_a_bench_at_other_batch_sizes_with_torch_as_the_reference(bert_dir, tmp_path):
    """`torch` alone is the fp32 reference (its agreement columns were empty); without batch 32 the @32 column says
    nothing (it showed another strategy's rate); the report's first table is valid Markdown (|Δlogit| split a cell)."""
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + labelled_rows(24))
    out = tmp_path / "out"
    options = ["-m", str(bert_dir), "--data", str(data), "--batch-sizes", "1,8", "--out", str(out)]
    backends = "torch,onnx:fp32,auto"
    result = run_cli("bench", *options, "--backends", backends, env={"FASTSENTIMENT_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    rows = {row["config"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["torch"]["agreement"] == 1.0 and rows["onnx:fp32"]["max_abs_logit_delta"] <= 1e-4
    # The auto row names what it resolved to: measured by `tune` in this run, it is one of the configurations here.
    resolved = f"{rows['auto']['backend']}:{rows['auto']['precision']}"
    assert resolved.split(":")[0] in ("onnx", "openvino", "torch", "ane"), resolved
    with open(out / "results.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert {(r["config"], r["backend"]) for r in table} == {
        ("torch", "torch"),
        ("onnx:fp32", "onnx"),
        ("auto", rows["auto"]["backend"]),
    }
    assert f"| auto = {resolved}" in (out / "report.md").read_text()
    lines = (out / "report.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| config | status |"))
    table = lines[start : start + 5]
    assert table[0].endswith("| agreement | max \\|Δlogit\\| |") and table[0].count(" | ") == table[1].count("|") - 2
    onnx = next(line for line in table if line.startswith("| onnx:fp32 |")).split(" | ")
    assert onnx[table[0].split(" | ").index("sent/s @32")] == "–"


def test_a_bench_on_data_without_labels_measures_speed_only(bert_dir, tmp_path):
    folder = tmp_path / "sst2-like"
    folder.mkdir()
    (folder / "dev.tsv").write_text("sentence\n" + "".join(f"film number {i}\n" for i in range(16)))
    (folder / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\tfilm number {i}\n" for i in range(16)))
    out = tmp_path / "out"
    options = ["-m", str(bert_dir), "--data", str(folder), "--batch-sizes", "1", "--out", str(out)]
    result = run_cli("bench", *options, "--backends", "onnx:fp32", env={"FASTSENTIMENT_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert "failed" not in row and "accuracy" not in row  # it failed with a TypeError before
    assert "no labels (speed only), speed on 16 sentences" in (out / "report.md").read_text()


def test_bench_options_that_cannot_work_fail_before_the_runs(bert_dir, tmp_path):
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + labelled_rows(8))
    base = ["bench", "-m", str(bert_dir), "--data", str(data), "--backends", "onnx:fp32", "--batch-sizes", "1"]
    missing = run_cli(*base, "--label-column", "stars", "--out", str(tmp_path / "a"))
    assert (missing.returncode, missing.stderr.decode()) == (
        2,
        f"error: {data}: no label column 'stars' (columns: sentence, label)\n",
    )
    a_file = tmp_path / "report"
    a_file.write_text("")
    taken = run_cli(*base, "--out", str(a_file))
    assert (taken.returncode, taken.stderr.decode()) == (
        2,
        f"error: --out {a_file} is a file; a folder of files is written there\n",
    )
    # a place nothing can be written in: found before the runs (it was found after them, with the results lost)
    unwritable = run_cli(*base, "--out", str(a_file / "inside"))
    assert (unwritable.returncode, unwritable.stderr.decode()) == (
        2,
        f"error: --out {a_file / 'inside'}: {a_file} is a file, not a folder\n",
    )
    assert run_cli(*base, "--timeout", "-1", "--out", str(tmp_path / "b")).returncode == 2
    # every row failing (here: no time to run) is a failed bench, not exit 0
    failed = run_cli(
        *base, "--timeout", "0.001", "--out", str(tmp_path / "c"), env={"FASTSENTIMENT_CACHE": str(tmp_path)}
    )
    assert failed.returncode == 1 and "error: every configuration failed" in failed.stderr.decode()
    assert (tmp_path / "c" / "report.md").is_file()  # the report still says why


def test_only_fixed_padding_cuts_texts_dynamic_and_sorted_run_them_whole(tmp_path, monkeypatch):
    """On a model that reads 512 tokens, texts of ~300: "fixed" runs 128-token batches, "dynamic" and "sorted" run
    the texts as classify does (whole, each batch padded to its longest)."""
    from fastsentiment.bench import measure
    from fastsentiment.classifier import Classifier
    from tiny_models import build_model

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    model = build_model(tmp_path / "long-bert", "bert", max_positions=512)
    data = tmp_path / "long.tsv"
    data.write_text("sentence\n" + "".join(" ".join(["good film"] * (100 + 10 * i)) + "\n" for i in range(6)))
    widths, run_batches = [], Classifier.run_batches

    def noting_widths(self, run, batches):
        if all(hasattr(batch, "input_ids") for batch in batches):  # bench's padded batches, not classify's own
            widths.append([batch.input_ids.shape[1] for batch in batches])
        return run_batches(self, run, batches)

    monkeypatch.setattr(Classifier, "run_batches", noting_widths)
    spec = measure.Spec(config="onnx:fp32", model=str(model), data=str(data), batch_sizes=[3], latency_samples=2)
    measure.measure(spec)
    shapes_met_first, fixed, dynamic, ordered = widths  # every shape once, then the strategies in their order
    assert sorted(shapes_met_first) == sorted({*fixed, *dynamic, *ordered})
    assert fixed == [128, 128]
    assert dynamic == [242, 302] and ordered == [242, 302]  # 2 tokens per "good film", [CLS] and [SEP]


def test_peak_memory_is_the_throughput_models_not_a_second_one_loaded_for_batch_1(bert_dir, tmp_path):
    """A second model for single texts (auto's latency decision, OpenVINO's one-call model) loads after the batches;
    here it is stood in for by 2 GB, which the row's peak RSS must not count."""
    import os
    import subprocess
    import sys

    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + labelled_rows(16))
    program = (
        "import json, sys, numpy as np\n"
        "from fastsentiment.bench import measure\n"
        "held = []\n"
        "def second_model(spec, clf):\n"
        "    held.append(np.ones(2048 * 2**20 // 8))  # written, so resident\n"
        "    return clf\n"
        "measure._latency_classifier = second_model\n"
        f"spec = measure.Spec(config='onnx:fp32', model={str(bert_dir)!r}, data={str(data)!r}, batch_sizes=[8],\n"
        "                     labels=['NEGATIVE', 'POSITIVE'], latency_samples=4)\n"
        "print(json.dumps(measure.measure(spec)['peak_rss_mb']))\n"
    )
    env = {**os.environ, "FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 30 < json.loads(result.stdout) < 1500  # the process alone: about 450 MB


def _report_row(config: str, throughput: dict, **fields) -> dict:
    return {
        "config": config,
        "backend": config.split(":")[0],
        "precision": "fp32",
        "load_s": 0.1,
        "latency_ms": {50: 1.0, 90: 2.0, 99: 3.0},
        "latency_samples": [1.0, 2.0, 3.0],
        "throughput": throughput,
        "peak_rss_mb": 200.0,
        **fields,
    }


def test_the_report_compares_batch_32_with_the_pipeline_at_32_and_names_the_batch_1_path(tmp_path, monkeypatch):
    """The pipeline at its default batch (1) is no rate at 32 and no reference for one; the CSV says what ran the
    single texts of the auto row; the machine line says the compute threads and every flag that picks a path."""
    from fastsentiment.bench import report

    monkeypatch.setenv("FASTSENTIMENT_THREADS", "1")
    monkeypatch.setattr(report, "cpu_flags", lambda: {"avx2", "avx_vnni", "amx_tile", "sse4_2"})
    auto_row = _report_row(
        "auto", {"sorted@32": 100.0}, backend="openvino", precision="int8", latency_config="onnx:fp32"
    )
    batch_1 = _report_row("pipeline", {"pipeline@1": 10.0})
    assert report.headline(batch_1, report.reference_rate([auto_row, batch_1]))["sent/s @32"] is None
    assert report.headline(auto_row, report.reference_rate([auto_row, batch_1]))["x pipeline"] is None
    at_32 = _report_row("pipeline:32", {"pipeline@32": 50.0})
    assert report.headline(auto_row, report.reference_rate([auto_row, batch_1, at_32]))["x pipeline"] == 2.0

    rows = [auto_row, batch_1, at_32, {"config": "onnx:fp16", "failed": "runs on cuda"}]
    fields = dict(model="m", model_name="m", model_hash="0" * 64, data="d", labelled_sentences=0, speed_sentences=3)
    report.write_outputs({**fields, "repeats": 1, "command": "", "machine": report.machine(), "rows": rows}, tmp_path)
    with open(tmp_path / "results.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert [(r["config"], r["latency_config"]) for r in table] == [
        ("auto", "onnx:fp32"),
        ("pipeline", "pipeline:fp32"),
        ("pipeline:32", "pipeline:fp32"),
        ("onnx:fp16", ""),
    ]
    assert table[-1]["failed"] == "runs on cuda"
    markdown = (tmp_path / "report.md").read_text()
    assert "1 compute threads, flags: avx2, avx_vnni, amx_tile" in markdown
    assert "peak RSS: the process's high-water mark" in markdown


def test_quick_keeps_the_pipeline_at_32_and_given_batch_sizes(bert_dir, tmp_path):
    from fastsentiment.bench.suite import BenchRequest, resolved_configs

    quick = resolved_configs(BenchRequest(model=str(bert_dir), quick=True))
    assert "pipeline:32" in quick and "pipeline" not in quick
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + labelled_rows(12))
    out = tmp_path / "out"
    options = ["--quick", "--batch-sizes", "1,8", "--backends", "onnx:fp32", "--data", str(data), "--out", str(out)]
    result = run_cli("bench", "-m", str(bert_dir), *options, env={"FASTSENTIMENT_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert set(row["throughput"]) == {f"{s}@{b}" for s in ("fixed", "dynamic", "sorted") for b in (1, 8)}


def test_compare_matches_classes_by_name_not_by_column(bert_dir, tmp_path):
    """The same classes in another order (or case) are compared class by class (they were refused); |Δlogit| and
    agreement are those of a hand computation; classes that do not match one to one are one line, exit 2."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tiny_models import build_model

    swapped = build_model(tmp_path / "swapped", "bert", labels=("POSITIVE", "NEGATIVE"))  # bert_dir's weights
    lower = build_model(tmp_path / "lower", "bert", labels=("negative", "positive"))
    generic = build_model(tmp_path / "generic", "bert", labels=("LABEL_0", "LABEL_1"))
    sentences = ["good film", "bad film", "i like cheese"]
    data = tmp_path / "data.tsv"
    data.write_text("sentence\n" + "".join(f"{s}\n" for s in sentences))
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    with torch.no_grad():
        inputs = tokenizer(sentences, return_tensors="pt", padding=True)
        logits = AutoModelForSequenceClassification.from_pretrained(bert_dir)(**inputs).logits.numpy()
    # B's NEGATIVE is its column 1, which holds A's POSITIVE logit: |Δ| = |a_NEG - a_POS| for both classes
    delta = np.abs(logits[:, 0] - logits[:, 1])
    options = ["-m", str(bert_dir), "--data", str(data), "--json"]
    result = run_cli("compare", "torch", "torch", *options, "--model-b", str(swapped))
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["labels"] == ["NEGATIVE", "POSITIVE"] and report["agreement"] == 0.0 and report["differ"] == 3
    assert report["max_abs_logit_delta"] == pytest.approx(delta.max(), abs=1e-5)
    assert report["mean_abs_logit_delta"] == pytest.approx(delta.mean(), abs=1e-5)
    for row in report["disagreements"]:
        assert row["b_logits"] == pytest.approx(row["a_logits"][::-1], abs=1e-5) and row["a"] != row["b"]
    same = json.loads(run_cli("compare", "torch", "torch", *options, "--model-b", str(lower)).stdout)
    assert same["agreement"] == 1.0 and same["max_abs_logit_delta"] <= 1e-6
    refused = run_cli("compare", "torch", "torch", *options, "--model-b", str(generic))
    assert (refused.returncode, refused.stderr.decode()) == (
        2,
        "error: the models' labels differ: NEGATIVE, POSITIVE vs LABEL_0, LABEL_1; compare needs the same classes\n",
    )


def test_compare_reads_its_data_before_loading_the_models(bert_dir, tmp_path):
    """A mistyped --data is the error, not whatever the models' loads (an export of minutes) came to first."""
    missing = tmp_path / "dev.tsv"
    result = run_cli("compare", "onnx", "torch", "-m", str(bert_dir), "--model-b", str(tmp_path / "no-model"),
                     "--data", str(missing))  # fmt: skip
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: --data {missing}: no such file or directory (or use glue/sst2 with internet access)\n",
    )
    pipe = tmp_path / "fifo"  # `--data <(cat dev.tsv)`: was "no such file or directory"
    os.mkfifo(pipe)
    result = run_cli("compare", "onnx", "torch", "-m", str(bert_dir), "--data", str(pipe))
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: --data {pipe} is a pipe or stdin, which cannot be read again: save it to a file\n",
    )


def test_a_row_of_fewer_runs_than_asked_says_so_and_auto_with_a_precision_says_what_it_ran(tmp_path):
    """Repeats that failed were dropped without a word: the row read "ok" under "repeats: 3 (medians)", built from
    one run. An auto:int8 row said only "auto:int8" where a plain auto row named the backend it stood for."""
    from fastsentiment.bench import report
    from fastsentiment.bench.run import summarise

    def run(rate: float) -> dict:
        row = _report_row("auto:int8", {"sorted@32": rate}, backend="openvino", precision="int8")
        return {**row, "latency_ms": [1.0, 2.0], "labelled_logits": None}

    runs = [run(100.0), {"config": "auto:int8", "failed": "timed out after 1800 s"}, run(300.0)]
    summary = summarise(runs)
    assert (summary["repeats"], summary["failed_runs"]) == (2, ["timed out after 1800 s"])
    assert summary["throughput"]["sorted@32"] == 200.0  # the median of the runs that measured
    line = report.headline(summary, None)
    assert line["status"] == "ok in 2 of 3 runs (failed: timed out after 1800 s)"
    assert line["config"] == "auto:int8 = openvino:int8"
    assert (
        "failed_runs" not in summarise([run(100.0)]) and report.headline(summarise([run(1.0)]), None)["status"] == "ok"
    )
    # results.csv says it too, beside figures that are of the runs that measured
    fields = dict(model="m", model_name="m", model_hash="0" * 64, data="d", labelled_sentences=0, speed_sentences=3)
    rows = [{**summary, "peak_rss_mb": 200.0, "load_s": 0.1}]
    report.write_outputs({**fields, "repeats": 3, "command": "", "machine": report.machine(), "rows": rows}, tmp_path)
    with open(tmp_path / "results.csv", newline="") as stream:
        (line,) = csv.DictReader(stream)
    assert (line["failed"], line["failed_runs"], line["sentences_per_s"]) == ("", "timed out after 1800 s", "200.00")


def test_glue_sst2_labels_are_the_models_classes_by_name_else_by_id(monkeypatch, tmp_path):
    """The hub cannot be reached here: `datasets` is stood in for by a module giving GLUE SST-2's shape (ids, and
    the names negative and positive). A head listing POSITIVE first is scored by name, not inverted; one without
    names (LABEL_0, LABEL_1, as many hub fine-tunes) by id, where it was refused as "unknown label 'positive'"."""
    import sys
    import types

    from fastsentiment.bench.data import load_bench_data

    class Split:
        def __init__(self, rows: list[tuple[str, int]]):
            self.rows, self.features = rows, {"label": types.SimpleNamespace(names=["negative", "positive"])}

        def __getitem__(self, column: str) -> list:
            return [row[0] if column == "sentence" else row[1] for row in self.rows]

    glue = {"validation": Split([("good", 1), ("bad", 0), ("fine", 1)]), "test": Split([("x", -1)])}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *names: glue))
    for names, expected in [
        (["NEGATIVE", "POSITIVE"], [1, 0, 1]),
        (["POSITIVE", "NEGATIVE"], [0, 1, 0]),
        (["LABEL_0", "LABEL_1"], [1, 0, 1]),
        (None, [1, 0, 1]),
    ]:
        assert load_bench_data("glue/sst2", label_names=names).labelled.labels == expected, names


def test_a_plugin_precision_that_runs_nowhere_is_named_without_a_list_of_none():
    """A plugin's spec may leave a precision no device, or a device no precision: the message was an IndexError."""
    from fastsentiment.backends.base import BackendSpec

    odd = BackendSpec(
        "plug", "", "x", (), ("cuda",), ("fp8", "fp32"), "fp8", accelerator_only=("fp8",), cpu_only=("fp32",)
    )
    assert odd.precision_problem("fp32", "cuda") == "plug fp32 runs on none of its devices; on cuda use fp8"
    gpu_only = BackendSpec("plug", "", "x", (), ("cuda",), ("fp8",), "fp8", accelerator_only=("fp8",))
    assert gpu_only.precision_problem("fp8", "cpu") == "plug fp8 runs on cuda"


def test_results_json_is_strict_json_and_the_table_prints_any_failure_reason(tmp_path):
    """The pipeline's tokenization time is not measured: NaN, which results.json wrote and JSON has not; a failure
    reason is printed as text (a "[/b]" in it was a MarkupError's traceback)."""
    import io

    from rich.console import Console

    from fastsentiment.bench import report

    pipeline = _report_row("pipeline:32", {"pipeline@32": 50.0}, tokenize_s=float("nan"))
    rows = [pipeline, {"config": "onnx:fp32", "failed": "no file [/b] here"}]
    fields = dict(model="m", model_name="m", model_hash="0" * 64, data="d", labelled_sentences=0, speed_sentences=3)
    report.write_outputs({**fields, "repeats": 1, "command": "", "machine": report.machine(), "rows": rows}, tmp_path)

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    written = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert written["rows"][0]["tokenize_s"] is None
    assert "tokenized and padded before the clock starts" in (tmp_path / "report.md").read_text()
    stream = io.StringIO()
    report.print_table(rows, Console(file=stream, width=220))
    assert "failed: no file [/b] here" in stream.getvalue()


def test_a_row_whose_preparation_fails_without_a_message_is_a_row(bert_dir, tmp_path, monkeypatch):
    """An export that fails with a bare AssertionError (no message) was an IndexError's traceback, and no report."""
    from fastsentiment.bench import suite

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + labelled_rows(8))
    prepare = suite.prepare_config

    def failing_for_int8(config, model, device="auto"):
        if config == "onnx:int8":
            raise AssertionError()
        return prepare(config, model, device)

    monkeypatch.setattr(suite, "prepare_config", failing_for_int8)
    request = suite.BenchRequest(
        model=str(bert_dir), configs=["onnx:int8", "onnx:fp32"], data=str(data), batch_sizes="1", quick=True
    )
    failed, measured = suite.run_bench(request)["rows"]
    assert failed == {"config": "onnx:int8", "failed": "prepare: AssertionError"}
    assert "failed" not in measured and measured["throughput"]["sorted@1"] > 0  # the other rows still come


def test_a_bench_that_times_out_says_after_how_long_and_where_it_wrote(bert_dir, tmp_path):
    """'timed out after 0 s' for --timeout 0.001; an --out folder named like rich markup ("r[/x]") was a
    MarkupError's traceback after the results were written; with no row measured, no empty plots (and no matplotlib
    warning)."""
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\n" + labelled_rows(8))
    out = tmp_path / "r[" / "x]"
    result = run_cli("bench", "-m", str(bert_dir), "--data", str(data), "--backends", "onnx:fp32", "--batch-sizes",
                     "1", "--timeout", "0.001", "--out", str(out), env={"FASTSENTIMENT_CACHE": str(tmp_path)})  # fmt: skip
    assert result.returncode == 1 and f"wrote {out / 'report.md'}\n" in result.stderr.decode()
    assert "Warning" not in result.stderr.decode() and not (out / "throughput.png").exists()  # no empty plots
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row == {"config": "onnx:fp32", "failed": "timed out after 0.001 s"}


def _shapes_measured(bert_dir, tmp_path, monkeypatch, batch_sizes: list[int]) -> list[tuple[int, int]]:
    """The input shapes, in order, of every model call `bench` makes measuring onnx:fp32 on 12 texts of 12 lengths
    at `batch_sizes` (12 of them timed one at a time, last)."""
    from fastsentiment.backends.onnx_backend import OnnxBackend
    from fastsentiment.bench import measure

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.tsv"
    data.write_text("sentence\n" + "".join(" ".join(["good"] * (i + 1)) + "\n" for i in range(12)))  # 12 lengths
    shapes, logits = [], OnnxBackend.logits

    def noting_shapes(self, input_ids, attention_mask):
        shapes.append(input_ids.shape)
        return logits(self, input_ids, attention_mask)

    monkeypatch.setattr(OnnxBackend, "logits", noting_shapes)
    spec = measure.Spec(
        config="onnx:fp32", model=str(bert_dir), data=str(data), batch_sizes=batch_sizes, latency_samples=12
    )
    measure.measure(spec)
    return shapes


def test_single_texts_are_timed_on_shapes_met_before_without_a_batch_1_pass(bert_dir, tmp_path, monkeypatch):
    """With --batch-sizes 8 no batch-1 pass meets the single texts' shapes: the latency loop met each one first
    there (OpenVINO prepares kernels per new shape), and p90/p99 counted it."""
    shapes = _shapes_measured(bert_dir, tmp_path, monkeypatch, [8])
    timed, before = shapes[-12:], shapes[:-12]
    assert all(shape[0] == 1 for shape in timed) and len(set(timed)) == 12
    assert set(timed) <= set(before)


def test_every_shape_a_throughput_pass_meets_is_met_before_any_pass_is_timed(bert_dir, tmp_path, monkeypatch):
    """OpenVINO prepares kernels per new input shape: the first strategy to meet a shape paid for it, and dynamic@1
    measured 0.3-0.5x sorted@1, the same work. The passes at a batch size now run on shapes met once before them."""
    shapes = _shapes_measured(bert_dir, tmp_path, monkeypatch, [1])
    # the calls: one warm-up batch, the shapes met once, three timed passes of 12 texts, and the single texts (a
    # warm-up of 8 in one call, 12 timed)
    met = len(shapes) - 1 - 36 - 1 - 12
    first, passes = shapes[1 : 1 + met], shapes[1 + met : 1 + met + 36]
    assert all(shape[0] == 1 for shape in passes) and len(passes) == 36
    assert len(first) == len(set(first)) and set(first) == set(passes)
