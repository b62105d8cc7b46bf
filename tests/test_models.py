import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from fastsentiment.errors import ModelError
from fastsentiment.models import resolve_model
from tiny_models import shard_model, transformers_logits


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
    # added_tokens.json beside a tokenizer.json is not read: no new hash (new exports, a new tune) for an upgrade
    assert (copy / "tokenizer.json").is_file()
    (copy / "added_tokens.json").write_text("{}")
    assert resolve_model(copy).content_hash == resolve_model(bert_dir).content_hash
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert resolve_model(copy).content_hash != resolve_model(bert_dir).content_hash


def test_a_content_hash_is_remembered_for_files_as_they_stand(bert_dir, tmp_path, monkeypatch):
    """Hashing the built-in model's 45 MB cost every start 37 ms of a half-second one-off call: it is kept in the
    cache for the files' sizes, inodes and change times, and computed again once any of them moves."""
    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    copy = copy_model(bert_dir, tmp_path / "copy")
    first = resolve_model(copy).content_hash
    (memo,) = (tmp_path / "cache" / "remembered").iterdir()
    assert memo.read_text() == first
    memo.write_text("planted")  # what a later process reads instead of hashing the files
    assert resolve_model(copy).content_hash == "planted"
    (copy / "config.json").write_text((copy / "config.json").read_text())  # the same bytes, written again
    assert resolve_model(copy).content_hash == first


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
        ("torch", {"layer_norm_eps": "abc"}, "layer_norm_eps is 'abc': expected a decimal number"),
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


@pytest.mark.parametrize("change", [{"layer_norm_eps": None}, {"layer_norm_eps": "1e-12"}, {"hidden_act": None}])
def test_a_value_of_a_type_transformers_refuses_is_one_line_on_every_backend(bert_dir, tmp_path, change):
    """torch said "config.json does not describe a model" (transformers' strict fields); the ANE layout took the
    value on and ended in a TypeError or ValueError traceback."""
    model = copy_model(bert_dir, tmp_path / "model")
    _edit_config(model, **change)
    ((key, value),) = change.items()
    for backend in ("ane", "torch"):
        result = run_cli("classify", "awful film", "--model", str(model), "--backend", backend)
        stderr = result.stderr.decode()
        assert result.returncode == 2 and stderr.count("\n") == 1, (backend, stderr[-2000:])
        assert stderr.startswith(f"error: {model / 'config.json'}: {key} is {value!r}: expected "), (backend, stderr)


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


TEXTS = ["I like cheese", "I hate cheesecake", "a", "the film was not good , but the cake was great and i love it"]


@pytest.mark.parametrize("pytorch", [False, True], ids=["safetensors", "pytorch_model.bin"])
def test_a_checkpoint_in_shards_classifies_on_every_backend_as_transformers_loads_it(
    bert_dir, tmp_path, monkeypatch, pytorch
):
    """An index and the shards it names (save_pretrained's max_shard_size) was "has no weights" on every backend."""
    from fastsentiment import Classifier

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    model = shard_model(bert_dir, tmp_path / "sharded", pytorch=pytorch)
    loaded = resolve_model(model)
    assert loaded.weights_path.name == ("pytorch_model.bin.index.json" if pytorch else "model.safetensors.index.json")
    assert len(loaded.weight_files) > 3 and not (model / "model.safetensors").exists()
    reference = transformers_logits(model, TEXTS)
    assert np.abs(reference - transformers_logits(bert_dir, TEXTS)).max() <= 1e-6
    for backend in ("torch", "onnx", "openvino", "ane"):
        logits = Classifier.load(model, backend=backend, precision="fp32").logits(TEXTS)
        whole = Classifier.load(bert_dir, backend=backend, precision="fp32").logits(TEXTS)
        assert np.abs(logits - whole).max() <= 1e-5, backend
        assert np.abs(logits - reference).max() <= 1e-4, backend


def test_every_shard_is_part_of_the_model_and_of_its_cache_key(bert_dir, tmp_path):
    model = shard_model(bert_dir, tmp_path / "sharded")
    shards = sorted(model.glob("model-*-of-*.safetensors"))
    loaded = resolve_model(model)
    names = {file.name for file in loaded.files}
    assert len(shards) > 3 and names >= {"config.json", "model.safetensors.index.json", *(s.name for s in shards)}
    before = loaded.content_hash
    last = shards[-1]  # its last bytes are a tensor's
    last.write_bytes(last.read_bytes()[:-1] + bytes([last.read_bytes()[-1] ^ 1]))
    assert resolve_model(model).content_hash != before


def test_a_shard_index_at_odds_with_its_shards_is_one_line(bert_dir, tmp_path):
    model = shard_model(bert_dir, tmp_path / "sharded")
    index = model / "model.safetensors.index.json"
    content = json.loads(index.read_text())
    next(model.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(ModelError, match=r"the weights lack the shard model-00002-of-\d+\.safetensors that"):
        resolve_model(model)
    for weight_map in ({}, {"bert.pooler.dense.weight": "../model.safetensors"}, ["model-00001.safetensors"]):
        index.write_text(json.dumps({**content, "weight_map": weight_map}))
        with pytest.raises(ModelError, match="expected a weight_map from tensor names to the shard files beside it"):
            resolve_model(model)
    index.write_text("{not json")
    with pytest.raises(ModelError, match="malformed JSON"):
        resolve_model(model)


def test_the_head_of_a_checkpoint_in_shards_is_checked_against_config_json(bert_dir, tmp_path):
    for pytorch in (False, True):
        model = shard_model(bert_dir, tmp_path / f"sharded-{pytorch}", pytorch=pytorch)
        _edit_config(model, **LABELS_AT_ODDS)
        with pytest.raises(ModelError, match=r"the classifier has 2 outputs in the weights but config\.json names 1"):
            resolve_model(model)


def test_the_hub_download_takes_a_checkpoint_in_shards(bert_dir, tmp_path):
    """What snapshot_download's allow_patterns let through (huggingface_hub's own filter) holds every file of a
    sharded model, safetensors or (the fallback of a repository without safetensors) pytorch_model.bin."""
    from huggingface_hub.utils import filter_repo_objects

    from fastsentiment.models.modeldir import HUB_FILES, PYTORCH_HUB_FILES

    for pytorch, patterns in ((False, HUB_FILES), (True, (*HUB_FILES, *PYTORCH_HUB_FILES))):
        model = shard_model(bert_dir, tmp_path / f"sharded-{pytorch}", pytorch=pytorch)
        wanted = sorted(file.name for file in resolve_model(model).files)
        assert sorted(filter_repo_objects(wanted, allow_patterns=list(patterns))) == wanted
    assert not list(
        filter_repo_objects(["pytorch_model.bin", "pytorch_model-00001-of-00002.bin"], allow_patterns=list(HUB_FILES))
    )
