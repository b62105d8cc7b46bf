"""`classify --file` streaming: every format in and out, and --resume after a kill, on real files and processes."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import PINNED_FP32 as PINNED
from conftest import ROOT, run_cli
from fastsentiment import Classifier
from fastsentiment.errors import InputError
from fastsentiment.jobs.journal import ChunkJournal
from fastsentiment.jobs.rows import RowSource, clean_fields
from fastsentiment.jobs.sinks import OutputColumns, SchemaMismatch

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
        if path.suffix == ".tsv":  # as the tool reads and writes TSV: GLUE style, no quoting
            return list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
        return list(csv.DictReader(stream))


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
def start_and_kill_after_parts(
    args: list[str], journal: Path, parts: int, how: signal.Signals = signal.SIGKILL, stdin=None
) -> subprocess.CompletedProcess:
    """Start the real command and send it `how` once its journal records `parts` finished chunks."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", *args],
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        # pytest-xdist's workers ignore SIGINT, and a child inherits that (Python then installs no KeyboardInterrupt
        # handler): give it a terminal's default, as a user's shell does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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
        process.send_signal(how)
    finally:
        _, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, b"", stderr)


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
    assert resumed.returncode == 2, resumed.stderr  # 12 empty rows, some of them in the interrupted run
    assert f"12 inputs could not be classified (their rows in {out} have an error)".encode() in resumed.stderr
    assert f"resuming after {done_before} rows".encode() in resumed.stderr
    assert not journal.exists()
    ids = [int(row["id"]) for row in read_output(out)]
    assert ids == list(range(rows))

    fresh = tmp_path / f"fresh{suffix}"
    run_cli("classify", "-f", str(source), "-o", str(fresh), "--model", str(bert_dir))
    assert [r["label"] for r in read_output(out)] == [r["label"] for r in read_output(fresh)]


def test_a_second_run_on_an_output_being_written_is_refused_and_the_first_finishes_whole(bert_dir, tmp_path):
    """Nothing stopped a --resume started while the first run still wrote the output: both wrote the same parts,
    and one removed the other's files (the second died on a vanished manifest.json.tmp)."""
    rows = 3_000  # in chunks of 20, each made durable: the run is still writing when it is paused
    source = write_csv(tmp_path / "in.csv", rows)
    out, journal = tmp_path / "out.csv", tmp_path / "out.csv.partial"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "-b", "onnx", "--chunk-rows", "20"]
    first = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while not (journal / "part-000000.csv").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended before it was checked"
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # paused while it holds the output, as a slow run would be
        busy = f"error: another run is writing {out} (out.csv.partial/ is locked): wait for it to end, or stop it\n"
        for more in (["--resume"], []):
            second = run_cli(*args, *more)
            assert (second.returncode, second.stderr.decode()) == (2, busy)
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, stderr.decode()[-2000:]
    assert not journal.exists() and [int(row["id"]) for row in read_output(out)] == list(range(rows))


def test_a_journal_is_held_by_one_writer_in_a_process_too_and_let_go_however_its_run_ends(tmp_path):
    """The lock was a process's (lockf): a second journal on the same output in one process (the Python API run
    twice) took it too; and a journal refused while it started kept it, so the run that followed was told that
    another was writing."""
    out, columns = tmp_path / "out.csv", OutputColumns(["NEGATIVE", "POSITIVE"])
    record = [{"line": 1, "text": "t", "label": "POSITIVE", "error": None}]
    first = ChunkJournal(out, {"input": "test"}, resume=False, columns=columns)
    first.commit(record, {"offset": 1, "lines": 1}, failed=0)
    busy = f"another run is writing {out} \\(out.csv.partial/ is locked\\)"
    for resume in (True, False):
        with pytest.raises(InputError, match=busy):
            ChunkJournal(out, {"input": "test"}, resume=resume, columns=columns)
    first.release()
    with pytest.raises(InputError, match="holds an interrupted run"):  # refused after taking the lock
        ChunkJournal(out, {"input": "test"}, resume=False, columns=columns)
    with pytest.raises(InputError, match="changed since the interrupted run"):
        ChunkJournal(out, {"input": "other"}, resume=True, columns=columns)
    resumed = ChunkJournal(out, {"input": "test"}, resume=True, columns=columns)
    assert resumed.rows == 1 and sorted(path.name for path in tmp_path.iterdir()) == ["out.csv.partial"]
    resumed.finish()
    assert read_output(out)[0]["label"] == "POSITIVE" and not (tmp_path / "out.csv.partial").exists()


def test_an_interrupted_run_is_refused_before_the_model_loads(tmp_path):
    """Without --resume a leftover journal was refused after the model had loaded (a first run on a machine may
    export and measure for minutes): here the model does not even exist, and the journal is what is said."""
    out, columns = tmp_path / "out.csv", OutputColumns(["NEGATIVE", "POSITIVE"])
    source = write_csv(tmp_path / "in.csv", 3)
    left = ChunkJournal(out, {"input": "test"}, resume=False, columns=columns)
    left.commit([{"line": 1, "text": "t", "label": "POSITIVE", "error": None}], {"offset": 1, "lines": 1}, failed=0)
    left.release()
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(tmp_path / "no-model"))
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {out}.partial holds an interrupted run: delete the folder, or continue it with --resume (a --file "
        "run)\n",
    )


def test_a_journal_sweeps_the_folders_of_runs_killed_before_theirs_was_in_place(tmp_path):
    """A journal is made under a name of its own and renamed into place; a run killed in between left that folder
    (hidden, a lock file and a manifest in it) beside the output for ever, one per kill."""
    out, columns = tmp_path / "out.csv", OutputColumns(["NEGATIVE", "POSITIVE"])
    killed, live, other = (
        tmp_path / name
        for name in (".out.csv.partial-4242-0badf00d", ".out.csv.partial-77-12345678", ".out.csv.partial-notes")
    )
    for folder in (killed, live, other):
        folder.mkdir()
        (folder / ".lock").touch()
        (folder / "manifest.json").write_text("{}")
    with open(live / ".lock", "a+b") as held:  # another run, still between its mkdir and its rename
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        journal = ChunkJournal(out, {"input": "test"}, resume=False, columns=columns)
        journal.release()
    assert not killed.exists() and live.exists() and other.exists()
    assert (tmp_path / "out.csv.partial" / "manifest.json").exists()


def test_ctrl_c_exits_130_and_says_how_to_continue(bert_dir, tmp_path):
    rows = 12_000  # in chunks of 20, each made durable: seconds of work, so the signal comes mid-job on a busy machine
    source = write_csv(tmp_path / "in.csv", rows)
    out, journal = tmp_path / "out.csv", tmp_path / "out.csv.partial"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "20"]
    interrupted = start_and_kill_after_parts(args, journal, parts=2, how=signal.SIGINT)
    assert interrupted.returncode == 130, interrupted.stderr
    done = json.loads((journal / "manifest.json").read_text())["rows"]
    assert f"interrupted after {done} rows".encode() in interrupted.stderr
    assert b"--resume" in interrupted.stderr and b"Traceback" not in interrupted.stderr

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [int(row["id"]) for row in read_output(out)] == list(range(rows))

    finished = out.read_bytes()
    again = run_cli(*args, "--resume")  # nothing left to continue: said, and the output kept as it is
    assert again.returncode == 2 and again.stderr.decode().strip() == (
        f"error: --resume: {out} is complete (no out.csv.partial/ to continue); run without --resume to write it again"
    )
    assert out.read_bytes() == finished


def test_a_second_ctrl_c_during_the_first_ones_clean_up_still_exits_130(bert_dir, tmp_path):
    """A quick double Ctrl+C (or `timeout -s INT`, which signals the process and its group) broke into the join of the
    model calls in flight as the interpreter ended: the process aborted (SIGABRT, 'terminate called without an active
    exception') on a backend that runs calls side by side, which OpenVINO's streams do on two CPUs or more."""
    pytest.importorskip("openvino")
    source = write_csv(tmp_path / "in.csv", 60_000)  # seconds of work: the signals come mid-job on a fast machine
    out, journal = tmp_path / "out.csv", tmp_path / "out.csv.partial"
    every_cpu = range(os.cpu_count() or 1)  # this worker is pinned to its share, where one stream is all there is

    def child_setup():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a terminal's default (pytest-xdist's workers ignore SIGINT)
        os.sched_setaffinity(0, every_cpu)

    for attempt in range(3):  # the second signal must land in the clean-up: a race, won most times without the fix
        shutil.rmtree(journal, ignore_errors=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "fastsentiment", "classify", "-f", str(source), "-o", str(out), "--model",
             str(bert_dir), "--backend", "openvino", "--chunk-rows", "200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            preexec_fn=child_setup,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not (journal / "manifest.json").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # among the model calls
        process.send_signal(signal.SIGINT)
        time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, (attempt, stderr.decode()[-2000:])
        assert b"Traceback" not in stderr and b"terminate called" not in stderr, stderr.decode()[-2000:]


def test_a_stdin_job_that_fails_after_its_first_part_leaves_nothing_that_asks_for_resume(bert_dir, tmp_path):
    """A pipe's run cannot be resumed, so a failure after its first part (here the file-size limit) left a journal that
    refused every later run on that output as an interrupted run to delete by hand."""
    import resource

    out = tmp_path / "out.csv"
    lines = "".join(f"{sentence(i)}\n" for i in range(10)) + "x " * 100_000 + "\n"  # the 11th row: 200 kB of text
    process = subprocess.run(
        [sys.executable, "-m", "fastsentiment", "classify", "-o", str(out), "--model", str(bert_dir), *PINNED,
         "--chunk-rows", "10"],
        input=lines.encode(), capture_output=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)),
    )  # fmt: skip
    assert process.returncode == 1 and b"File too large" in process.stderr, process.stderr.decode()
    assert not (tmp_path / "out.csv.partial").exists()


def test_ctrl_c_on_stdin_leaves_nothing_that_asks_for_resume(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 12_000)
    out, journal = tmp_path / "out.csv", tmp_path / "out.csv.partial"
    args = ["classify", "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "20"]
    with open(source, "rb") as stdin:
        interrupted = start_and_kill_after_parts(args, journal, parts=2, how=signal.SIGINT, stdin=stdin)
    assert interrupted.returncode == 130, interrupted.stderr
    assert not journal.exists() and not out.exists()
    assert b"--resume" not in interrupted.stderr

    with open(source, "rb") as stdin:  # killed, it cannot clean up: the next run says what to do
        start_and_kill_after_parts(args, journal, parts=2, stdin=stdin)
    with open(source, "rb") as stdin:
        again = subprocess.run(
            [sys.executable, "-m", "fastsentiment", *args], stdin=stdin, capture_output=True, cwd=ROOT, check=False
        )
    assert again.returncode == 2
    assert again.stderr.decode().strip() == (
        f"error: {journal} holds an interrupted run: delete the folder (stdin cannot be read again to continue it)"
    )


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


def test_a_resumed_auto_run_continues_on_the_path_the_interrupted_run_took(bert_dir, tmp_path):
    """Without --backend, a resume chose `auto`'s path anew (measuring first, for a large file) and was then
    refused because that path differed from the one the parts were computed on."""
    source = write_csv(tmp_path / "in.csv", 12_000)
    out = tmp_path / "out.csv"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "300"]
    start_and_kill_after_parts([*args, "-b", "onnx", "-p", "fp32"], tmp_path / "out.csv.partial", parts=2)
    refused = run_cli(*args, "-p", "int8", "--resume")  # a precision given that differs is still a change
    assert refused.returncode == 2 and b"precision" in refused.stderr, refused.stderr[-2000:]
    result = run_cli(*args, "--resume", env={"FASTSENTIMENT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"measuring" not in result.stderr
    assert [row["id"] for row in read_output(out)] == [str(i) for i in range(12_000)]


def test_resume_needs_an_output_file(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 10)
    result = run_cli("classify", "-f", str(source), "--resume", "--model", str(bert_dir))
    assert result.returncode == 2 and b"--resume continues a --file run written with --out" in result.stderr


def test_unknown_output_extension_fails_before_loading(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 10)
    result = run_cli("classify", "-f", str(source), "-o", str(tmp_path / "out.xlsx"), "--model", str(bert_dir))
    assert result.returncode == 2
    assert (
        result.stderr.decode().strip()
        == f"error: --out {tmp_path / 'out.xlsx'}: write .csv, .tsv, .jsonl (or .json) or .parquet"
    )


def test_a_ray_output_folder_inside_its_input_folder_is_taken(tmp_path):
    """Only the input folder's own files are read, so a new folder inside it is neither input nor overwritten."""
    from fastsentiment.jobs.job import FileJob

    (tmp_path / "a.txt").write_text("good\n")
    FileJob(source=str(tmp_path), out=tmp_path / "scored", engine="ray").check()


def test_a_ray_output_folder_named_json_holds_json_lines_and_one_named_tsv_is_refused(tmp_path):
    """`--out scored.json` (JSON lines for the local engine) and `--out scored.tsv` were both filled with Parquet
    files without a word."""
    from fastsentiment.errors import InputError
    from fastsentiment.jobs.job import FileJob

    (tmp_path / "a.txt").write_text("good\n")
    assert FileJob(source=str(tmp_path / "a.txt"), out=tmp_path / "scored.json", engine="ray").ray_output_format == (
        "jsonl"
    )
    with pytest.raises(InputError, match=r"scored\.tsv: --engine ray writes parquet, csv or jsonl files"):
        FileJob(source=str(tmp_path / "a.txt"), out=tmp_path / "scored.tsv", engine="ray").check()
    tsv_as_csv = FileJob(source=str(tmp_path / "a.txt"), out=tmp_path / "scored.tsv", engine="ray", out_format="csv")
    tsv_as_csv.check()  # the format named outright wins over the folder's name
    assert tsv_as_csv.ray_output_format == "csv"


def test_stdin_named_as_a_file_or_closed(bert_dir, tmp_path):
    """`--file /dev/stdin < rows.txt` was refused for want of an extension (stdin is then the file itself, not a
    pipe); a command started with stdin closed (`<&-`) ended in a traceback."""
    rows = tmp_path / "rows.txt"
    rows.write_text("I like cheese\nawful film\n", encoding="utf-8")
    command = [sys.executable, "-m", "fastsentiment", "classify", "--model", str(bert_dir), "-b", "onnx"]
    with open(rows, "rb") as stdin:
        named = subprocess.run([*command, "-f", "/dev/stdin", "--json"], stdin=stdin, capture_output=True, cwd=ROOT)
    assert named.returncode == 0, named.stderr.decode()[-2000:]
    assert [json.loads(line)["text"] for line in named.stdout.decode().splitlines()] == ["I like cheese", "awful film"]
    for more in ([], ["-f", "-"]):
        closed = subprocess.run(
            ["bash", "-c", '"$@" <&-', "bash", *command, *more], capture_output=True, cwd=ROOT, timeout=300
        )
        assert (closed.returncode, closed.stderr.decode()) == (
            2,
            "error: stdin is closed: give texts as arguments, or a --file\n",
        )
    # texts given as arguments do not read stdin: closed, it is no reason to refuse them
    given = subprocess.run(
        ["bash", "-c", '"$@" <&-', "bash", *command, "--json", "good film"], capture_output=True, cwd=ROOT, timeout=300
    )
    assert given.returncode == 0 and json.loads(given.stdout)["text"] == "good film", given.stderr.decode()[-2000:]


@pytest.mark.parametrize("written_as", ["same path", "link"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(bert_dir, tmp_path, written_as):
    source = write_csv(tmp_path / "in.csv", 10)
    before = source.read_bytes()
    out = source
    if written_as == "link":
        out = tmp_path / "link.csv"
        out.symlink_to(source)
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: --out {out} is the input itself: it would be overwritten; choose another path"
    )
    assert source.read_bytes() == before


@pytest.mark.parametrize("target", ["existing", "not yet written"])
def test_an_output_named_by_a_link_is_written_where_it_points(bert_dir, tmp_path, target):
    """The finished output was moved onto the link's own name, replacing the link and leaving its target stale."""
    source = write_csv(tmp_path / "in.csv", 10)
    results = tmp_path / "results"
    results.mkdir()
    if target == "existing":
        (results / "scores.csv").write_text("stale\n")
    out = tmp_path / "latest.csv"
    out.symlink_to(results / "scores.csv")
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert out.is_symlink() and out.resolve() == results / "scores.csv"
    assert [row["id"] for row in read_output(results / "scores.csv")] == [str(i) for i in range(10)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.csv", "latest.csv", "results"]
    assert [path.name for path in results.iterdir()] == ["scores.csv"]  # no journal left beside either
    # A link to a place nothing can be written in is refused before the model loads, by its target's place (the
    # link's own folder was checked, and the job failed once it wrote).
    stray = tmp_path / "stray.csv"
    stray.symlink_to(source / "x.csv")
    result = run_cli("classify", "-f", str(source), "-o", str(stray), "--model", str(bert_dir))
    assert result.returncode == 2 and result.stderr.decode() == (
        f"error: --out {source / 'x.csv'}: {source} is a file, not a folder\n"
    )


@pytest.mark.parametrize(
    ("chunk_rows", "message"),
    [
        ("1", "rows 2-2: column 'n' holds string values where earlier rows hold int64"),  # across chunks
        ("2048", "rows 1-2: column 'n' holds values that do not fit one Parquet type"),  # within one chunk
    ],
)
def test_jsonl_values_that_change_type_cannot_go_to_parquet_and_leave_nothing_behind(
    bert_dir, tmp_path, chunk_rows, message
):
    source = tmp_path / "mixed.jsonl"
    source.write_text('{"text": "great film", "n": 1}\n{"text": "awful", "n": "x"}\n', encoding="utf-8")
    out = tmp_path / "out.parquet"
    args = ["classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", chunk_rows]
    result = run_cli(*args)
    assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr.decode()
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"error: {message}") and last.endswith("write .jsonl instead"), last
    assert not out.exists() and not (tmp_path / "out.parquet.partial").exists()  # so a rerun is not "interrupted"
    assert run_cli(*args).stderr.decode().strip().splitlines()[-1] == last
    assert (
        run_cli("classify", "-f", str(source), "-o", str(tmp_path / "out.jsonl"), "--model", str(bert_dir)).returncode
        == 0
    )


# ---- what files hold ------------------------------------------------------------------------------
BOM = "\ufeff".encode()  # what Excel's "CSV UTF-8" and Notepad put at the start of a file


@pytest.mark.parametrize(
    ("suffix", "content"),
    [
        (".csv", "sentence,id\ngood film,1\nawful plot,2\n"),
        (".tsv", "sentence\tid\ngood film\t1\nawful plot\t2\n"),
        (".jsonl", '{"text": "good film"}\n{"text": "awful plot"}\n'),
        (".txt", "good film\nawful plot\n"),
    ],
    ids=["csv", "tsv", "jsonl", "txt"],
)
def test_a_byte_order_mark_at_the_start_of_a_file_is_ignored(bert_dir, tmp_path, suffix, content):
    source = tmp_path / f"excel{suffix}"
    source.write_bytes(BOM + content.encode())
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    rows = read_output(out)
    assert [row.get("sentence", row.get("text")) for row in rows] == ["good film", "awful plot"]
    assert all(not row["error"] for row in rows)


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_a_byte_order_mark_keeps_resume_positions_exact(tmp_path, suffix):
    """Positions count the mark's bytes, so a source resumed from one continues at the very next row."""
    header = "text\n" if suffix == ".csv" else ""
    source = tmp_path / f"excel{suffix}"
    source.write_bytes(BOM + (header + "".join(f"review {i}\n" for i in range(5))).encode())
    first = RowSource(source)
    rows = first.rows()
    assert [next(rows).text for _ in range(2)] == ["review 0", "review 1"]
    position = first.position
    assert [row.text for row in RowSource(source).rows(start=position)] == [f"review {i}" for i in range(2, 5)]


def test_parquet_column_null_in_the_first_chunks_takes_its_type_from_later_rows(bert_dir, tmp_path):
    source = tmp_path / "late.parquet"
    counts = pa.array([None] * 2000 + list(range(1000)), pa.int64())
    pq.write_table(pa.table({"text": [sentence(i) for i in range(3000)], "count": counts}), source)
    out = tmp_path / "out.parquet"
    result = run_cli(
        "classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "1000", *PINNED
    )
    assert result.returncode == 0, result.stderr.decode()
    scored = pq.read_table(out)
    assert scored.schema.field("count").type == pa.int64()
    assert scored.column("count").to_pylist() == counts.to_pylist()


def test_parquet_in_parquet_out_keeps_every_input_type_exactly(bert_dir, tmp_path):
    """A Parquet input's schema is the output's for its columns: narrow ints and floats, timestamps, dictionaries and
    decimals, and a float column with no value in its first chunk (its type is known, not guessed from values)."""
    import datetime
    import decimal

    rows = 60
    columns = {
        "text": pa.array([sentence(i) for i in range(rows)]),
        "small": pa.array(range(rows), pa.int16()),
        "ratio": pa.array([i / 4 for i in range(rows)], pa.float32()),
        "at": pa.array(
            [datetime.datetime(2026, 1, 1) + datetime.timedelta(hours=i) for i in range(rows)], pa.timestamp("ms")
        ),
        "genre": pa.array(["drama", "comedy"] * (rows // 2)).dictionary_encode(),
        "price": pa.array([decimal.Decimal(f"{i}.25") for i in range(rows)], pa.decimal128(6, 2)),
        "late": pa.array([None] * 40 + [float(i) for i in range(20)], pa.float64()),
    }
    source = tmp_path / "typed.parquet"
    pq.write_table(pa.table(columns), source)
    out = tmp_path / "out.parquet"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "16")
    assert result.returncode == 0, result.stderr.decode()
    scored = pq.read_table(out)
    for name, column in columns.items():
        assert scored.schema.field(name).type == column.type, name
        assert scored.column(name).to_pylist() == column.to_pylist(), name


def test_an_input_without_rows_gives_the_header_or_schema_it_would_have_with_rows(bert_dir, tmp_path):
    csv_in = tmp_path / "empty.csv"
    csv_in.write_text("id,text,label\n")
    csv_out = tmp_path / "out.csv"
    result = run_cli("classify", "-f", str(csv_in), "-o", str(csv_out), "--model", str(bert_dir))
    assert result.returncode == 0 and "holds no rows" in result.stderr.decode()
    header = "line,id,text,input_label,label,score,score_NEGATIVE,score_POSITIVE,error"
    assert csv_out.read_text().splitlines() == [header]

    parquet_in = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "n": pa.array([], pa.int32())}), parquet_in)
    parquet_out = tmp_path / "out.parquet"
    result = run_cli("classify", "-f", str(parquet_in), "-o", str(parquet_out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    schema = pq.read_schema(parquet_out)
    assert schema.names == ["line", "text", "n", "label", "score", "score_NEGATIVE", "score_POSITIVE", "error"]
    assert schema.field("n").type == pa.int32() and pq.read_table(parquet_out).num_rows == 0


def test_jsonl_numbers_in_a_parquet_column_become_floats_when_one_has_a_fraction(bert_dir, tmp_path):
    """JSON has one kind of number: 1 then 1.5 must not write 1.5 as 1 because the first chunk held an integer."""
    source = tmp_path / "ratings.jsonl"
    source.write_text('{"text": "good", "n": 1}\n{"text": "bad", "n": 1.5}\n{"text": "fine", "n": 2}\n', "utf-8")
    out = tmp_path / "out.parquet"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--chunk-rows", "1")
    assert result.returncode == 0, result.stderr.decode()
    scored = pq.read_table(out)
    assert scored.schema.field("n").type == pa.float64()
    assert scored.column("n").to_pylist() == [1.0, 1.5, 2.0]


def test_a_resumed_parquet_output_keeps_a_type_found_after_its_first_part(tmp_path):
    """The interrupted run typed `n` in its second part; the resumed run must hold later rows to that type."""
    out = tmp_path / "out.parquet"
    identity = {"input": "test"}

    def records(first_line: int, values: list) -> list[dict]:
        return [{"line": first_line + i, "text": "t", "n": value, "error": None} for i, value in enumerate(values)]

    interrupted = ChunkJournal(out, identity, resume=False, columns=OutputColumns(["NEGATIVE", "POSITIVE"]))
    interrupted.commit(records(1, [None, None]), {"offset": 10, "lines": 2}, failed=0)
    interrupted.commit(records(3, [7, None]), {"offset": 20, "lines": 4}, failed=0)
    interrupted.release()  # as the run's end does, however it ends

    failing = ChunkJournal(out, identity, resume=True, columns=OutputColumns(["NEGATIVE", "POSITIVE"]))
    with pytest.raises(SchemaMismatch, match="rows 5-5: column 'n' holds string values where earlier rows hold int64"):
        failing.commit(records(5, ["seven"]), {"offset": 30, "lines": 5}, failed=0)
    failing.release()
    resumed = ChunkJournal(out, identity, resume=True, columns=OutputColumns(["NEGATIVE", "POSITIVE"]))
    resumed.commit(records(5, [8]), {"offset": 30, "lines": 5}, failed=0)
    resumed.finish()
    scored = pq.read_table(out)
    assert scored.schema.field("n").type == pa.int64()
    assert scored.column("n").to_pylist() == [None, None, 7, None, 8]


def test_a_header_that_names_a_column_twice_is_refused(bert_dir, tmp_path):
    source = tmp_path / "twice.csv"
    source.write_text("id,text,id\n1,good film,2\n", encoding="utf-8")
    result = run_cli("classify", "-f", str(source), "-o", str(tmp_path / "out.csv"), "--model", str(bert_dir))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: {source}: two columns are named 'id' (columns 1 and 3); rename one so that neither is lost"
    )


@pytest.mark.parametrize("content", ['[\n  {"text": "good"},\n  {"text": "bad"}\n]\n', '\ufeff  ["good", "bad"]'])
def test_a_json_array_is_refused_in_one_line_before_the_model_loads(tmp_path, content):
    source = tmp_path / "reviews.json"
    source.write_text(content, encoding="utf-8")
    result = run_cli("classify", "-f", str(source), "--model", str(tmp_path / "no-model"))
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {source} holds a JSON array: write one JSON object or string per line (JSON Lines)\n",
    )


@pytest.mark.parametrize("from_file", [True, False])
def test_a_run_that_fails_before_its_first_chunk_leaves_nothing_to_resume(bert_dir, tmp_path, from_file):
    """A stride the model's windows cannot hold is found at the first chunk; the next run must not be asked for
    --resume."""
    texts = ["-f", str(write_csv(tmp_path / "in.csv", 5))] if from_file else ["good film", "bad film"]
    options = ["--long-text", "chunk", "--stride", "40", "--max-length", "32", "--model", str(bert_dir)]
    out = tmp_path / "out.csv"
    result = run_cli("classify", *texts, "-o", str(out), *options)
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].startswith("error: stride must be between 0 and")
    assert not list(tmp_path.glob("*.partial")) and not out.exists()
    assert run_cli("classify", *texts, "-o", str(out), "--model", str(bert_dir)).returncode == 0


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_undecodable_bytes_in_a_header_are_written_as_replacement_characters(bert_dir, tmp_path, suffix):
    """A Latin-1 header (read with its bytes kept, so that --column can still name it) goes to a UTF-8 output."""
    source = tmp_path / "latin.csv"
    source.write_bytes("text,\u00e9tiquette\ngood film,1\n".encode("latin-1"))
    out = tmp_path / f"out{suffix}"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    (row,) = read_output(out)
    assert row["\ufffdtiquette"] in ("1", 1) and row["text"] == "good film"
    assert not list(tmp_path.glob("*.partial"))


def test_undecodable_text_nested_in_a_jsonl_record_is_written_as_a_replacement_character(bert_dir, tmp_path):
    source = tmp_path / "nested.jsonl"
    source.write_text('{"text": "good film", "user": {"\\ud83d": ["\\udc00", 1]}}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    (row,) = read_output(out)
    assert row["user"] == {"\ufffd": ["\ufffd", 1]}


def test_a_nan_or_infinity_among_a_records_fields_is_written_to_jsonl_as_null(bert_dir, tmp_path):
    """Python's json reads and wrote a bare NaN / Infinity, which strict JSON parsers (jq, browsers) refuse."""
    source = tmp_path / "numbers.jsonl"
    source.write_text('{"text": "good film", "rating": NaN, "more": [Infinity, 1.5, {"x": -Infinity}]}\n', "utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    strict = json.loads(out.read_text(encoding="utf-8"), parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert (strict["rating"], strict["more"]) == (None, [None, 1.5, {"x": None}]) and "label" in strict


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_input_columns_named_like_output_columns_are_all_kept(bert_dir, tmp_path, suffix):
    """Such as the tool's own output classified again: its `label` and the `input_label` of the run before."""
    names = ["label", "text", "input_label", "line", "input_line", "error", "input_error", "input_input_error"]
    source = tmp_path / "again.csv"
    source.write_text(",".join(names) + "\n" + ",".join(f"v{i}" for i in range(len(names))) + "\n", "utf-8")
    out = tmp_path / f"out{suffix}"
    result = run_cli("classify", "-f", str(source), "--column", "text", "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    (row,) = read_output(out)
    assert {name: value for name, value in row.items() if str(value).startswith("v")} == {
        "input_label": "v0",  # one input_ more for each name the tool writes, or writes so
        "text": "v1",
        "input_input_label": "v2",
        "input_line": "v3",
        "input_input_line": "v4",
        "input_error": "v5",
        "input_input_error": "v6",
        "input_input_input_error": "v7",
    }


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_nested_jsonl_values_are_written_to_csv_and_tsv_as_json(bert_dir, tmp_path, suffix):
    source = tmp_path / "nested.jsonl"
    record = {"text": "I like cheese", "meta": {"a": 1, "b": "x é"}, "ok": True, "tags": ["p", "q"], "n": None}
    source.write_text(json.dumps(record) + "\n", "utf-8")
    out = tmp_path / f"out{suffix}"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    (row,) = read_output(out)
    assert {name: json.loads(row[name]) for name in ("meta", "ok", "tags")} == {
        "meta": {"a": 1, "b": "x é"},
        "ok": True,
        "tags": ["p", "q"],
    }
    assert row["n"] == ""


def test_a_csv_record_spanning_lines_is_numbered_by_the_line_it_starts_on(bert_dir, tmp_path):
    source = tmp_path / "multi.csv"
    source.write_text('text,id\ngood,1\n"multi\nline\ntext"\nbad,3\n"two\nlines",4\n', "utf-8")
    out = tmp_path / "out.csv"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 2
    assert "line 3: expected 2 fields, found 1" in result.stderr.decode()
    assert [int(row["line"]) for row in read_output(out)] == [2, 3, 6, 7]


def test_a_jsonl_field_keeps_its_output_name_whatever_fields_other_records_have(bert_dir, tmp_path):
    source = tmp_path / "uneven.jsonl"
    records = [{"text": "good film", "label": "L1"}, {"text": "bad film", "label": "L2", "input_label": "IL2"}]
    source.write_text("".join(json.dumps(record) + "\n" for record in records), "utf-8")
    for suffix in (".csv", ".jsonl"):
        out = tmp_path / f"out{suffix}"
        result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
        assert result.returncode == 0, result.stderr.decode()
        rows = read_output(out)
        assert [row["input_label"] for row in rows] == ["L1", "L2"]
        assert [row.get("input_input_label") or None for row in rows] == [None, "IL2"]


def test_tsv_output_reads_back_through_the_tool(bert_dir, tmp_path):
    texts = ['a "quoted" word', "it's 'fine'", 'ends with "', "plain"]
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([["id", "text"], *([i, text] for i, text in enumerate(texts))])
    first = tmp_path / "first.tsv"
    assert run_cli("classify", "-f", str(source), "-o", str(first), "--model", str(bert_dir)).returncode == 0
    written = first.read_bytes()
    assert b"\r" not in written and b'""' not in written  # GLUE style: \n line ends, quotes as they are
    again = tmp_path / "again.jsonl"
    result = run_cli("classify", "-f", str(first), "-o", str(again), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    rows = read_output(again)
    assert [row["text"] for row in rows] == texts
    assert [row["input_label"] for row in rows] == [row["label"] for row in read_output(first)]


def test_tsv_output_writes_tabs_and_line_breaks_in_values_as_spaces(bert_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [{"text": "good\tfilm"}, {"text": "awful\r\nplot"}, {"text": "fine"}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "out.tsv"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()
    assert b"line 1: a value holds a tab or line break" in result.stderr
    rows = read_output(out)
    assert [row["text"] for row in rows] == ["good film", "awful  plot", "fine"]
    assert all(len(row) == len(rows[0]) and None not in row for row in rows)


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
    assert not list(tmp_path.glob("*.partial"))  # nothing that a later run would take for an interrupted one


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


def test_an_empty_jsonl_input_gives_the_result_columns_in_csv_and_parquet_alike(bert_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"")
    expected = ["line", "label", "score", "score_NEGATIVE", "score_POSITIVE", "error"]
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"out{suffix}"
        result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
        assert result.returncode == 0, result.stderr.decode()
        names = pq.read_schema(out).names if suffix == ".parquet" else out.read_text().splitlines()[0].split(",")
        assert names == expected, suffix


@pytest.mark.parametrize(
    ("suffix", "content", "message"),
    [
        (".tsv", b"sentence\tlabel\rgood\t1\rbad\t0\r", "lines end in lone carriage returns"),
        (".csv", b"sentence,label\rgood,1\rbad,0\r", "lines end in lone carriage returns"),
        (".txt", b"good\rbad\r", "lines end in lone carriage returns"),
        (".tsv", "sentence\tlabel\ngood\t1\n".encode("utf-16"), "UTF-16 text"),
    ],
)
def test_files_that_cannot_be_read_as_lines_of_utf8_are_one_line(bert_dir, tmp_path, suffix, content, message):
    """Lone carriage returns (classic Mac line ends) made a header a traceback (and a .txt file one text); UTF-16
    gave a header of garbled names."""
    source = tmp_path / f"data{suffix}"
    source.write_bytes(content)
    commands = [["classify", "-f"]] + ([] if suffix == ".txt" else [["evaluate"]])
    for command in commands:
        result = run_cli(*command, str(source), "--model", str(bert_dir), "--backend", "onnx")
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (command, lines)
        assert lines[0].startswith(f"error: {source}: {message}"), (command, lines)
    # The same bytes on stdin (a pipe from iconv): UTF-16 gave an error row and a garbled text, lone carriage
    # returns one text of every line
    piped = run_cli("classify", "--model", str(bert_dir), "--backend", "onnx", input=content)
    assert (piped.returncode, piped.stdout) == (2, b""), piped.stderr.decode()
    assert piped.stderr.decode().startswith(f"error: stdin: {message}"), piped.stderr.decode()


# ---- rows that would run away with the file or the memory --------------------------------------
def test_a_csv_quote_never_closed_is_one_error_row_and_the_rows_it_swallowed_are_named(bert_dir, tmp_path):
    """An unclosed quote made every later row part of one text: 2 rows out of 50, exit 0, a truncation warning."""
    source = tmp_path / "stray.csv"
    rows = "".join(f"{i},review number {i} is fine\n" for i in range(5, 51))
    source.write_text(f'id,text\n1,great film\n2,"a"b\n3,good\n4,"the ""best"" movie\n{rows}', "utf-8")
    out = tmp_path / "out.csv"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
    assert result.returncode == 2, result.stderr.decode()
    scored = read_output(out)
    assert [row["line"] for row in scored] == ["2", "3", "4", "5"]
    assert [bool(row["error"]) for row in scored] == [False, True, False, True]
    assert scored[1]["error"] == "malformed CSV row (',' expected after '\"')"  # text after a closing quote
    assert scored[3]["error"] == (
        "malformed CSV row (a quote opened in it is never closed: lines 5-51 were read as one value, so the rows on "
        "them cannot be told apart and none is classified; close the quote and run again)"
    )
    assert "error: line 5: malformed CSV row (a quote opened in it is never closed" in result.stderr.decode()
    assert "2 inputs could not be classified" in result.stderr.decode()


def test_a_csv_quote_never_closed_stops_at_the_value_limit_and_reads_no_row_out_of_it(tmp_path):
    """In a large file the limit on one value comes before the end: reading on from there would make rows of the
    quoted lines, so the rest of the file is read unclassified, and a resumed run starts at its end."""
    from fastsentiment.jobs.rows import MAX_TEXT_CHARS

    line = "x" * 99 + "\n"
    count = MAX_TEXT_CHARS // len(line) + 200  # past the limit, well before the end
    source = tmp_path / "stray.csv"
    source.write_text('id,text\n1,good\n2,"stray\n' + f"3,{line}" * count + "9,last\n", "utf-8")
    reader = RowSource(source)
    rows = list(reader.rows())
    assert [(row.line, row.error is None) for row in rows] == [(2, True), (3, False)]
    total = count + 4
    assert rows[1].error.startswith("malformed CSV row (a quoted value that starts in it runs on to line ")
    assert f"where it is a value over the limit of {MAX_TEXT_CHARS:,} characters" in rows[1].error
    assert f"the rows of lines 3-{total} cannot be told apart and none is classified" in rows[1].error
    assert reader.position == {"offset": source.stat().st_size, "lines": total}


def test_texts_and_lines_over_the_limits_are_error_rows_and_the_next_rows_are_read(tmp_path):
    """A 10 MB line was read whole and tokenised whole (1.45 GB), only to be truncated to 512 tokens."""
    from fastsentiment.jobs.rows import MAX_LINE_BYTES, MAX_TEXT_CHARS

    text = tmp_path / "long.txt"
    lines = ["good", "a" * MAX_TEXT_CHARS, "b" * (MAX_TEXT_CHARS + 1), "c" * (MAX_LINE_BYTES + 10), "bad"]
    text.write_text("\n".join(lines) + "\n", "utf-8")
    rows = list(RowSource(text).rows())
    assert [row.line for row in rows] == [1, 2, 3, 4, 5]
    assert [row.error for row in rows] == [
        None,
        None,  # exactly the limit: classified
        f"a text of {MAX_TEXT_CHARS + 1:,} characters, over the limit of {MAX_TEXT_CHARS:,} (split it into shorter rows)",
        f"a line of {MAX_LINE_BYTES + 11:,} bytes, over the limit of {MAX_LINE_BYTES:,} (split it into shorter rows)",
        None,
    ]
    assert rows[4].text == "bad"

    records = tmp_path / "long.jsonl"
    records.write_text(json.dumps({"id": 1, "text": "b" * (MAX_TEXT_CHARS + 1)}) + '\n{"id": 2, "text": "fine"}\n')
    rows = list(RowSource(records).rows())
    assert rows[0].error.startswith("a text of 1,000,001 characters") and rows[0].fields["id"] == 1
    assert rows[1].text == "fine"

    table = tmp_path / "long.csv"
    table.write_text(f"id,text\n1,{'b' * (MAX_TEXT_CHARS + 1)}\n2,fine\n", "utf-8")
    rows = list(RowSource(table).rows())
    assert rows[0].error == f"a value over the limit of {MAX_TEXT_CHARS:,} characters (split it into shorter rows)"
    assert (rows[1].line, rows[1].text) == (3, "fine")


def test_a_jsonl_record_with_undecodable_bytes_keeps_its_fields_as_a_csv_row_does(tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"id": 1, "user": "b\xffob", "text": "good"}\n{"id": 2, "user": "al", "text": "b\xffd"}\n')
    table = tmp_path / "in.csv"
    table.write_bytes(b"id,user,text\n1,b\xffob,good\n2,al,b\xffd\n")
    from_jsonl, from_csv = list(RowSource(jsonl).rows()), list(RowSource(table).rows())
    assert [row.error for row in from_jsonl] == [row.error for row in from_csv] == [None, "not valid UTF-8"]
    assert [clean_fields(row.fields) for row in from_jsonl] == [
        {"id": 1, "user": "b\ufffdob", "text": "good"},
        {"id": 2, "user": "al", "text": "b\ufffdd"},
    ]


def test_jsonl_fields_named_like_result_columns_keep_their_input_order_as_csv_columns_do(bert_dir, tmp_path):
    names = ["id", "score_x", "tokens", "text", "windows"]
    values = [["1", "5", "7", "good film", "2"], ["2", "6", "8", "bad film", "3"]]
    jsonl, table = tmp_path / "in.jsonl", tmp_path / "in.csv"
    jsonl.write_text("".join(json.dumps(dict(zip(names, row, strict=True))) + "\n" for row in values), "utf-8")
    with open(table, "w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([names, *values])
    headers = []
    for source in (jsonl, table):
        out = tmp_path / f"{source.stem}-{source.suffix[1:]}.csv"
        result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir))
        assert result.returncode == 0, result.stderr.decode()
        headers.append(out.read_text().splitlines()[0].split(","))
    assert headers[0] == headers[1] == ["line", *names, "label", "score", "score_NEGATIVE", "score_POSITIVE", "error"]


def test_a_resumed_tsv_output_keeps_columns_whose_names_hold_a_tab_or_line_break(tmp_path):
    """The TSV header shows such a name with a space; the resumed run read the header back and lost the column."""
    out = tmp_path / "out.tsv"
    identity = {"input": "test"}

    def records(first_line: int, count: int) -> list[dict]:
        return [
            {"line": line, "note\tx": f"n{line}", "two\nlines": line, "text": "t", "error": None}
            for line in range(first_line, first_line + count)
        ]

    interrupted = ChunkJournal(out, identity, resume=False, columns=OutputColumns(["NEGATIVE", "POSITIVE"]))
    interrupted.commit(records(1, 2), {"offset": 10, "lines": 2}, failed=0)
    interrupted.release()
    resumed = ChunkJournal(out, identity, resume=True, columns=OutputColumns(["NEGATIVE", "POSITIVE"]))
    resumed.commit(records(3, 2), {"offset": 20, "lines": 4}, failed=0)
    resumed.finish()
    rows = read_output(out)
    assert [row["note x"] for row in rows] == ["n1", "n2", "n3", "n4"]
    assert [row["two lines"] for row in rows] == ["1", "2", "3", "4"]


# ---- finishing: the parts joined into OUT ------------------------------------------------------
def _journal_of_three_parts(out: Path) -> tuple[ChunkJournal, bytes]:
    """A CSV journal of three parts (as a run leaves it before finishing) and the output it must give."""
    journal = ChunkJournal(out, {"input": "test"}, resume=False, columns=OutputColumns(["NEGATIVE", "POSITIVE"]))
    for part in range(3):
        lines = range(part * 4 + 1, part * 4 + 5)
        chunk = [{"line": line, "text": sentence(line), "label": "POSITIVE", "error": None} for line in lines]
        journal.commit(chunk, {"offset": part + 1, "lines": part + 1}, failed=0)
    expected = b"".join((journal.folder / name).read_bytes() for name in journal.parts)
    journal.release()  # the run stops here
    return journal, expected


@pytest.mark.parametrize("killed", ["copying the second part", "before dropping the second part", "after renaming"])
def test_a_run_killed_while_joining_leaves_parts_that_resume_joins_exactly(tmp_path, killed):
    """Parts are appended to the first one by one: a kill at any point leaves the parts and a manifest (never a
    half-written OUT), from which --resume gives the same output, no row lost or repeated."""
    out = tmp_path / "out.csv"
    journal, expected = _journal_of_three_parts(out)
    first, second = (journal.folder / name for name in journal.parts[:2])
    manifest_path = journal.folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    size = first.stat().st_size
    # What the manifest and files hold at each moment of the join (see ChunkJournal._join_in_place).
    if killed == "copying the second part":
        manifest |= {"joined": 0, "joined_size": size}
        first.write_bytes(first.read_bytes() + second.read_bytes()[:100])
    elif killed == "before dropping the second part":
        first.write_bytes(first.read_bytes() + second.read_bytes())
        manifest |= {"joined": 1, "joined_size": first.stat().st_size}
    else:
        first.write_bytes(expected)
        manifest |= {"joined": 2, "joined_size": len(expected)}
        first.rename(out)
        for name in manifest["parts"][1:]:
            (journal.folder / name).unlink()
    manifest_path.write_text(json.dumps(manifest))
    if killed != "after renaming":
        assert not out.exists()

    ChunkJournal(out, {"input": "test"}, resume=True, columns=OutputColumns(["NEGATIVE", "POSITIVE"])).finish()
    assert out.read_bytes() == expected
    assert not journal.folder.exists()


def test_finishing_needs_room_for_one_part_and_a_full_disk_keeps_the_parts_for_resume(bert_dir, tmp_path):
    """On a 1000 KB file system, a 550 KB output: joining into a second copy needed twice that and failed with only
    'No space left on device', leaving its scratch file behind."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("needs unshare to mount a small tmpfs in a namespace of its own")
    rows = 4500  # 550 KB of output: two copies do not fit
    source = write_csv(tmp_path / "in.csv", rows)
    classify = f"{sys.executable} -m fastsentiment classify -f {source} -o small/o.csv --model {bert_dir}"
    script = f"""
        cd {tmp_path} && mkdir small && mount -t tmpfs -o size=1000k tmpfs small || exit 99
        head -c $((1000 * 1024 - 16384)) /dev/zero > small/filler
        {classify} --chunk-rows 500 2>no_room.err; echo $? > no_room.rc; ls -a small > no_room.ls
        rm small/filler
        {classify} --chunk-rows 500 2>first.err; echo $? > first.rc; cp small/o.csv whole.csv
        rm small/o.csv
        head -c $((1000 * 1024 - $(stat -c %s whole.csv) - 40000)) /dev/zero > small/filler
        {classify} --chunk-rows 500 2>full.err; echo $? > full.rc; ls -a small > full.ls
        rm small/filler
        {classify} --chunk-rows 500 --resume 2>resumed.err; echo $? > resumed.rc; cp small/o.csv resumed.csv
    """
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], cwd=ROOT, capture_output=True, check=False)
    assert done.returncode != 99, done.stderr.decode()  # the tmpfs could not be mounted

    def said(name: str) -> tuple[int, str]:
        return int((tmp_path / f"{name}.rc").read_text()), (tmp_path / f"{name}.err").read_text()

    # no room for the first part: the output named (it was a bare "No space left on device"), nothing left behind
    code, stderr = said("no_room")
    assert (code, stderr.splitlines()[-1]) == (1, "error: small/o.csv: could not write it (No space left on device)")
    assert (tmp_path / "no_room.ls").read_text().split() == [".", "..", "filler"]
    assert said("first")[0] == 0, said("first")[1]
    assert [int(row["id"]) for row in read_output(tmp_path / "whole.csv")] == list(range(rows))

    code, stderr = said("full")
    assert code == 1, stderr
    assert (
        stderr.strip()
        .splitlines()[-1]
        .startswith("error: small/o.csv: could not finish it (No space left on device; joining the parts needs about ")
    )
    assert stderr.strip().endswith(
        "the classified rows are kept in o.csv.partial/, and the same command with --resume finishes the job once "
        "there is room"
    )
    assert (tmp_path / "full.ls").read_text().split() == [".", "..", "filler", "o.csv.partial"]  # no scratch file

    assert said("resumed")[0] == 0, said("resumed")[1]
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


# Ctrl+C once the first later part is appended and counted, raised as Python's SIGINT handler raises it. A real
# os.kill() is not used: a suite started in the background by a shell runs with SIGINT ignored, which every child
# inherits, and the job then ran to the end with exit 0.
INTERRUPTED_WHILE_JOINING = """
import signal, sys
from fastsentiment.jobs.journal import ChunkJournal

saving = ChunkJournal._save

def interrupted(self, *where):
    saving(self, *where)
    if self.joined >= 1:
        signal.default_int_handler(signal.SIGINT, None)

ChunkJournal._save = interrupted
from fastsentiment.cli import main
main(sys.argv[1:])
"""


def test_ctrl_c_while_the_parts_are_joined_says_that_resume_finishes_the_job(bert_dir, tmp_path):
    source = write_csv(tmp_path / "in.csv", 40)
    options = ["--file", str(source), "--model", str(bert_dir), *PINNED, "--chunk-rows", "10"]
    env = {**os.environ, "FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out.csv"
    interrupted = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_JOINING, "classify", *options, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    stderr = interrupted.stderr.decode()
    assert interrupted.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted while joining the parts of out.csv: the same command with --resume finishes it" in stderr
    assert not out.exists()
    resumed = run_cli(
        "classify", *options, "--out", str(out), "--resume", env={"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    whole = run_cli(
        "classify", *options, "--out", str(tmp_path / "whole.csv"), env={"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    )
    assert whole.returncode == 0
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_a_file_job_without_a_source_is_refused_in_words():
    """FileJob.source is None for texts given as arguments, which are rows in memory: run as a file job, that was a
    TypeError from deep inside the row reader."""
    from fastsentiment.jobs.job import FileJob, ModelOptions
    from fastsentiment.jobs.run import run_file_job

    with pytest.raises(InputError, match="reads a file, a folder or stdin"):
        run_file_job(FileJob(source=None), ModelOptions())


def test_a_file_of_long_documents_is_read_in_chunks_bounded_by_characters_not_rows_alone(bert_dir, tmp_path):
    """Chunks were 2048 rows however long: 400 documents of 22,000 characters (9 MB) took 560 MB of memory, as their
    tokenisations were held together; 2048 documents of 100,000 characters would take 26 GB."""
    data = tmp_path / "long.txt"
    data.write_text("".join(" ".join(WORDS[(i + k) % len(WORDS)] for k in range(3600)) + "\n" for i in range(400)))
    Classifier.load(bert_dir, backend="onnx", precision="fp32")  # exported here: the export's own peak is not measured
    # The command's peak as its own process holds it (VmHWM): a forked child's rusage counts its parent's pages.
    peak_at_exit = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')), file=sys.stderr))\n"
        "sys.argv[0] = 'fastsentiment'\n"
        "runpy.run_module('fastsentiment', run_name='__main__')\n"
    )
    command = [sys.executable, "-c", peak_at_exit, "classify", "--model", str(bert_dir), *PINNED]
    command += ["--file", str(data), "--out", str(tmp_path / "out.jsonl")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert sum(1 for _ in open(tmp_path / "out.jsonl")) == 400
    peak_kb = int(done.stderr.decode().rsplit("VmHWM:", 1)[1].split()[0])
    assert peak_kb < 300 * 1024, f"peak {peak_kb // 1024} MB"  # was 560 MB


def test_ctrl_c_that_lands_in_a_finaliser_still_exits_130_without_a_traceback(tmp_path):
    """Ctrl+C at the end of `evaluate` could land in the weakref callback of the classifier's thread pool as it was
    collected, where Python drops the exception: the command printed "Exception ignored in ... KeyboardInterrupt"
    with a traceback, and exited 0. Here the signal is sent from such a callback, run while a command runs."""
    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys, weakref
            from fastsentiment import cli

            class Pool:
                pass

            pool = Pool()
            watcher = weakref.ref(pool, lambda ref: (os.kill(os.getpid(), signal.SIGINT), sum(range(1000))))
            register = cli._register_commands

            def register_then_collect():
                global pool
                register()
                del pool  # the callback runs now, and the interrupt's handler in it

            cli._register_commands = register_then_collect
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's (pytest-xdist's workers ignore it)
            cli.main(["models"])
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, cwd=ROOT, timeout=120)
    assert result.returncode == 130, (result.returncode, result.stderr.decode()[-2000:])
    assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr, result.stderr.decode()
