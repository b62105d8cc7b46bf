"""`classify --engine ray` against a real Ray cluster started on this machine (a head node with 2 CPUs).

The job joins it as `--address 127.0.0.1:PORT` (Ray maps the loopback address to the node's own).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="the ray extra is not installed")
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from conftest import PINNED_FP32 as PINNED
from conftest import ROOT, run_cli
from fastsentiment import Classifier

ROWS = 20_000
EMPTY_IDS = {7, 4_321, 19_999}
UNDECODABLE_IDS = {12, 15_000}
WORDS = "good bad great awful fine boring lovely dull superb terrible moving flat".split()
# Ray 2.60 clusters use token authentication; a client joining by address must ask for it too. The token is
# made here, not read from ~/.ray/auth_token, which a fresh machine does not have.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
ACTOR_TITLE = r"MapWorker\(MapBatches\(_ClassifyBatches\)\)"  # how Ray titles the actor processes (a regex)


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """A head node of its own, stopped alone at the end. `ray stop --force` stopped every Ray process on the machine:
    a user's own cluster, and an instance a test worker had started in-process, whose driver (the worker) then exited
    a minute later (CI: pytest-xdist's worker crashed, then hung)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp_dir = tmp_path_factory.mktemp("ray")
    # In a session of its own: the daemons it starts stay in its process group after it returns (the head is ready)
    head = subprocess.Popen(
        [ray, "start", "--head", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=RAY_ENV, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = head.communicate(timeout=180)
        assert head.returncode == 0, output.decode(errors="replace")[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        # That group: its workers exit with their raylet. Killed, not asked: a SIGTERM drained it for 33 s.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()


@pytest.fixture(scope="module")
def id_file(tmp_path_factory) -> Path:
    """20,000 rows with an id column; a few rows have empty text and a few carry undecodable bytes."""
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    generator = random.Random(7)
    with open(path, "wb") as stream:
        stream.write(b"id,text\n")
        for i in range(ROWS):
            if i in EMPTY_IDS:
                text = b""
            elif i in UNDECODABLE_IDS:
                text = b"caf\xe9 au lait"
            else:
                text = " ".join(generator.choice(WORDS) for _ in range(generator.randint(3, 40))).encode()
            stream.write(b"%d,%s\n" % (i, text))
    return path


def ray_job(address: str, source, out, *options: str):
    """`classify --engine ray` of `source` into `out` on the test cluster."""
    return run_cli(
        "classify", "--engine", "ray", "--address", address, "--file", str(source), "--out", str(out), *options,
        timeout=600, env=RAY_ENV,
    )  # fmt: skip


def read_rows(folder: Path) -> list[dict]:
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    assert files, f"no Parquet files in {folder}"
    return ds.dataset(files, format="parquet").to_table().to_pylist()


def check_complete(rows: list[dict]) -> None:
    ids = [int(row["id"]) for row in rows]
    assert len(ids) == ROWS and set(ids) == set(range(ROWS)), "every input id exactly once"
    errors = {int(row["id"]): row["error"] for row in rows if row["error"]}
    assert errors == {**dict.fromkeys(EMPTY_IDS, "empty text"), **dict.fromkeys(UNDECODABLE_IDS, "not valid UTF-8")}


def test_ray_job_writes_each_input_once_with_the_classifier_labels(ray_address, id_file, bert_dir, tmp_path):
    out = tmp_path / "scored"
    options = ("--model", str(bert_dir), "--num-workers", "2", "--chunk-rows", "1000", "--max-length", "16")
    result = ray_job(ray_address, id_file, out, *options, *PINNED)
    assert result.returncode == 2, result.stderr.decode()[-2000:]  # the error rows make the exit non-zero
    assert f"wrote {ROWS:,} rows".encode() in result.stderr
    assert b"5 inputs could not be classified" in result.stderr
    rows = read_rows(out)
    check_complete(rows)
    assert [int(row["id"]) for row in rows] == list(range(ROWS)), "order kept"
    clf = Classifier.load(bert_dir, backend="onnx", precision="fp32", max_length=16)
    # The actors' truncations are counted on the driver (their warnings reached no terminal).
    texts = [row["text"] for row in rows if not row["error"]]
    cut = sum(len(encoding.ids) > 16 for encoding in clf.encoder.encodings(texts))
    assert cut > 1000
    assert f"warning: {cut:,} rows were truncated to the max_length of 16 tokens in all".encode() in result.stderr
    sample = [row for row in random.Random(1).sample(rows, 300) if not row["error"]]
    expected = clf.predict([row["text"] for row in sample])
    assert [row["label"] for row in sample] == [p.label for p in expected]
    assert max(abs(row["score"] - p.score) for row, p in zip(sample, expected, strict=True)) < 1e-5


def test_killing_a_worker_mid_job_still_gives_a_complete_output(ray_address, id_file, bert_dir, tmp_path):
    out = tmp_path / "scored"
    # batch size 1 and small blocks slow the tiny model down and make Ray write many files, the first of which
    # proves the workers are classifying: the kill comes after it, so the job is surely mid-way
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", "classify", "--engine", "ray", "--address", ray_address,
         "--file", str(id_file), "--out", str(out), "--model", str(bert_dir), "--num-workers", "2",
         "--chunk-rows", "250", "--batch-size", "1", *PINNED],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env={**RAY_ENV, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and process.poll() is None:
        workers = _actor_pids()
        if len(workers) == 2 and any(out.rglob("*.parquet")):
            victim = workers[0]
        time.sleep(0.05)
    assert process.poll() is None, "the job ended before a worker could be killed"
    assert victim is not None, "no worker actor appeared, or none wrote a block"
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 2, stderr.decode()[-2000:]
    check_complete(read_rows(out))


def _actor_pids() -> list[int]:
    """PIDs of the classifying actors: Ray retitles their processes, which shows in /proc/PID/cmdline."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if re.search(ACTOR_TITLE, title):
                pids.append(int(entry.name))
    return sorted(pids)


def test_ray_errors_are_one_line(id_file, bert_dir, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.parquet").write_text("x")
    result = run_cli("classify", "--engine", "ray", "-f", str(id_file), "-o", str(tmp_path / "taken"))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: --out {tmp_path / 'taken'}: with --engine ray, --out is a folder that must be new or empty"
    )
    result = run_cli("classify", "--engine", "ray", "-f", str(id_file), "-o", str(tmp_path / "o"), "--resume")
    assert result.returncode == 2 and b"a Ray job retries failed work itself" in result.stderr
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("fine\n")
    result = run_cli(
        "classify", "--engine", "ray", "-f", str(tmp_path / "texts"), "-o", str(tmp_path / "o"), "--column", "review"
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: --column names the text column of .csv, .tsv, .jsonl or .parquet files; {tmp_path / 'texts'} holds "
        "plain text"
    )
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.csv").write_text("review,stars\nfine,1\n")
    (tmp_path / "tables" / "b.csv").write_text("body,stars\nfine,1\n")
    result = run_cli(
        "classify", "--engine", "ray", "-f", str(tmp_path / "tables"), "-o", str(tmp_path / "o"), "--column", "body"
    )
    assert result.returncode == 2  # the first file's error names it, as the others' do
    assert result.stderr.decode().strip().startswith(f"error: {tmp_path / 'tables' / 'a.csv'}: no column 'body'")
    # a stride the model's windows have no room for, before Ray starts (an actor's refusal was a failed Ray job)
    result = run_cli(
        "classify", "--engine", "ray", "-f", str(id_file), "-o", str(tmp_path / "o"), "-m", str(bert_dir),
        "--long-text", "chunk", "--stride", "62",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "error: stride must be between 0 and 61 tokens for windows of 64 tokens"
    # A folder's later files meet the local engine's refusals too, before Ray starts: a UTF-16 file's texts were
    # classified garbled, a classic-Mac file's lines one merged row
    for name, content, message in [
        ("z.txt", "good film\nbad film\n".encode("utf-16"), "UTF-16 text"),
        ("z.txt", b"good film\rbad film\rgreat cheese\r", "lines end in lone carriage returns"),
        ("z.jsonl", b'[{"text": "good"}]\n', "holds a JSON array"),
    ]:
        folder = tmp_path / f"mixed-{secrets.token_hex(4)}"
        folder.mkdir()
        (folder / "a.txt").write_text("fine\n")
        (folder / name).write_bytes(content)
        result = run_cli(
            "classify", "--engine", "ray", "-f", str(folder), "-o", str(tmp_path / "o"), "-m", str(bert_dir)
        )
        said = result.stderr.decode().strip()
        assert result.returncode == 2 and said.startswith(f"error: {folder / name}") and message in said, said
    # Parquet files whose text columns differ: the workers read the first one's, and the other's rows were "empty"
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "parquets").mkdir()
    pq.write_table(pa.table({"text": ["fine"]}), tmp_path / "parquets" / "a.parquet")
    pq.write_table(pa.table({"sentence": ["fine"]}), tmp_path / "parquets" / "b.parquet")
    result = run_cli("classify", "--engine", "ray", "-f", str(tmp_path / "parquets"), "-o", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: {tmp_path / 'parquets' / 'b.parquet'}: its text column is 'sentence', a.parquet's 'text'; name one "
        "with --column or put the files in separate folders"
    )
    (tmp_path / "parquets" / "b.parquet").unlink()
    (tmp_path / "parquets" / "b.csv").write_text("text\nfine\n")  # a mix: refused as such, before Ray starts
    result = run_cli("classify", "--engine", "ray", "-f", str(tmp_path / "parquets"), "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.decode().strip() == (
        f"error: {tmp_path / 'parquets'}: mix of Parquet and text files; put them in separate folders"
    )


def test_a_folder_of_files_to_csv_files(ray_address, bert_dir, tmp_path):
    """A folder input (two formats) becomes one output folder holding every row of every file, each row naming its
    file and line; JSONL records are read as on the local engine, with a key that comes late kept as a column and a
    value whose type differs from the field's first one an error row (Arrow keeps one type per column)."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a.txt").write_text("".join(f"first file sentence {i} was great\n" for i in range(300)), encoding="utf-8")
    (folder / "b.txt").write_text(
        "".join(f"second file line {i} was dull\n" for i in range(200)) + "\n", encoding="utf-8"
    )
    (folder / "c.jsonl").write_text(
        '{"sentence": "I love it", "id": 1, "line": 7, "file": "x"}\n'  # named like the output's own columns
        '{"sentence": "I hate it", "id": 2, "note": "came late"}\n'
        '{"sentence": "so dull", "id": "three"}\n'
        '{"text": "no sentence here", "id": 4}\n',
        encoding="utf-8",
    )
    out = tmp_path / "scored.csv"
    result = ray_job(ray_address, folder, out, "--model", str(bert_dir), "--chunk-rows", "128")
    assert result.returncode == 2, result.stderr.decode()[-2000:]  # b.txt ends with one empty line; c.jsonl line 3
    assert b"wrote 505 rows" in result.stderr and b"2 inputs could not be classified" in result.stderr
    rows, headers = {}, set()
    for part in sorted(out.glob("*.csv")):
        with open(part, encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            rows.update({(row["file"], int(row["line"])): row for row in reader})
            headers.add(tuple(reader.fieldnames))
    assert len(headers) == 1, headers  # every part has every column: a reader of the folder takes one header
    expected_texts = {
        **{("a.txt", i + 1): f"first file sentence {i} was great" for i in range(300)},
        **{("b.txt", i + 1): f"second file line {i} was dull" for i in range(200)},
    }
    assert len(rows) == 505, "every row is told apart by its file and line"
    assert {key: rows[key]["text"] for key in expected_texts} == expected_texts
    assert {key: row["error"] for key, row in rows.items() if row["error"]} == {
        ("b.txt", 201): "empty text",
        ("c.jsonl", 3): "field 'id' is string here, number on line 1; Ray needs one type per field",
    }
    jsonl = [rows["c.jsonl", line] for line in (1, 2, 3, 4)]
    assert [(row["sentence"], row["text"], row["id"], row["note"]) for row in jsonl] == [
        ("I love it", "", "1", ""),
        ("I hate it", "", "2", "came late"),
        ("so dull", "", "", ""),
        ("", "no sentence here", "4", ""),  # its text field, though the rows beside it have a sentence
    ]
    assert [bool(row["label"]) for row in jsonl] == [True, True, False, True]
    assert (jsonl[0]["input_line"], jsonl[0]["input_file"]) == ("7", "x")  # renamed once, as the local engine does


def test_files_that_differ_in_columns_or_hold_a_number_for_text_make_one_schema(ray_address, bert_dir, tmp_path):
    """Parts written from files with different keys had different columns, and a reader of the folder silently
    dropped the later ones; a file whose first record held a number for its text failed the whole job. Files in a
    subfolder are not read, and that is said."""
    folder = tmp_path / "inputs"
    (folder / "more").mkdir(parents=True)
    (folder / "more" / "unread.jsonl").write_text('{"sentence": "never read"}\n', encoding="utf-8")
    write = lambda name, rows: (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))  # noqa: E731
    write("a.jsonl", [{"uid": i, "sentence": f"good film {i}"} for i in range(150)])
    write("b.jsonl", [{"uid": i, "sentence": f"dull film {i}", "source": "web"} for i in range(150)])
    write("c.jsonl", [{"uid": 0, "sentence": 5}, {"uid": 1, "sentence": "fine film"}])
    out = tmp_path / "scored"
    result = ray_job(ray_address, folder, out, "--model", str(bert_dir), "--chunk-rows", "50")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "wrote 302 rows" in stderr and "1 input could not be classified" in stderr
    assert "the folder's own files are read, not those in its subfolders (more/)" in stderr
    parts = sorted(out.rglob("*.parquet"))
    assert len(parts) > 1 and len({str(pq.read_schema(part)) for part in parts}) == 1
    rows = ds.dataset([str(part) for part in parts], format="parquet").to_table().to_pylist()
    assert len(rows) == 302 and sum(row["source"] == "web" for row in rows) == 150
    assert [(row["sentence"], row["error"]) for row in rows if row["file"] == "c.jsonl"] == [
        ("5", "field 'sentence' is not text"),
        ("fine film", None),
    ]


def test_input_columns_named_like_the_readers_own_are_kept(ray_address, bert_dir, tmp_path):
    """Columns called `__line`, `__read_error` or `__file` were taken for the reader's: the job failed."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "a.csv").write_text("__line,__read_error,__file,text\nx,y,z,good film\n", encoding="utf-8")
    out = tmp_path / "scored.csv"
    result = ray_job(ray_address, folder, out, "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    (row,) = [row for path in sorted(out.iterdir()) for row in csv.DictReader(path.open(encoding="utf-8"))]
    assert (row["file"], row["line"], row["__line"], row["__read_error"], row["__file"], row["error"]) == (
        "a.csv",
        "2",
        "x",
        "y",
        "z",
        "",
    )


def test_json_lines_output_files_are_named_so(ray_address, bert_dir, tmp_path):
    """`--out-format jsonl` wrote Ray's `.json` names: a `*.jsonl` glob found nothing."""
    source = tmp_path / "in.txt"
    source.write_text("good film\nbad film\n", encoding="utf-8")
    out = tmp_path / "scored"
    result = ray_job(ray_address, source, out, "--out-format", "jsonl", "--model", str(bert_dir))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert {path.suffix for path in out.iterdir()} == {".jsonl"}
    rows = [json.loads(line) for path in sorted(out.iterdir()) for line in path.read_text().splitlines()]
    assert [row["text"] for row in rows] == ["good film", "bad film"]


@pytest.mark.parametrize("name, content", [("header.csv", "id,text\n"), ("empty.txt", "")])
def test_an_input_without_rows_gives_an_empty_folder_and_a_warning(ray_address, bert_dir, tmp_path, name, content):
    """Ray writes no file for a job without rows: counting the output's errors in no files was a pyarrow traceback
    (`No match for FieldRef.Name(error)`) after the job had run."""
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    out = tmp_path / "scored"
    result = ray_job(ray_address, source, out, "--out-format", "csv", "--model", str(bert_dir))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr[-2000:]
    assert "Traceback" not in stderr and f"{name} holds no rows to classify" in stderr
    assert "wrote 0 rows" in stderr
    assert out.is_dir() and not any(out.iterdir())


def test_a_failed_ray_job_says_why_in_one_line(ray_address, bert_dir, tmp_path):
    """A field with one type in one file and another in the next cannot become one Arrow column: the job stops
    with the cause, not Ray's traceback or its retry advice."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "x.jsonl").write_text('{"text": "fine", "id": 1}\n', encoding="utf-8")
    (folder / "y.jsonl").write_text('{"text": "bad", "id": "x"}\n', encoding="utf-8")
    result = ray_job(ray_address, folder, tmp_path / "scored", "--model", str(bert_dir))
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr and "retry" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Ray job failed: ") and "Field id has incompatible types: int64 vs string" in last
    scored = tmp_path / "scored"  # what it wrote of its rows is gone: a rerun may write there (it was refused)
    assert not scored.exists() or not list(scored.iterdir()), list(scored.iterdir())


def test_chunked_long_documents_agree_between_local_and_ray_engines(ray_address, bert_dir, tmp_path):
    """--long-text chunk gives the same labels, scores, tokens and windows on both engines."""
    generator = random.Random(14)
    source = tmp_path / "docs.jsonl"
    texts = [" ".join(generator.choice(WORDS) for _ in range(generator.randint(5, 400))) for _ in range(60)]
    source.write_text("".join(f'{{"id": {i}, "text": "{t}"}}\n' for i, t in enumerate(texts)), encoding="utf-8")
    chunking = ("--long-text", "chunk", "--stride", "8", "--model", str(bert_dir), "--chunk-rows", "16", *PINNED)
    local_out = tmp_path / "local.jsonl"
    local = run_cli("classify", "--file", str(source), "--out", str(local_out), *chunking)
    assert local.returncode == 0, local.stderr.decode()[-2000:]
    ray_out = tmp_path / "ray"
    on_ray = ray_job(ray_address, source, ray_out, *chunking)
    assert on_ray.returncode == 0, on_ray.stderr.decode()[-2000:]
    local_rows = sorted((json.loads(line) for line in local_out.read_text().splitlines()), key=lambda r: r["id"])
    ray_rows = sorted(read_rows(ray_out), key=lambda r: int(r["id"]))
    assert len(local_rows) == len(ray_rows) == len(texts)
    assert max(row["windows"] for row in local_rows) > 1, "some documents must be chunked"
    for mine, theirs in zip(local_rows, ray_rows, strict=True):
        assert (mine["tokens"], mine["windows"], mine["label"]) == (
            theirs["tokens"],
            theirs["windows"],
            theirs["label"],
        )
        assert abs(mine["score"] - theirs["score"]) <= 1e-5


def test_a_parquet_input_with_as_many_workers_as_cpus_finishes(ray_address, bert_dir, tmp_path):
    """Two one-thread actors on the cluster's two CPUs left Ray Data's Parquet reader no CPU for its own tasks: the
    job waited forever (a text input of the same rows finished). In a folder named as a Hive partition (year=2024),
    Ray's reader added a column `year` that the local engine does not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "year=2024" / "reviews.parquet"
    source.parent.mkdir()
    pq.write_table(
        pa.table({"sentence": [f"film number {i} was {'good' if i % 2 else 'bad'}" for i in range(50)]}), source
    )
    out = tmp_path / "scored"
    result = run_cli(
        "classify", "--engine", "ray", "--address", ray_address, "--file", str(source), "--out", str(out),
        "--model", str(bert_dir), "--num-workers", "2", timeout=180, env=RAY_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    scored = pq.read_table(out)
    assert scored.num_rows == 50 and "year" not in scored.column_names, scored.column_names


def test_the_ray_reader_never_holds_a_line_over_the_limit(tmp_path):
    """Ray's reader gets a stream without `readline`; it joined blocks until a line ended, so one 24 MB line was held
    whole (and copied) before being refused. It now reads up to the limit, as the local reader does (its peak is
    about twice the limit: the buffered reader joins what it read for a line)."""
    import tracemalloc

    import pyarrow as pa

    from fastsentiment.jobs.ray_engine import LINE, READ_ERROR, text_row_blocks
    from fastsentiment.jobs.rows import MAX_LINE_BYTES

    path = tmp_path / "long.txt"
    with open(path, "wb") as stream:
        stream.write(b"good\n" + b"c" * (3 * MAX_LINE_BYTES) + b"\nbad\n")
    tracemalloc.start()
    try:
        with pa.input_stream(str(path)) as stream:
            blocks = text_row_blocks(stream, str(path), column=None, name_files=False)
            rows = [row for block in blocks for row in block.to_pylist()]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(row[LINE], row["text"], row[READ_ERROR]) for row in rows] == [
        (1, "good", None),
        (
            2,
            "",
            f"a line of {3 * MAX_LINE_BYTES + 1:,} bytes, over the limit of {MAX_LINE_BYTES:,} (split it into shorter rows)",
        ),
        (3, "bad", None),
    ]
    assert peak < 2.5 * MAX_LINE_BYTES, f"{peak:,} bytes at the peak"  # the line read up to the limit; 49 MB before
    started = sys.modules.get("ray")
    assert started is None or not started.is_initialized(), "a Ray instance started in the test process"


def test_a_csv_output_whose_texts_hold_line_breaks_is_counted(tmp_path):
    """The count after a Ray job read each line break quoted inside a text as a row's end: a traceback (exit 1) after
    the whole output was written, and the failed rows' count lost. The files as Ray's CSV writer writes them."""
    import pyarrow as pa
    import pyarrow.csv

    from fastsentiment.jobs.ray_engine import _count_output

    rows = 60_000  # 2 MB, past the reader's first block, whose end fell inside a quoted text
    texts = [f"good film {i}\nsecond line of {i}" for i in range(rows)]
    errors = ["" if i % 100 else "empty text" for i in range(rows)]
    pyarrow.csv.write_csv(pa.table({"line": range(rows), "text": texts, "error": errors}), tmp_path / "part-0.csv")
    report = _count_output(tmp_path, "csv")
    assert (report.rows, report.failed, report.files) == (rows, rows // 100, 1)


def _typed_parquet(path: Path) -> None:
    """A Parquet input whose columns Ray's own JSON and CSV writers mangled: dates, nested values."""
    import datetime

    import pyarrow as pa

    rows = 600
    table = pa.table(
        {
            "text": [f"film {i} was {WORDS[i % len(WORDS)]}" for i in range(rows)],
            "day": [datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 30) for i in range(rows)],
            "meta": [{"k": i, "tags": ["a", "b"][: i % 3]} for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=128)


@pytest.mark.parametrize("out_format", ["jsonl", "csv"])
def test_json_lines_and_csv_files_hold_what_the_local_engine_writes(ray_address, bert_dir, tmp_path, out_format):
    """Ray's JSON writer rounded every score to 10 digits and failed the job on a date column; its CSV writer failed
    it on a field of nested values. Both are written as the local engine writes them: the rows of the two
    engines' outputs are the same, field for field, and a score is the model's float32 value, whole."""
    source = tmp_path / "typed.parquet"
    _typed_parquet(source)
    local = tmp_path / f"local.{out_format}"
    result = run_cli("classify", "--file", str(source), "--out", str(local), "--model", str(bert_dir), *PINNED)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    out = tmp_path / "scored"
    result = ray_job(
        ray_address, source, out, "--out-format", out_format, "--model", str(bert_dir), "--chunk-rows", "128", *PINNED
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    parts = sorted(out.iterdir())
    assert {path.suffix for path in parts} == {f".{out_format}"}

    def read(path: Path) -> list[dict]:
        if out_format == "jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        with open(path, encoding="utf-8", newline="") as stream:
            return list(csv.DictReader(stream))

    rows = [row for part in parts for row in read(part)]
    expected = read(local)
    for row in expected:
        del row["line"]  # Ray's Parquet reader gives no row numbers
    assert len(rows) == 600
    assert sorted(rows, key=lambda row: row["text"]) == sorted(expected, key=lambda row: row["text"])
    first = next(row for row in rows if row["text"] == "film 0 was good")
    assert first["day"] == "2024-01-01"
    assert first["meta"] == ({"k": 0, "tags": []} if out_format == "jsonl" else '{"k": 0, "tags": []}')
    if out_format == "jsonl":
        assert all(float(np.float32(row["score"])) == row["score"] for row in rows)  # not rounded


def test_a_ray_job_that_fails_after_writing_leaves_its_out_folder_empty(ray_address, bert_dir, tmp_path):
    """A job that failed after blocks were written left those files in --out: a folder that looked like output and
    refused the rerun ("must be new or empty"). The failure here comes once every file is written: two input files
    whose field `id` has a type in each, which Parquet parts of one folder cannot have."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "x.jsonl").write_text("".join(f'{{"text": "fine film {i}", "id": {i}}}\n' for i in range(600)))
    (folder / "y.jsonl").write_text("".join(f'{{"text": "bad film {i}", "id": "x{i}"}}\n' for i in range(10)))
    out = tmp_path / "scored"
    result = ray_job(ray_address, folder, out, "--model", str(bert_dir), "--chunk-rows", "128")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "error: the input files disagree on a column's type: ArrowTypeError: Unable to merge: Field id has "
        "incompatible types: int64 vs string"
    )
    assert out.is_dir() and not list(out.iterdir()), list(out.iterdir())
