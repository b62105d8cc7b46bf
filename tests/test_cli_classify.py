import csv
import json
import os
import subprocess
import sys
import threading
from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import PINNED_FP32, ROOT, run_cli


def _lines(result):
    return result.stdout.decode().splitlines()


def test_classify_arguments_prints_label_confidence_text(bert_dir):
    result = run_cli("classify", "I like cheese", "I hate cheesecake", "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr
    lines = _lines(result)
    assert len(lines) == 2
    for line, text in zip(lines, ["I like cheese", "I hate cheesecake"], strict=True):
        label, confidence, rest = line.split(maxsplit=2)
        assert label in {"NEGATIVE", "POSITIVE"}
        assert confidence.endswith("%") and 50 <= float(confidence[:-1]) <= 100
        assert rest == text


def test_json_output_carries_every_label_score(distilbert_dir):
    result = run_cli("classify", "I like cheese", "--json", "--model", str(distilbert_dir))
    (record,) = [json.loads(line) for line in _lines(result)]
    assert record["text"] == "I like cheese"
    assert set(record["scores"]) == {"NEGATIVE", "POSITIVE"}
    assert record["score"] == pytest.approx(max(record["scores"].values()))
    assert record["label"] == max(record["scores"], key=record["scores"].get)


def test_cli_matches_python_api(bert_dir):
    from fastsentiment import Classifier

    expected = Classifier.load(bert_dir, backend="torch")(["good film", "bad cake"])
    result = run_cli("classify", "good film", "bad cake", "--json", "--model", str(bert_dir), "--backend", "torch")
    got = [json.loads(line) for line in _lines(result)]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-6)


@pytest.mark.parametrize("dash", [[], ["-"]], ids=["no-text", "dash"])
def test_stdin_lines_are_classified_and_bad_lines_named(bert_dir, dash):
    """No text, or "-" as the one text (the Unix convention), reads stdin."""
    result = run_cli(
        "classify", *dash, "--json", "--model", str(bert_dir), input=b"good film\n\nbad \xff cake\nI like cheese\n"
    )
    assert result.returncode == 2
    records = [json.loads(line) for line in _lines(result)]
    assert [r.get("text") for r in records] == ["good film", None, None, "I like cheese"]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[1] == {"line": 2, "error": "empty text"}
    assert records[2] == {"line": 3, "error": "not valid UTF-8"}
    stderr = result.stderr.decode()
    assert "error: line 2: empty text" in stderr and "error: line 3: not valid UTF-8" in stderr
    assert "Traceback" not in stderr


def test_a_dash_among_texts_is_refused_not_classified_as_the_text_dash(bert_dir):
    """`classify - good` classified "-" and "good", reading nothing from stdin."""
    result = run_cli("classify", "-", "good", "--model", str(bert_dir), input=b"bad film\n")
    assert (result.returncode, result.stdout, result.stderr.decode()) == (
        2,
        b"",
        "error: - reads the texts from stdin; give it alone, not among texts given as arguments\n",
    )


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_argument_is_its_own_error_and_the_others_are_classified(bert_dir, text):
    """As a file's lines are: the error is named, the others are answered, the exit code says something failed."""
    result = run_cli("classify", "good", text, "bad", "--json", "--model", str(bert_dir))
    assert result.returncode == 2
    records = [json.loads(line) for line in _lines(result)]
    assert [r.get("text") for r in records] == ["good", None, "bad"] and records[1] == {
        "line": 2,
        "error": "empty text",
    }
    assert result.stderr.decode() == (
        "error: input 2: empty text\nerror: 1 input could not be classified (see the errors above)\n"
    )
    alone = run_cli("classify", text, "--model", str(bert_dir), env={"FASTSENTIMENT_CACHE": "/nonexistent/cache"})
    assert alone.returncode == 2 and alone.stdout == b""
    assert alone.stderr.decode() == "error: input 1: empty text\n"  # refused before any model is loaded


def test_long_text_is_truncated_with_a_warning(bert_dir):
    result = run_cli("classify", "fine", "good " * 100, "--model", str(bert_dir))
    assert result.returncode == 0
    assert "warning: input 2 has 102 tokens; truncated to the model's limit of 64 (38 tokens dropped)" in (
        result.stderr.decode()
    )
    asked = run_cli("classify", "good film today", "--max-length", "4", "--model", str(bert_dir))
    assert "; truncated to the max_length of 4 (" in asked.stderr.decode()  # the limit asked for: not the model's


def test_a_truncated_file_row_is_named_by_its_line(bert_dir, tmp_path):
    """In a file job the warning names the line, not the row's place in its chunk."""
    source = tmp_path / "texts.txt"
    source.write_text("good\nbad\nfine\n" + "good " * 100 + "\n")
    result = run_cli("classify", "--file", str(source), "--chunk-rows", "2", "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert "warning: line 4 has 102 tokens; truncated to the model's limit of 64" in result.stderr.decode()


def test_a_file_of_long_rows_names_the_first_few_and_counts_the_rest(bert_dir, tmp_path):
    """A file of long reviews must not print a line per row: five are named, the rest counted at the end."""
    from fastsentiment.tokenization import NAMED_TRUNCATIONS

    source = tmp_path / "texts.txt"
    source.write_text("good\n" + "".join(f"{'good ' * (70 + row)}\n" for row in range(12)) + "bad\n")
    result = run_cli("classify", "--file", str(source), "--chunk-rows", "4", "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stderr.decode().splitlines()
    named = [line for line in lines if line.startswith("warning: line ")]
    expected = "warning: line {} has {} tokens; truncated to the model's limit of 64 ({} tokens dropped)"
    assert named == [expected.format(line, 70 + line, 6 + line) for line in range(2, 2 + NAMED_TRUNCATIONS)]
    assert "warning: 12 rows were truncated to the model's limit of 64 tokens in all" in result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 14  # every row classified

    two = tmp_path / "two.txt"
    two.write_text("good\n" + "good " * 70 + "\n" + "bad " * 70 + "\n")
    result = run_cli("classify", "--file", str(two), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert [line.split(" has ")[0] for line in result.stderr.decode().splitlines() if "truncated" in line] == [
        "warning: line 2",
        "warning: line 3",
    ]  # each named, no count line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "tensorflow"], "error: unknown backend 'tensorflow'"),
        (["--model", "/no/such/model"], "error: model directory not found: /no/such/model"),
        (["--precision", "fp8", "--backend", "torch"], "error: backend torch has no precision 'fp8'"),
        (["--backend", "torch:fp8"], "error: backend torch has no precision 'fp8'"),
        (["--backend", "onnx:int8", "-p", "fp32"], "error: backend onnx:int8 and precision 'fp32' disagree"),
        (["--device", "gpu0"], "error: unknown device 'gpu0'; choose ane, auto, cpu, cuda, gpu, mps"),
        (["--device", "cuda:first"], "error: device 'cuda:first': after cuda: comes the device's number, as in cuda:1"),
        (["--long-text", "whole"], "error: unknown long_text (--long-text) 'whole'"),
        (["--labels", " "], "error: --labels needs the class names"),
    ],
)
def test_configuration_errors_are_one_line_with_exit_code_2(bert_dir, args, message):
    args = args if "--model" in args else [*args, "--model", str(bert_dir)]
    result = run_cli("classify", "I like cheese", *args)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert stderr.startswith(message) and stderr.count("\n") == 1


def test_debug_shows_the_traceback():
    result = run_cli("--debug", "classify", "x", "--model", "/no/such/model")
    assert result.returncode != 0 and "Traceback" in result.stderr.decode()


def test_missing_runtime_names_the_extra_to_install(bert_dir):
    """A registered backend whose runtime is absent fails with the pip command that fixes it."""
    script = (
        "import sys\n"
        "from fastsentiment.backends import BackendSpec, register\n"
        "from fastsentiment.backends.torch_backend import TorchBackend\n"
        "class Absent(TorchBackend):\n"
        "    spec = BackendSpec('absent', 'test', 'absent-extra', ('fastsentiment_no_such_runtime',), ('cpu',), ('fp32',), 'fp32')\n"
        "register(Absent)\n"
        "from fastsentiment.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", script, "classify", "x", "--backend", "absent", "--model", str(bert_dir)],
        capture_output=True,
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "error: the absent backend needs the Python package 'fastsentiment_no_such_runtime', which is not "
        "installed: pip install 'fastsentiment[absent-extra]'"
    )


@pytest.mark.parametrize("command", [["classify", "I like cheese"], ["backends"]])
def test_a_closed_stdout_or_stderr_is_one_line_not_a_traceback(bert_dir, command):
    """Started with stdout closed (`>&-`), Python gives the command no sys.stdout: the first line written was an
    AttributeError's traceback. With stderr closed (`2>&-`) the exit code still tells an error from success."""
    import subprocess
    import sys

    def run(closed: int, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fastsentiment", *args, "--model", str(bert_dir)],
            capture_output=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            preexec_fn=lambda: os.close(closed),
        )

    no_stdout = run(1, *command)
    assert no_stdout.returncode == 1
    assert no_stdout.stderr.decode() == "error: stdout is closed: nothing can be written there\n"
    assert run(2, "classify", "").returncode == 2  # an error, said nowhere


def test_a_reader_that_stops_early_ends_the_command_quietly_with_exit_1(bert_dir, tmp_path):
    """`classify < texts | head -1`: the output cannot all be written, as to a closed stdout (exit 1), and nothing is
    said of it: no traceback, no error line (README)."""
    import subprocess
    import sys

    texts = tmp_path / "texts.txt"
    texts.write_text("good film\n" * 20_000)
    with open(texts, "rb") as stdin:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastsentiment", "classify", "--model", str(bert_dir), *PINNED_FP32],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert process.stdout.readline()  # the first answer arrived
        process.stdout.close()  # as head does after its lines
        stderr = process.stderr.read()
        assert (process.wait(timeout=120), stderr) == (1, b"")


def test_compare_prints_texts_as_they_are_and_its_summary_on_one_line_when_piped(bert_dir, tmp_path):
    """compare's table read a text's "[/b]" as rich markup (a MarkupError's traceback) and dropped "[red]" from it;
    piped, its summary was cut at 80 columns into two lines."""
    import shutil

    from safetensors.numpy import load_file, save_file

    flipped = tmp_path / "flipped"  # the same model with its classifier negated: every label differs
    shutil.copytree(bert_dir, flipped)
    weights = load_file(flipped / "model.safetensors")
    weights = {name: -value if name.startswith("classifier") else value for name, value in weights.items()}
    save_file(weights, flipped / "model.safetensors", metadata={"format": "pt"})
    data = tmp_path / ("a-folder-name-long-enough-to-pass-80-columns" * 2) / "data.tsv"
    data.parent.mkdir()
    texts = ["[/b] good film [red]x[/red]", "bad film", "\x1b[31mred\x1b[0m and\u2028two lines"]
    data.write_text("sentence\tlabel\n" + "".join(f"{text}\t1\n" for text in texts))
    result = run_cli("compare", "torch", "torch", "-m", str(bert_dir), "--model-b", str(flipped), "--data", str(data))
    assert result.returncode == 0, result.stderr
    lines = _lines(result)
    assert lines[0].startswith(f"torch vs torch on 3 sentences of {data}: agreement 0.00%") and "mean |Δ" in lines[0]
    assert any(texts[0] in line for line in lines[1:]), result.stdout.decode()
    # an escape sequence shown, not acted on, and a line break kept within its row (both were passed through)
    assert b"\x1b" not in result.stdout and any("\\x1b[31mred\\x1b[0m and\\u2028two lines" in line for line in lines)


def test_tune_shows_a_failure_reason_whole_and_its_decision_on_whole_lines(bert_dir, monkeypatch, capsys):
    """tune's table read a reason's pip hint, 'fastsentiment[openvino]', as rich markup and dropped "[openvino]";
    written to a log, its decision's lines were cut at 80 columns."""
    from fastsentiment.backends import auto
    from fastsentiment.cli import main

    reason = "'openvino' not installed: pip install 'fastsentiment[openvino]'"
    measured = {
        "config": "onnx:fp32", "load_s": 0.1, "sentences_per_s": 900.0, "short_sentences_per_s": 1000.0,
        "long_sentences_per_s": 810.0, "latency_ms": 1.0, "agreement": 1.0, "accuracy": None, "faithful": True,
        "failed": None,
    }  # fmt: skip
    why = "onnx:fp32, 1,000 sentences/s on the shorter half of the sample and 810 on the longer half, at batch 32"
    decision = {
        "sample": 256,
        "table": [measured, {"config": "openvino:fp32", "failed": reason}],
        "throughput": {"backend": "onnx", "precision": "fp32", "why": why},
    }
    monkeypatch.setattr(auto, "check_decision_can_be_kept", lambda *args, **kwargs: None)
    monkeypatch.setattr(auto, "tune", lambda *args, **kwargs: decision)  # what measuring found
    main(["tune", "--model", str(bert_dir)])
    out, err = capsys.readouterr()
    assert "fastsentiment[openvino]" in out.replace("│", "").replace(" ", "")
    assert f"auto for throughput: {why}\n" in err


# ---- files --------------------------------------------------------------------------------
def test_txt_file_to_csv_keeps_every_row_in_order(bert_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"good film\nbad cake\n\n\xfe\xff broken\nI like cheese\n")
    out = tmp_path / "out.csv"
    result = run_cli("classify", "--file", str(source), "--out", str(out), "--model", str(bert_dir))
    assert result.returncode == 2
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["line"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r["error"] for r in rows] == ["", "", "empty text", "not valid UTF-8", ""]
    assert rows[4]["text"] == "I like cheese" and rows[4]["label"] in {"NEGATIVE", "POSITIVE"}
    assert float(rows[0]["score_NEGATIVE"]) + float(rows[0]["score_POSITIVE"]) == pytest.approx(1.0, abs=1e-5)
    assert rows[3]["text"] == "\ufffd\ufffd broken"  # undecodable bytes are replaced in the output, not lost
    assert "line 4: not valid UTF-8" in result.stderr.decode()


def test_tsv_with_glue_quoting_and_column_choice(distilbert_dir, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text('id\treview\n1\tit \'s a "good" film\n2\tbad\n')
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "-f", str(source), "--column", "review", "-o", str(out), "-m", str(distilbert_dir))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2"]
    assert records[0]["review"] == 'it \'s a "good" film'
    assert all(r["error"] is None and r["label"] in {"NEGATIVE", "POSITIVE"} for r in records)


def test_jsonl_file_with_malformed_line_to_stdout(bert_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good film", "id": 7}\n{broken\n{"text": "bad"}\n')
    result = run_cli("classify", "-f", str(source), "--json", "-m", str(bert_dir))
    assert result.returncode == 2
    records = [json.loads(line) for line in _lines(result)]
    assert records[0]["text"] == "good film" and records[2]["text"] == "bad"
    assert records[1]["line"] == 2 and records[1]["error"].startswith("malformed JSON")


def test_jsonl_lone_surrogate_escapes_are_error_rows_and_the_output_stays_utf8(bert_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    # JSON escapes of half a surrogate pair: no tokenizer and no UTF-8 file takes them
    source.write_text('{"text": "good film"}\n{"text": "hi \\ud83d"}\n{"text": "bad", "note": "x \\udc00"}\n')
    out = tmp_path / "out.csv"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "-m", str(bert_dir))
    assert result.returncode == 2 and "Traceback" not in result.stderr.decode()
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["error"] for r in rows] == ["", "not valid UTF-8", ""]
    assert rows[1]["text"] == "hi \ufffd" and rows[2]["label"] in {"NEGATIVE", "POSITIVE"}
    assert "line 2: not valid UTF-8" in result.stderr.decode()


def test_an_unknown_option_is_a_usage_error_not_a_traceback():
    result = run_cli("classify", "--no-such-option", "good film")
    assert result.returncode == 2
    assert "No such option: --no-such-option" in result.stderr.decode() and "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_missing_input_file_is_one_line(bert_dir, tmp_path, engine):
    missing = tmp_path / "nosuch.txt"
    result = run_cli(
        "classify", "-f", str(missing), "-o", str(tmp_path / "out"), "--engine", engine, "-m", str(bert_dir)
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"error: input file not found: {missing}"


def test_missing_column_is_an_error_before_classifying(bert_dir, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,review\n1,good\n")
    result = run_cli("classify", "-f", str(source), "-m", str(bert_dir))
    assert result.returncode == 2
    assert "no 'sentence' or 'text' column" in result.stderr.decode()
    assert result.stdout == b""


def test_sst2_dev_file_mode_classifies_all_rows(bert_dir, sst2_dir, tmp_path):
    out = tmp_path / "dev.csv"
    result = run_cli("classify", "-f", str(sst2_dir / "dev.tsv"), "-o", str(out), "-m", str(bert_dir))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 872 and all(r["label"] in {"NEGATIVE", "POSITIVE"} for r in rows)
    # The input's own label column is kept, renamed, rather than overwritten by the prediction.
    assert list(rows[0])[:3] == ["line", "sentence", "input_label"]
    assert {r["input_label"] for r in rows} == {"0", "1"}


def test_a_device_no_backend_here_runs_on_names_each_backends_reason():
    """auto on a known device that nothing runs on here: every backend's reason, not the first backend's refusal."""
    torch = pytest.importorskip("torch")
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    result = run_cli("classify", "I like cheese", "--device", "mps")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith("error: no backend can run here (onnx: runs on cpu, cuda, not")
    assert "torch: MPS (Apple GPU) is not available" in stderr and stderr.count("\n") == 1


def test_backends_for_a_device_nothing_here_runs_on_says_so_after_its_table():
    torch = pytest.importorskip("torch")
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    result = run_cli("backends", "--device", "mps")
    assert result.returncode == 0, result.stderr.decode()
    assert "MPS (Apple GPU) is not available" in result.stdout.decode()
    assert result.stdout.decode().rstrip().endswith("auto: no backend runs on device 'mps' here")


def cli_without(modules: tuple[str, ...], *args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a process where `modules` cannot be imported, as in an install without them."""
    blocked = "".join(f"sys.modules[{module!r}] = None\n" for module in modules)
    script = f"import sys\n{blocked}from fastsentiment.cli import main\nmain({list(args)!r})\n"
    env = {**os.environ, **({"FASTSENTIMENT_CACHE": str(cache)} if cache else {})}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=300)


def onnx_row(table: subprocess.CompletedProcess) -> str:
    return next(line for line in _lines(table) if line.strip("│ ").startswith("onnx "))


def test_backends_table_names_the_extra_of_a_missing_runtime():
    """The table's pip hint keeps its [extra] (rich would read it as markup and drop it)."""
    result = cli_without(("onnxruntime",), "backends")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "pip install 'fastsentiment[onnx]'" in onnx_row(result), onnx_row(result)


@pytest.mark.parametrize(
    ("missing", "needed"),
    [
        (("torch", "transformers", "openvino"), "torch"),  # `pip install fastsentiment[onnx]`
        (("onnx",), "onnx"),  # `[onnx,torch]`: torch's exporter failed with its OnnxExporterError traceback
    ],
)
def test_an_install_that_cannot_export_runs_cached_exports_and_says_what_a_first_export_needs(
    bert_dir, tmp_path, missing, needed
):
    """An install without the export extra has nothing to export with: `backends` said onnx was ready and `auto` chose
    it, and the first run failed. Without a cached export it is not runnable, saying why; with one it runs."""
    cache = tmp_path / "cache"
    needs = f"its first run exports the model to ONNX, which needs '{needed}': pip install 'fastsentiment[export]'"
    line = onnx_row(cli_without(missing, "backends", "--model", str(bert_dir), cache=cache))
    assert "ready" not in line and "pip install 'fastsentiment[export]'" in line, line
    refused = cli_without(missing, "classify", "-m", str(bert_dir), "-b", "onnx", "good film", cache=cache)
    assert refused.returncode == 2 and refused.stderr.decode() == f"error: backend onnx cannot run tiny-bert: {needs}\n"
    exported = cli_without(
        missing, "export", "onnx", str(bert_dir), str(tmp_path / "model.onnx"), "-p", "fp32", cache=cache
    )
    assert exported.returncode == 2 and exported.stderr.decode() == (
        f"error: exporting a model to ONNX (once per model) needs the Python package '{needed}', which is not "
        "installed: pip install 'fastsentiment[export]'\n"
    )
    # an export at another precision than the default is not enough to call the backend ready
    cache_env = {"FASTSENTIMENT_CACHE": str(cache)}
    assert run_cli("classify", "-m", str(bert_dir), "-b", "onnx:fp32", "good film", env=cache_env).returncode == 0
    line = onnx_row(cli_without(missing, "backends", "--model", str(bert_dir), cache=cache))
    assert "ready" not in line, line
    made = run_cli("classify", "-m", str(bert_dir), "-b", "onnx", "good film", env=cache_env)
    assert made.returncode == 0, made.stderr.decode()
    cached = cli_without(missing, "classify", "-m", str(bert_dir), "-b", "onnx", "good film", cache=cache)
    assert cached.returncode == 0 and cached.stdout == made.stdout, cached.stderr.decode()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}/folder.csv", "error: --out {tmp}/folder.csv is a folder; name a file"),
        ("{tmp}/texts.txt/out.csv", "error: --out {tmp}/texts.txt/out.csv: {tmp}/texts.txt is a file, not a folder"),
        ("/proc/out.csv", "error: --out /proc/out.csv: cannot write in /proc"),
    ],
)
@pytest.mark.parametrize("source", ["arguments", "file"])
def test_an_out_that_cannot_be_written_is_refused_before_any_work(bert_dir, tmp_path, out, message, source):
    """One line before the model loads, and nothing left behind that a later run would stumble on."""
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "texts.txt").write_text("I like cheese\n")
    inputs = ["I like cheese"] if source == "arguments" else ["--file", str(tmp_path / "texts.txt")]
    result = run_cli("classify", *inputs, "--out", out.format(tmp=tmp_path), "--model", str(bert_dir))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith(message.format(tmp=tmp_path)), stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder.csv", "texts.txt"]


def test_a_folder_given_as_input_file_is_named_as_such(bert_dir, tmp_path):
    result = run_cli("classify", "--file", str(tmp_path), "--model", str(bert_dir))
    assert result.returncode == 2
    assert (
        result.stderr.decode() == f"error: {tmp_path} is a folder; name a file (--engine ray reads a folder of files)\n"
    )


def test_evaluate_checks_its_data_before_loading_the_model(tmp_path):
    """A missing model would be the second error: the data is checked first, before a load that may export."""
    missing_model = str(tmp_path / "no-model")
    result = run_cli("evaluate", str(tmp_path / "dev.tsv"), "--model", missing_model)
    assert (result.returncode, result.stderr.decode()) == (2, f"error: input file not found: {tmp_path / 'dev.tsv'}\n")
    result = run_cli("evaluate", str(tmp_path), "--model", missing_model)
    assert (result.returncode, result.stderr.decode()) == (2, f"error: {tmp_path} is a folder; name a labelled file\n")
    pipe = tmp_path / "fifo"  # as `evaluate <(zcat dev.tsv.gz)` names one: it was "input file not found"
    os.mkfifo(pipe)
    result = run_cli("evaluate", str(pipe), "--model", missing_model)
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {pipe} is a pipe or stdin: evaluate reads a labelled file (.csv, .tsv, .jsonl, .parquet)\n",
    )
    # No file named, outside a checkout beside the shared data: the default is named (it was "input file not found:
    # ../shared/data/sst2/dev.tsv"), and so is the way out.
    elsewhere = subprocess.run(
        [sys.executable, "-m", "fastsentiment", "evaluate", "--model", missing_model],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert (elsewhere.returncode, elsewhere.stderr.decode()) == (
        2,
        "error: name a labelled file to evaluate on: the default, SST-2 dev at ../shared/data/sst2/dev.tsv, is not "
        "there (or glue/sst2, with `datasets` and internet access)\n",
    )


@pytest.mark.skipif(find_spec("datasets") is not None, reason="`datasets` is installed here: glue/sst2 would download")
def test_evaluate_on_the_hubs_sst2_without_datasets_names_the_package(tmp_path):
    columns = run_cli("evaluate", "glue/sst2", "--text-column", "review", "--model", str(tmp_path / "no-model"))
    assert (columns.returncode, columns.stderr.decode()) == (
        2,  # they were ignored, where a file without such columns is refused
        "error: glue/sst2 has its own columns: --text-column and --label-column name a file's\n",
    )
    hub = run_cli("evaluate", "glue/sst2", "--model", str(tmp_path / "no-model"))
    assert (hub.returncode, hub.stderr.decode()) == (
        2,
        "error: evaluate glue/sst2 needs the Python package 'datasets', which is not installed: pip install datasets\n",
    )


def test_evaluate_names_its_own_column_option(bert_dir, tmp_path):
    data = tmp_path / "dev.tsv"
    data.write_text("review\tlabel\ngood\t1\n")
    result = run_cli("evaluate", str(data), "--model", str(bert_dir))
    assert result.returncode == 2
    assert (
        result.stderr.decode()
        == "error: no 'sentence' or 'text' column (columns: review, label); choose one with --text-column\n"
    )
    data.write_text("sentence\tlabel\n")
    result = run_cli("evaluate", str(data), "--model", str(bert_dir))
    assert result.returncode == 2 and result.stderr.decode() == f"error: {data}: no labelled rows\n"


def test_evaluate_reads_data_as_classify_and_train_do(bert_dir, tmp_path):
    """A 'text' column as classify finds it (Hugging Face datasets' text/label); class ids written as floats
    (pandas, after a NaN); a bad label named by its line, as a bad text is."""
    data = tmp_path / "imdb.csv"
    data.write_text("text,label\ngood film,1.0\nbad film,0.0\nfine film,1\n")
    result = run_cli("evaluate", str(data), "--model", str(bert_dir), "--backend", "onnx", "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["examples"] == 3
    data.write_text("text,label\ngood film,1\nbad film,1.5\n")
    result = run_cli("evaluate", str(data), "--model", str(bert_dir), "--backend", "onnx")
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {data}, line 3: unknown label '1.5'; expected one of NEGATIVE, POSITIVE or a class id\n",
    )
    # Label names in another case than the model's (positive for POSITIVE) are those classes, as compare takes them
    data.write_text("text,label\ngood film,positive\nbad film,Negative\nfine film,1\n")
    by_name = run_cli("evaluate", str(data), "--model", str(bert_dir), "--backend", "onnx", "--json")
    data.write_text("text,label\ngood film,1\nbad film,0\nfine film,1\n")
    by_id = run_cli("evaluate", str(data), "--model", str(bert_dir), "--backend", "onnx", "--json")
    assert by_name.returncode == 0, by_name.stderr.decode()
    assert json.loads(by_name.stdout)["correct"] == json.loads(by_id.stdout)["correct"]
    # A label column the table has not is said of its header (was "line 2", the first row's)
    result = run_cli("evaluate", str(data), "--model", str(bert_dir), "--label-column", "stars")
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {data}: no label column 'stars' (columns: text, label; see --label-column)\n",
    )


def test_evaluate_on_named_labels_with_a_model_of_unnamed_classes_points_to_labels(tmp_path):
    """A model whose config says LABEL_0, LABEL_1 met a file labelled negative/positive: "unknown label", and no
    word of the option that names the classes."""
    from tiny_models import build_model

    model = build_model(tmp_path / "generic", "bert", labels=("LABEL_0", "LABEL_1"))
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\ngood film\tpositive\nbad film\tnegative\n")
    result = run_cli("evaluate", str(data), "--model", str(model), "--backend", "onnx")
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {data}, line 2: unknown label 'positive'; expected one of LABEL_0, LABEL_1 or a class id (the "
        "model's classes have no names of their own: --labels names them in class-id order)\n",
    )
    result = run_cli(
        "evaluate", str(data), "--model", str(model), "--backend", "onnx", "--labels", "negative,positive", "--json"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["examples"] == 2
    # bench and tune --calibration read labels too, and have no --labels to offer
    from fastsentiment.bench.data import load_bench_data
    from fastsentiment.errors import InputError

    with pytest.raises(InputError) as refused:
        load_bench_data(str(data), label_names=["LABEL_0", "LABEL_1"])
    assert str(refused.value).endswith("unknown label 'positive'; expected one of LABEL_0, LABEL_1 or a class id")


def test_evaluate_names_long_texts_by_their_line_and_counts_them(bert_dir, tmp_path):
    """Truncations and refusals named a text by its place in the list ("input 2"), and those past the fifth went
    uncounted."""
    long = " ".join(["good film"] * 40)
    data = tmp_path / "long.tsv"
    data.write_text("sentence\tlabel\nfine\t1\n\n" + "".join(f"{long}\t1\n" for _ in range(7)))
    pinned = ("--model", str(bert_dir), "--backend", "onnx:fp32")
    result = run_cli("evaluate", str(data), *pinned, "--json")
    assert result.returncode == 0, result.stderr.decode()
    warnings = result.stderr.decode().splitlines()
    assert warnings[0] == "warning: line 4 has 82 tokens; truncated to the model's limit of 64 (18 tokens dropped)"
    assert warnings[-1] == (
        "warning: 7 rows were truncated to the model's limit of 64 tokens in all (--long-text chunk classifies whole "
        "texts)"
    )
    assert json.loads(result.stdout)["truncated"] == 7
    refused = run_cli("evaluate", str(data), *pinned, "--long-text", "error")
    assert refused.returncode == 2
    assert refused.stderr.decode() == (  # the option as the command calls it, beside the Python API's name
        "error: line 4 has 82 tokens, over the model's limit of 64; long_text (--long-text) 'chunk' classifies it "
        "whole, 'truncate' cuts it\n"
    )


@pytest.mark.parametrize("content", ["", "text\n"])
def test_a_file_without_rows_is_said_to_hold_none(bert_dir, tmp_path, content):
    source = tmp_path / "in.csv"
    source.write_text(content)
    for out in ([], ["--out", str(tmp_path / "out.jsonl")]):
        result = run_cli("classify", "--file", str(source), *out, "--model", str(bert_dir))
        assert result.returncode == 0 and f"warning: {source} holds no rows to classify" in result.stderr.decode()
    assert (tmp_path / "out.jsonl").read_text() == ""


def test_models_lists_the_builtin_model():
    result = run_cli("models")
    assert result.returncode == 0
    assert "sst2-minilm-l6" in result.stdout.decode()


def test_backends_lists_torch_as_runnable():
    result = run_cli("backends")
    assert result.returncode == 0
    line = next(line for line in _lines(result) if "torch" in line and "cuda" in line)
    assert "yes" in line and "ready" in line


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_jsonl_columns_come_from_every_record_of_the_first_chunk(bert_dir, tmp_path, suffix):
    """A malformed first line (an error row, no input fields) or a key only later records have must not cost
    the output its columns."""
    import pyarrow.parquet as pq

    source = tmp_path / "in.jsonl"
    source.write_text('{broken\n{"text": "good film", "id": 1}\n{"text": "bad cake", "id": 2, "lang": "en"}\n')
    out = tmp_path / f"out{suffix}"
    run_cli("classify", "-f", str(source), "-o", str(out), "-m", str(bert_dir))
    rows = pq.read_table(out).to_pylist() if suffix == ".parquet" else list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0])[:4] == ["line", "text", "id", "lang"] and list(rows[0])[4] == "label"
    assert [r["text"] for r in rows[1:]] == ["good film", "bad cake"] and str(rows[2]["lang"]) == "en"
    assert rows[0]["error"].startswith("malformed JSON")
    late = tmp_path / "late.jsonl"  # a key first seen in the second chunk: the file's columns are set by then
    late.write_text('{"text": "good film"}\n{"text": "bad cake"}\n{"text": "fine", "lang": "en"}\n')
    result = run_cli("classify", "-f", str(late), "-o", str(tmp_path / f"late{suffix}"), "--chunk-rows", "2",
                     "-m", str(bert_dir))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert "warning: line 3: 'lang' is not among the output's columns" in result.stderr.decode()
    assert result.stderr.decode().count("'lang'") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["I like cheese", "--column", "review"],
            "error: --column names the text column of .csv, .tsv, .jsonl or .parquet files\n",
        ),
        (
            ["--file", "{txt}", "--column", "review"],
            "error: --column names the text column of .csv, .tsv, .jsonl or .parquet files; {txt} is plain text",
        ),
        (["--file", "{txt}", "--json", "--out", "{out}"], "error: --json is for the console"),
        (["--file", "{txt}", "--num-workers", "3"], "error: --address, --out-format and --num-workers belong to"),
        (
            ["I like cheese", "--stride", "8"],
            "error: stride and aggregate (--stride, --aggregate) shape the windows of long_text 'chunk'",
        ),
        (["I like cheese", "--aggregate", "max"], "error: stride and aggregate (--stride, --aggregate) shape"),
    ],
)
def test_options_that_would_be_ignored_are_refused(bert_dir, tmp_path, args, message):
    """An option that does nothing in its context would leave a user believing it did: one line, exit 2."""
    source = tmp_path / "texts.txt"
    source.write_text("I like cheese\n")
    args = [a.format(txt=source, out=tmp_path / "out.csv") for a in args]
    message = message.format(txt=source)
    result = run_cli("classify", *args, "--model", str(bert_dir))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith(message) and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "out.csv").exists()


def test_explain_reports_where_and_in_what_precision_the_operations_run(bert_dir):
    """`explain` reads the loaded runtime itself: ONNX Runtime's providers and the int8 file's operators;
    OpenVINO's precision as a plain name ("f32", "bf16"), and its matmuls in that precision."""
    from fastsentiment.backends.base import cpu_computes_bf16

    onnx = run_cli("explain", "-m", str(bert_dir), "--backend", "onnx", "-p", "int8", "--json")
    assert onnx.returncode == 0, onnx.stderr.decode()
    report = json.loads(onnx.stdout)
    assert (report["backend"], report["precision"]) == ("onnx", "int8")
    assert report["nodes per execution provider"].keys() == {"CPUExecutionProvider"}
    assert report["operators"]["MatMulNBits @ CPUExecutionProvider"] > 0  # the block-wise int8 weights
    torch_int8 = json.loads(run_cli("explain", "-m", str(bert_dir), "-b", "torch", "-p", "int8", "--json").stdout)
    # the tiny BERT's 2 layers: q, k, v, attention output and FFN up-projection each (its down-projections stay
    # fp32), then the pooler and classifier: each quantised layer counted once, not with its packed weights
    assert torch_int8["dynamically quantised modules"] == 2 * 5 + 2
    precision = "bf16" if cpu_computes_bf16() else "fp32"
    openvino = run_cli("explain", "-m", str(bert_dir), "--backend", "openvino", "-p", precision, "--json")
    assert openvino.returncode == 0, openvino.stderr.decode()
    report = json.loads(openvino.stdout)
    assert report["precision"] == precision
    hint = {"bf16": "bf16", "fp32": "f32"}[precision]
    assert report["inference precision hint"] == hint
    assert report["operations (type, runtime precision)"].get(f"FullyConnected {hint}", 0) > 0


def test_explain_says_what_auto_with_a_precision_stood_for(bert_dir, tmp_path):
    """`-b auto:fp32` and `-b auto -p fp32` said nothing of why that backend ran (plain auto did)."""
    from fastsentiment.backends.base import cpu_computes_bf16, cpu_computes_int8

    env = {"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}  # nothing measured: the first backend with fp32
    # unless the interim choice is fp32 itself (ONNX Runtime on an x86 CPU without int8 dot products or bf16)
    why = "the first backend with fp32; none measured with it: fastsentiment tune"
    if not cpu_computes_int8() and not cpu_computes_bf16():
        why = "interim: this CPU has no int8 dot-product instruction"
    for options in (["-b", "auto:fp32"], ["-b", "auto", "-p", "fp32"]):
        result = run_cli("explain", "-m", str(bert_dir), *options, "--json", env=env)
        assert result.returncode == 0, result.stderr.decode()
        report = json.loads(result.stdout)
        assert report["auto"].startswith(f"{report['backend']}:fp32 ({why}"), report["auto"]


def test_explain_reports_the_auto_of_the_workload_asked_for(bert_dir, tmp_path, monkeypatch):
    """`explain` loaded and named `auto`'s throughput choice only, while `classify "a text"` runs the start one."""
    from fastsentiment.backends.auto import choose
    from fastsentiment.models import resolve_model

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    for workload in ("throughput", "latency", "start", "serve"):
        result = run_cli("explain", "-m", str(bert_dir), "--workload", workload, "--json")
        assert result.returncode == 0, result.stderr.decode()
        report = json.loads(result.stdout)
        expected = choose(resolve_model(str(bert_dir)), "auto", workload)
        assert report["auto"] == f"{expected.config} ({expected.reason})"
        assert f"{report['backend']}:{report['precision']}" == expected.config
        assert report["workload"].startswith(f"{workload} (")
    result = run_cli("explain", "-m", str(bert_dir), "--workload", "fastest")
    assert (result.returncode, result.stderr.decode()) == (
        2,
        "error: --workload must be one of throughput, latency, start, serve, got 'fastest'\n",
    )


def test_explain_profiles_a_model_of_a_small_vocabulary(tmp_path):
    """ONNX Runtime's profile ran token 101 (BERT's [CLS]): a vocabulary of fewer tokens was a traceback."""
    from tiny_models import build_model

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]) + "\n")
    model = build_model(tmp_path / "small", "bert", vocab=vocab)
    result = run_cli("explain", "-m", str(model), "-b", "onnx", "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["nodes per execution provider"].keys() == {"CPUExecutionProvider"}


def test_a_model_of_fewer_than_eight_positions_exports_and_explains(tmp_path):
    """The ONNX export traced, and `explain` profiled, eight tokens: a model with fewer positions was a traceback."""
    from tiny_models import build_model

    model = build_model(tmp_path / "short", "bert", max_positions=6)
    env = {"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    for backend in ("onnx", "openvino"):
        result = run_cli("explain", "-m", str(model), "-b", backend, "-p", "fp32", "--json", env=env)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert json.loads(result.stdout)["backend"] == backend


def test_jsonl_records_without_a_text_field_name_the_fields_looked_for_and_the_option(bert_dir, tmp_path):
    source = tmp_path / "reviews.jsonl"
    source.write_text('{"review": "good film", "label": 1}\n{"text": "bad film", "label": 0}\n')
    result = run_cli("classify", "--file", str(source), "-m", str(bert_dir), "-b", "onnx", "--json")
    assert result.returncode == 2
    first, second = (json.loads(line) for line in result.stdout.decode().splitlines())
    assert first["error"] == "no 'sentence' or 'text' field (name the text field with --column)" and second["label"]
    result = run_cli("evaluate", str(source), "-m", str(bert_dir), "-b", "onnx")
    assert result.returncode == 2 and result.stderr.decode() == (
        f"error: {source}, line 1: no 'sentence' or 'text' field (name the text field with --text-column)\n"
    )


def test_console_output_is_one_line_per_input_with_errors_in_their_place(bert_dir, tmp_path):
    """A text with a line break printed two lines and an error row none, so stdout did not match the inputs."""
    source = tmp_path / "in.csv"
    source.write_bytes(b'id,text\n1,"good\nfilm"\n2,\n3,bad\tcake\r\n4,b\xffd\n5,I like cheese\n')
    result = run_cli("classify", "-f", str(source), "-m", str(bert_dir))
    assert result.returncode == 2
    lines = _lines(result)
    assert len(lines) == 5
    assert [line.split(maxsplit=2)[2] for line in (lines[0], lines[2], lines[4])] == [
        "good\\nfilm",
        "bad\\tcake",
        "I like cheese",
    ]
    assert lines[1] == "ERROR     line 4: empty text" and lines[3] == "ERROR     line 6: not valid UTF-8"
    arguments = run_cli("classify", "good", " ", "two\nlines", "\x1b[31mred\x1b[0m ok\x07", "-m", str(bert_dir))
    assert _lines(arguments)[1] == "ERROR     input 2: empty text"
    assert _lines(arguments)[2].endswith("  two\\nlines") and len(_lines(arguments)) == 4
    # a terminal's escape sequences and bell in a text are shown, not acted on
    assert _lines(arguments)[3].endswith("  \\x1b[31mred\\x1b[0m ok\\x07")


def test_a_pipe_is_read_once_as_stdin_is(bert_dir, tmp_path):
    """`--file <(cmd)` and `--file /dev/stdin` were 'input file not found'."""
    piped = run_cli("classify", "--file", "/dev/stdin", "-m", str(bert_dir), input="good film\nbad cake\n")
    assert piped.returncode == 0, piped.stderr.decode()
    assert [line.split(maxsplit=2)[2] for line in _lines(piped)] == ["good film", "bad cake"]

    fifo = tmp_path / "rows.csv"  # a named pipe: its extension gives the format, and the header is read once
    os.mkfifo(fifo)
    out = tmp_path / "out.csv"
    writer = threading.Thread(target=fifo.write_text, args=("id,text\n7,good film\n8,bad cake\n",))
    writer.start()
    try:
        result = run_cli("classify", "--file", str(fifo), "--out", str(out), "-m", str(bert_dir), timeout=120)
    finally:
        if writer.is_alive():  # the command failed before it opened the pipe: let the writer finish
            with open(fifo, "rb") as unblock:
                unblock.read()
        writer.join()
    assert result.returncode == 0, result.stderr.decode()
    assert [(row["line"], row["id"], row["text"]) for row in csv.DictReader(out.open(encoding="utf-8"))] == [
        ("2", "7", "good film"),
        ("3", "8", "bad cake"),
    ]

    refused = run_cli("classify", "--file", str(fifo), "--out", str(out), "--resume", "-m", str(bert_dir))
    assert refused.returncode == 2
    assert refused.stderr.decode() == (
        "error: --resume continues a --file run written with --out; a pipe cannot be read again\n"
    )


def test_resume_with_texts_given_as_arguments_says_they_are_not_a_file(tmp_path):
    """Texts given as arguments were a job reading stdin: --resume said "stdin cannot be read again"."""
    result = run_cli("classify", "good film", "--out", str(tmp_path / "scored.csv"), "--resume")
    assert (result.returncode, result.stderr.decode()) == (
        2,
        "error: --resume continues a --file run written with --out, not texts given as arguments\n",
    )


def test_a_tilde_the_shell_left_alone_is_the_home_folder_in_every_path_option(bert_dir, tmp_path):
    """`--out=~/x.csv` (no shell expands a tilde after `=`) or a quoted '~/...' made a folder named `~` in the working
    one, an `rm -rf ~` away from the home folder's end; as an input it was "not found". `--model` expanded it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "in.txt").write_text("good film\nbad cake\n")
    env = {"HOME": str(home)}
    result = run_cli("classify", "--file=~/in.txt", "--out=~/out.csv", "-m", str(bert_dir), *PINNED_FP32, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert len((home / "out.csv").read_text().splitlines()) == 3 and not (ROOT / "~").exists()  # commands run in ROOT
    result = run_cli("evaluate", "~/missing.tsv", "-m", str(bert_dir), env=env)
    assert result.stderr.decode() == f"error: input file not found: {home / 'missing.tsv'}\n"
