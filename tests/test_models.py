import json
import shutil

import pytest

from conftest import run_cli
from fastsentiment.errors import ModelError
from fastsentiment.models import resolve_model


def copy_model(source, target):
    shutil.copytree(source, target)
    return target


def test_local_directory_resolves_with_labels_and_limits(bert_dir, distilbert_dir):
    bert = resolve_model(bert_dir)
    assert bert.labels == ["NEGATIVE", "POSITIVE"]
    assert bert.uses_token_type_ids
    assert bert.max_length == 64
    assert not resolve_model(distilbert_dir).uses_token_type_ids


def test_content_hash_changes_with_weights(bert_dir, tmp_path):
    copy = copy_model(bert_dir, tmp_path / "copy")
    assert resolve_model(copy).content_hash == resolve_model(bert_dir).content_hash
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert resolve_model(copy).content_hash != resolve_model(bert_dir).content_hash


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: shutil.rmtree(d), "model directory not found"),
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "malformed JSON"),
        (lambda d: (d / "model.safetensors").unlink(), "has no weights"),
        (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "vocab.txt")], "has no tokenizer"),
        (lambda d: _edit_config(d, model_type="gpt2"), "unsupported architecture model_type='gpt2'"),
        (lambda d: _edit_config(d, architectures=["BertModel"]), "without a classification head"),
        (lambda d: _edit_config(d, architectures=["BertForMaskedLM"]), "fine-tune it first"),  # bert-base and kin
        (
            lambda d: _edit_config(d, architectures=["BertForTokenClassification"]),
            "holds a BertForTokenClassification, not a sequence classifier",
        ),
        (lambda d: _edit_config(d, id2label=["a", "b"]), "id2label must map"),
        (lambda d: _truncate(d / "model.safetensors", 100), "unreadable weights"),
        (lambda d: _truncate(d / "model.safetensors", 0), "unreadable weights"),
    ],
)
def test_broken_model_directories_give_one_clear_error(bert_dir, tmp_path, breakage, message):
    model = copy_model(bert_dir, tmp_path / "model")
    breakage(model)
    with pytest.raises(ModelError, match=message):
        resolve_model(model)
    result = run_cli("classify", "I like cheese", "--model", str(model))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert stderr.startswith("error: ") and message.split("'")[0] in stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1


def test_tune_refuses_weights_at_odds_with_their_config_as_classify_does(bert_dir, tmp_path):
    """Every fp32 reference failed on the model, and tune said so three times over and then told the user to install
    ONNX Runtime."""
    model = copy_model(bert_dir, tmp_path / "model")
    _edit_config(model, hidden_size=40)
    env = {"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    classified = run_cli("classify", "I like cheese", "--model", str(model), "--backend", "torch", env=env)
    tuned = run_cli("tune", "--model", str(model), "--device", "cpu", env=env)
    assert classified.returncode == 2 and "is config.json this checkpoint's?" in classified.stderr.decode()
    assert tuned.returncode == 2 and tuned.stderr == classified.stderr, tuned.stderr.decode()[-2000:]


def _truncate(path, keep_bytes):
    path.write_bytes(path.read_bytes()[:keep_bytes])


LABELS_AT_ODDS = {"id2label": {"0": "ONLY"}, "label2id": {"ONLY": 0}, "num_labels": 1}


@pytest.mark.parametrize(
    ("backend", "change", "message"),
    [
        ("torch", LABELS_AT_ODDS, "the classifier has 2 outputs in the weights but config.json names 1 classes"),
        (
            "torch",
            {"hidden_size": 40},
            "has shape [32] in the weights but [40] by config.json (38 tensor(s) differ; "
            "is config.json this checkpoint's?)",
        ),
        ("torch", {"hidden_act": "foo"}, "config.json names 'foo', which transformers does not know"),
        ("onnx", {"hidden_act": "foo"}, "config.json names 'foo', which transformers does not know"),
        ("torch", {"layer_norm_eps": "abc"}, "config.json does not describe a model"),
        # more layers than the weights hold: transformers drew the rest at random (a warning, and answers that
        # changed from load to load)
        ("torch", {"num_hidden_layers": 4}, "the weights lack bert.encoder.layer.2."),
        ("onnx", {"num_hidden_layers": 4}, "the weights lack bert.encoder.layer.2."),
        # onnx and openvino start from the same network through the ONNX export
        ("openvino", LABELS_AT_ODDS, "the classifier has 2 outputs in the weights but config.json names 1 classes"),
    ],
)
def test_weights_at_odds_with_their_config_give_one_clear_error(bert_dir, tmp_path, backend, change, message):
    """Every runtime that starts from the PyTorch network (torch, and the exports onnx and openvino run) says what
    is wrong in one line, instead of transformers' traceback that points at a report on the console."""
    model = copy_model(bert_dir, tmp_path / "model")
    _edit_config(model, **change)
    result = run_cli("classify", "I like cheese", "--model", str(model), "--backend", backend)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1, stderr


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_backends_does_not_call_ready_a_model_whose_head_differs_from_its_labels(bert_dir, tmp_path, weights):
    """The head's size is read from the safetensors header, or from the tensor listing in a `pytorch_model.bin`
    (without torch): `backends --model` said "ready" for a directory every load then refused."""
    model = copy_model(bert_dir, tmp_path / "model")
    _edit_config(model, **LABELS_AT_ODDS)
    if weights == "pytorch_model.bin":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(model / "model.safetensors"), model / weights)
        (model / "model.safetensors").unlink()
    result = run_cli("backends", "--model", str(model))
    assert result.returncode == 2 and result.stderr.decode() == (
        f"error: {model}: the classifier has 2 outputs in the weights but config.json names 1 classes (is "
        "num_labels / id2label right?)\n"
    )


def test_an_unreadable_pytorch_weights_file_is_one_line(bert_dir, tmp_path):
    model = copy_model(bert_dir, tmp_path / "model")
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"garbage\n")
    for command in (["classify", "I like cheese", "--backend", "torch"], ["export", "onnx"]):
        args = [*command, str(model), str(tmp_path / "out.onnx")] if command[0] == "export" else command
        result = run_cli(*args, *(["--model", str(model)] if command[0] == "classify" else []))
        stderr = result.stderr.decode()
        assert result.returncode == 2 and stderr.count("\n") == 1, stderr[-2000:]
        assert stderr.startswith(f"error: {model}: unreadable weights"), stderr


def test_a_config_that_names_two_classes_alike_is_refused(bert_dir, tmp_path):
    """Two classes of one name would merge into one score, and every answer would name that class."""
    model = copy_model(bert_dir, tmp_path / "model")
    _edit_config(model, id2label={"0": "POSITIVE", "1": "POSITIVE"})
    result = run_cli("classify", "awful film", "--model", str(model))
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"error: {model / 'config.json'}: id2label must give each class a name of its own; got POSITIVE, POSITIVE\n"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_position_embeddings": None}, "max_position_embeddings is None: expected a whole number of at least 1"),
        ({"max_position_embeddings": "abc"}, "max_position_embeddings is 'abc': expected a whole number"),
        ({"max_position_embeddings": 2}, "max_position_embeddings leaves room for 2 tokens; a text takes at least 3"),
        ({"num_attention_heads": 0}, "num_attention_heads is 0: expected a whole number of at least 1"),
        ({"num_attention_heads": 5}, "the hidden size 32 is not a multiple of the 5 attention heads"),
        ({"vocab_size": True}, "vocab_size is True: expected a whole number of at least 1"),
        ({"pad_token_id": 99999}, "pad_token_id 99999 is not a token of the"),
        ({"pad_token_id": "x"}, "pad_token_id is 'x': expected a token id"),
        ({"id2label": {"0": "NEG", "2": "POS"}}, "id2label must name classes 0 to 1, one each; got 0, 2"),
    ],
)
def test_a_config_with_a_value_no_model_can_have_is_one_line(bert_dir, tmp_path, change, message):
    """Each of these ended in a traceback from whichever library met the value first (int() of None,
    a division by zero heads, an embedding's padding index out of range), or, for id2label, named class 1 "POS"."""
    model = copy_model(bert_dir, tmp_path / "model")
    _edit_config(model, **change)
    result = run_cli("classify", "awful film", "--model", str(model))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith(f"error: {model / 'config.json'}: "), stderr[-2000:]
    assert message in stderr and stderr.count("\n") == 1, stderr


def test_a_tokenizer_config_that_is_not_an_object_is_one_line(bert_dir, tmp_path):
    model = copy_model(bert_dir, tmp_path / "model")
    (model / "tokenizer_config.json").write_text("[1]")
    result = run_cli("classify", "awful film", "--model", str(model))
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: {model / 'tokenizer_config.json'}: expected a JSON object\n",
    )


def _edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_hub_id_offline_says_to_pass_a_local_directory(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="pass a local model directory"):
        resolve_model("distilbert/distilbert-base-uncased-finetuned-sst-2-english")


def test_vocab_only_directory_loads_with_wordpiece(bert_dir, tmp_path):
    model = copy_model(bert_dir, tmp_path / "vocab-only")
    (model / "tokenizer.json").unlink()
    result = run_cli("classify", "I like cheese", "--model", str(model), "--backend", "torch")
    assert result.returncode == 0, result.stderr


def test_a_folder_named_like_the_built_in_model_is_said_not_to_be_used(tmp_path, monkeypatch, caplog):
    from fastsentiment.models.builtin import DEFAULT_MODEL

    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).mkdir()
    with caplog.at_level("WARNING", logger="fastsentiment"):
        model = resolve_model(DEFAULT_MODEL)
    assert model.path != (tmp_path / DEFAULT_MODEL).resolve()  # the built-in, as documented
    assert [record.getMessage() for record in caplog.records] == [
        f"{DEFAULT_MODEL!r} is the built-in model; for the folder of that name here, pass ./{DEFAULT_MODEL}"
    ]


def test_without_a_home_folder_the_cache_asks_for_its_setting(monkeypatch):
    """A container's arbitrary user has no HOME and no passwd entry: Path.home() raises, which was a traceback."""
    from pathlib import Path

    from fastsentiment.cache import cache_root
    from fastsentiment.errors import FastSentimentError

    for name in ("FASTSENTIMENT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(FastSentimentError, match="no home folder to keep the cache in: set FASTSENTIMENT_CACHE"):
        cache_root()
