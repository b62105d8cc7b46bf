"""`classify --file` streaming: every format in and out, and --resume after a kill, on real files and processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import PINNED_FP32 as PINNED
from conftest import ROOT, run_cli
from fastsentiment import Classifier

WORDS = "good bad great awful fine boring lovely dull superb terrible moving flat".split()


def sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 9))


def write_csv(path: Path, rows: int, empty_every: int = 0) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "text", "label"])
        for i in range(rows):
            writer.writerow([i, "" if empty_every and i % empty_every == 5 else sentence(i), i % 2])
    return path


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream, delimiter="\t" if path.suffix == ".tsv" else ","))


@pytest.fixture(scope="module")
def classifier(bert_dir) -> Classifier:
    return Classifier.load(bert_dir, backend="onnx", precision="fp32")


def test_parquet_in_parquet_out_keeps_columns_types_and_order(bert_dir, classifier, tmp_path):
    texts = [sentence(i) for i in range(300)]
    texts[17] = ""
    texts[42] = None
    table = pa.table(
        {"id": pa.array(range(1000, 1300), pa.int64()), "text": texts, "weight": [i / 4 for i in range(300)]}
    )
    source = tmp_path / "reviews.parquet"
    pq.write_table(table, source, row_group_size=64)
    out = tmp_path / "scored.parquet"
    result = run_cli(
        "classify", "--file", str(source), "--out", str(out), "--model", str(bert_dir), "--chunk-rows", "50", *PINNED
    )
    assert result.returncode == 2  # two rows could not be classified
    assert b"line 18: empty text" in result.stderr and b"line 43: empty text" in result.stderr
    scored = pq.read_table(out)
    assert scored.schema.field("id").type == pa.int64() and scored.schema.field("weight").type == pa.float64()
    assert scored.column_names == [
        "line",
        "id",
        "text",
        "weight",
        "label",
        "score",
        *(f"score_{label}" for label in classifier.labels),
        "error",
    ]
    rows = scored.to_pylist()
    assert [row["id"] for row in rows] == list(range(1000, 1300))
    assert [row["error"] for row in rows if row["error"]] == ["empty text", "empty text"]
    good = [row for row in rows if row["error"] is None]
    expected = classifier.predict([row["text"] for row in good])
    assert [row["label"] for row in good] == [p.label for p in expected]
    assert max(abs(row["score"] - p.score) for row, p in zip(good, expected, strict=True)) < 1e-5


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_output_format_holds_every_row_in_order(bert_dir, classifier, tmp_path, suffix):
    source = write_csv(tmp_path / "in.csv", 700, empty_every=100)
    out = tmp_path / f"out{suffix}"
    result = run_cli(
        "classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "128", *PINNED
    )
    assert result.returncode == 2, result.stderr  # 7 empty rows
    rows = read_output(out)
    assert [int(row["id"]) for row in rows] == list(range(700))
    assert [str(row["input_label"]) for row in rows] == [str(i % 2) for i in range(700)]  # input column kept
    errors = [int(row["id"]) for row in rows if row["error"]]
    assert errors == [i for i in range(700) if i % 100 == 5]
    good = [row for row in rows if not row["error"]]
    assert [row["label"] for row in good] == [p.label for p in classifier.predict([row["text"] for row in good])]
    assert not out.with_name(out.name + ".partial").exists()


# ---- --resume ---------------------------------------------------------------------------------
def start_and_kill_after_parts(args: list[str], journal: Path, parts: int) -> None:
    """Start the real command and SIGKILL it once its journal records `parts` finished chunks."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    manifest = journal / "manifest.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail("the run finished before it could be interrupted; make the input larger")
            try:
                if len(json.loads(manifest.read_text())["parts"]) >= parts:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_resume_after_kill_loses_and_repeats_no_row(bert_dir, tmp_path, suffix):
    rows = 12_000
    source = write_csv(tmp_path / "in.csv", rows, empty_every=1000)
    if suffix == ".parquet":  # Parquet input resumes by row count, across row-group boundaries
        parquet = tmp_path / "in.parquet"
        with open(source, newline="") as stream:
            pq.write_table(pa.Table.from_pylist(list(csv.DictReader(stream))), parquet, row_group_size=777)
        source = parquet
    out = tmp_path / f"out{suffix}"
    journal = tmp_path / f"out{suffix}.partial"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "300"]
    start_and_kill_after_parts(args, journal, parts=3)
    assert journal.is_dir() and not out.exists()
    done_before = json.loads((journal / "manifest.json").read_text())["rows"]
    assert 900 <= done_before < rows

    refused = run_cli(*args)
    assert refused.returncode == 2 and b"--resume" in refused.stderr

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 2, resumed.stderr  # 12 empty rows
    assert f"resuming after {done_before} rows".encode() in resumed.stderr
    assert not journal.exists()
    ids = [int(row["id"]) for row in read_output(out)]
    assert ids == list(range(rows))

    fresh = tmp_path / f"fresh{suffix}"
    run_cli("classify", "-f", str(source), "-o", str(fresh), "--model", str(bert_dir))
    assert [r["label"] for r in read_output(out)] == [r["label"] for r in read_output(fresh)]


def test_resume_drops_a_part_written_after_the_last_manifest(bert_dir, tmp_path):
    """A kill between a part's rename and the manifest's leaves a part the manifest does not count."""
    source = write_csv(tmp_path / "in.csv", 12_000)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "300"]
    start_and_kill_after_parts(args, journal, parts=2)
    manifest = json.loads((journal / "manifest.json").read_text())
    last = journal / manifest["parts"][-1]
    (journal / f"part-{len(manifest['parts']):06d}.jsonl").write_bytes(last.read_bytes())  # the uncounted part
    assert run_cli(*args, "--resume").returncode == 0
    assert [row["id"] for row in read_output(out)] == [str(i) for i in range(12_000)]


def test_resume_refuses_an_input_that_changed(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 12_000)
    out = tmp_path / "out.csv"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "300"]
    start_and_kill_after_parts(args, tmp_path / "out.csv.partial", parts=2)
    with open(source, "a", encoding="utf-8") as stream:
        stream.write("12000,one more row,1\n")
    result = run_cli(*args, "--resume")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].startswith("error: cannot resume")
    assert b"input_size" in result.stderr and b"Traceback" not in result.stderr


def test_resume_refuses_other_scoring_settings(bert_dir, tmp_path):
    """Parts cut at 64 tokens and parts cut at 16, or computed in int8 and fp32, must not end up in one file."""
    source = write_csv(tmp_path / "in.csv", 12_000)
    out = tmp_path / "out.csv"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "300"]
    start_and_kill_after_parts([*args, "--backend", "onnx"], tmp_path / "out.csv.partial", parts=2)
    for changed, key in ((["--max-length", "16"], b"max_length"), (["--precision", "fp32"], b"precision")):
        result = run_cli(*args, "--backend", "onnx", *changed, "--resume")
        assert result.returncode == 2 and key in result.stderr and b"Traceback" not in result.stderr, (
            changed,
            result.stderr[-500:],
        )
    assert run_cli(*args, "--backend", "onnx", "--resume").returncode == 0


def test_resume_needs_an_output_file(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 10)
    result = run_cli("classify", "-f", str(source), "--resume", "--model", str(bert_dir))
    assert result.returncode == 2 and b"--resume continues a --file run written with --out" in result.stderr


def test_unknown_output_extension_fails_before_loading(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 10)
    result = run_cli("classify", "-f", str(source), "-o", str(tmp_path / "out.xlsx"), "--model", str(bert_dir))
    assert result.returncode == 2
    assert (
        result.stderr.decode().strip() == f"error: --out {tmp_path / 'out.xlsx'}: write .csv, .tsv, .jsonl or .parquet"
    )


def test_jsonl_values_that_change_type_cannot_go_to_parquet_and_leave_nothing_behind(bert_dir, tmp_path):
    source = tmp_path / "mixed.jsonl"
    source.write_text('{"text": "great film", "n": 1}\n{"text": "awful", "n": "x"}\n', encoding="utf-8")
    out = tmp_path / "out.parquet"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "1")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].startswith("error: rows 2-2 do not fit the Parquet columns")
    assert not out.exists() and not (tmp_path / "out.parquet.partial").exists()
    assert (
        run_cli("classify", "-f", str(source), "-o", str(tmp_path / "out.jsonl"), "--model", str(bert_dir)).returncode
        == 0
    )


def test_stdin_lines_to_an_output_file(bert_dir, classifier, tmp_path):
    out = tmp_path / "from-stdin.csv"
    result = run_cli(
        "classify", "--out", str(out), "--model", str(bert_dir), *PINNED, input="good film\n\nawful plot\n"
    )
    assert result.returncode == 2 and b"line 2: empty text" in result.stderr
    rows = read_output(out)
    assert [row["text"] for row in rows] == ["good film", "", "awful plot"]
    assert [row["label"] for row in rows if row["text"]] == [
        p.label for p in classifier.predict(["good film", "awful plot"])
    ]


def test_texts_given_as_arguments_to_an_output_file(bert_dir, tmp_path):
    out = tmp_path / "args.jsonl"
    result = run_cli("classify", "good film", "awful plot", "--out", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr
    assert [row["text"] for row in read_output(out)] == ["good film", "awful plot"]
    assert not (tmp_path / "args.jsonl.partial").exists()


@pytest.mark.parametrize(
    ("hidden", "args", "message"),
    [
        ("pyarrow", ["-o", "{tmp}/out.parquet"], "writing Parquet files needs the Python package 'pyarrow'"),
        ("ray", ["--engine", "ray", "-o", "{tmp}/folder"], "--engine ray needs the Python package 'ray'"),
    ],
)
def test_a_missing_optional_package_names_the_extra(bert_dir, tmp_path, hidden, args, message):
    """Run the real command with the package made unimportable (a stub that raises ImportError first on the path)."""
    stubs = tmp_path / "stubs" / hidden
    stubs.mkdir(parents=True)
    (stubs / "__init__.py").write_text(f"raise ImportError('{hidden} hidden by the test')\n")
    source = write_csv(tmp_path / "in.csv", 5)
    command = ["classify", "-f", str(source), "--model", str(bert_dir), *(a.format(tmp=tmp_path) for a in args)]
    result = run_cli(*command, env={"PYTHONPATH": str(tmp_path / "stubs")})
    assert result.returncode == 2, result.stderr
    line = result.stderr.decode().strip().splitlines()[-1]
    assert line.startswith(f"error: {message}") and "pip install 'fastsentiment[" in line, line


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_an_empty_input_gives_an_empty_but_valid_output(bert_dir, tmp_path, suffix):
    source = tmp_path / "in.txt"
    source.write_bytes(b"")
    out = tmp_path / f"out{suffix}"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert read_output(out) == []
    if suffix == ".parquet":
        assert "label" in pq.read_schema(out).names
