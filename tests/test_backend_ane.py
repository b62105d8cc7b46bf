"""Our Neural-Engine layout against the Hugging Face model it was converted from."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastsentiment import Classifier
from fastsentiment.models import resolve_model
from tiny_models import build_model, transformers_logits, with_legacy_layernorm_names

TEXTS = [
    "I like cheese",
    "I hate cheesecake",
    "a",
    "the film was not good , but the cake was great and i love it",
    "this was a bad film",
    "good good good good good good good good good good good good good good good good",
]

CONFIGS = [
    ("bert", 1, 32, 4),
    ("bert", 3, 48, 6),
    ("distilbert", 2, 64, 8),
    ("distilbert", 3, 48, 2),
]


@pytest.mark.parametrize(("kind", "layers", "hidden", "heads"), CONFIGS)
def test_ane_layout_matches_hugging_face_on_padded_mixed_length_batches(tmp_path, kind, layers, hidden, heads):
    model = build_model(tmp_path / kind, kind, layers=layers, hidden=hidden, heads=heads, seed=layers)
    reference = Classifier.load(model, backend="torch")
    ane = Classifier.load(model, backend="ane")
    # batch_size 4 puts texts of different lengths in one padded batch
    expected, got = reference.logits(TEXTS, batch_size=4), ane.logits(TEXTS, batch_size=4)
    assert np.abs(expected - got).max() <= 1e-4
    assert np.abs(expected).max() > 0.1  # a model whose logits are all ~0 would prove nothing


def test_bert_token_type_ids_are_mapped(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from fastsentiment.models.ane import ane_model_from_dir

    directory = build_model(tmp_path / "bert", "bert", layers=2, hidden=32, heads=4)
    hf = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    ours = ane_model_from_dir(resolve_model(directory))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    types = torch.randint(0, 2, (3, 12), generator=generator)
    with torch.inference_mode():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, types)
        assert (ours(ids, mask, torch.zeros_like(types)) - got).abs().max() > 1e-3  # token types matter
    assert (expected - got).abs().max() <= 1e-4


def test_converter_rejects_a_checkpoint_with_missing_tensors(bert_dir):
    from fastsentiment.models.ane import convert_state_dict
    from fastsentiment.models.ane.convert import MisfitCheckpoint, load_hf_state_dict

    state = load_hf_state_dict(resolve_model(bert_dir).weights_path)
    del state["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(MisfitCheckpoint, match=r"layer\.1\.output\.dense\.weight") as refused:
        convert_state_dict(state, "bert", 2)
    assert refused.value.missing == ["bert.encoder.layer.1.output.dense.weight"]


def _damaged(bert_dir: Path, folder: Path, config: dict | None = None, drop: str | None = None) -> Path:
    """A copy of the tiny BERT with config.json changed, or a tensor taken out of its weights."""
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(bert_dir, folder))
    if config:
        (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), **config}))
    if drop:
        tensors = load_file(folder / "model.safetensors")
        del tensors[drop]
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


DAMAGE = {
    "vocabulary larger than the weights'": {"config": {"vocab_size": 150}},
    "a layer more than the weights": {"config": {"num_hidden_layers": 3}},
    "another feed-forward size": {"config": {"intermediate_size": 48}},
    "a tensor missing": {"drop": "bert.encoder.layer.1.attention.self.key.weight"},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_weights_that_do_not_fit_config_json_are_refused_as_transformers_loads_refuse_them(bert_dir, tmp_path, damage):
    """The ANE converter (the ane backend, `export coreml`) refuses in the torch backend's words: one line, not a
    traceback from load_state_dict."""
    from fastsentiment.errors import ModelError

    model = _damaged(bert_dir, tmp_path / "damaged", **DAMAGE[damage])
    with pytest.raises(ModelError) as torch_refusal:
        Classifier.load(model, backend="torch")
    with pytest.raises(ModelError) as ane_refusal:
        Classifier.load(model, backend="ane")
    assert str(ane_refusal.value) == str(torch_refusal.value)


def test_unreadable_or_misfit_weights_are_one_line_from_the_command(bert_dir, tmp_path):
    import importlib.util

    from conftest import run_cli

    corrupt = Path(shutil.copytree(bert_dir, tmp_path / "corrupt"))
    (corrupt / "model.safetensors").unlink()
    (corrupt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not a zip archive")
    misfit = _damaged(bert_dir, tmp_path / "misfit", config={"num_hidden_layers": 3})
    for model, message in ((corrupt, "unreadable weights ("), (misfit, "the weights lack bert.encoder.layer.2.")):
        commands = [["classify", "-m", str(model), "-b", "ane", "a fine film"]]
        if importlib.util.find_spec("coremltools"):
            commands.append(["export", "coreml", str(model), str(tmp_path / "m.mlpackage")])
        for args in commands:
            result = run_cli(*args)
            (line,) = result.stderr.decode().splitlines()
            assert result.returncode == 2 and line.startswith(f"error: {model}: {message}"), line


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_layernorm_gamma_and_beta_of_pre_2020_checkpoints_convert_as_transformers_loads_them(
    bert_dir, tmp_path, weights
):
    """Fine-tunes saved before 2020 name their LayerNorm tensors gamma and beta, which transformers renames on load:
    the converter refused them as lacking LayerNorm.weight and LayerNorm.bias."""
    from fastsentiment.models.ane.convert import load_hf_state_dict

    model = with_legacy_layernorm_names(Path(shutil.copytree(bert_dir, tmp_path / "legacy")), weights)
    assert "bert.embeddings.LayerNorm.gamma" in _stored_names(model / weights)
    assert "bert.embeddings.LayerNorm.weight" in load_hf_state_dict(model / weights)
    expected = transformers_logits(model, TEXTS)
    np.testing.assert_allclose(expected, transformers_logits(bert_dir, TEXTS), atol=1e-6)  # transformers renamed
    assert np.abs(Classifier.load(model, backend="ane", precision="fp32").logits(TEXTS) - expected).max() <= 1e-4
    if importlib.util.find_spec("coremltools"):  # `export coreml` converts through the same layout
        from fastsentiment.export.coreml import export_coreml

        assert export_coreml(resolve_model(model), tmp_path / "m.mlpackage", (16,)).is_dir()


def _stored_names(weights: Path) -> set[str]:
    import torch
    from safetensors import safe_open

    if weights.suffix == ".bin":
        return set(torch.load(weights, weights_only=True))
    with safe_open(weights, "np") as tensors:
        return set(tensors.keys())


def test_a_layernorm_weight_of_zero_keeps_its_bias(bert_dir, tmp_path):
    """A pruned channel (LayerNorm weight exactly 0) outputs its bias alone, which (x_hat + b / w) * w cannot give:
    the converter adds it after the product."""
    from safetensors.torch import load_file, save_file

    model = Path(shutil.copytree(bert_dir, tmp_path / "pruned"))
    tensors = load_file(model / "model.safetensors")
    for name in ("bert.encoder.layer.0.output.LayerNorm", "bert.encoder.layer.1.attention.output.LayerNorm"):
        tensors[f"{name}.weight"][[3, 17]] = 0.0
        tensors[f"{name}.bias"][[3, 17]] = 1.5  # far from the 0 the product alone would give
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    expected = Classifier.load(model, backend="torch").logits(TEXTS, batch_size=4)
    assert np.abs(expected - Classifier.load(bert_dir, backend="torch").logits(TEXTS)).max() > 1e-2
    assert np.abs(Classifier.load(model, backend="ane").logits(TEXTS, batch_size=4) - expected).max() <= 1e-4
    half = Classifier.load(model, backend="ane", device="cpu", precision="fp16").logits(TEXTS)
    assert np.abs(half - expected).max() <= 0.05 * np.abs(expected).max()


def test_wrong_layernorm_mapping_moves_the_logits(bert_dir):
    """Loading Hugging Face LayerNorm biases into (x_hat + b) * w unscaled is the experiment's bug."""
    import torch

    from fastsentiment.models.ane import ane_model_from_dir

    model = resolve_model(bert_dir)
    clf = Classifier.load(bert_dir, backend="torch")
    batch = clf.encoder.pad(clf.encoder.encode(TEXTS))
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    with torch.inference_mode():
        right = ane_model_from_dir(model)(ids, mask).numpy()
        wrong = ane_model_from_dir(model, rescale_layernorm_bias=False)(ids, mask).numpy()
    np.testing.assert_allclose(right, clf.logits_for_ids(clf.encoder.encode(TEXTS), batch_size=len(TEXTS)), atol=1e-4)
    # Far outside the 1e-4 parity tolerance: the symptom is detectable on any model with trained LayerNorms.
    assert np.abs(right - wrong).max() > 1e-2


def test_channel_layernorm_in_fp16_survives_the_outliers_of_trained_encoders():
    """Trained encoders' FFN outputs reach 1,000+ in a few channels (all-mpnet-base-v2: 1,151). Squared in fp16
    (max 65,504) that overflowed: the variance became inf and the token's output the bias alone."""
    import torch

    from fastsentiment.models.ane.layers import ChannelLayerNorm

    generator = torch.Generator().manual_seed(0)
    norm = ChannelLayerNorm(768, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(768, generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(768, generator=generator))
    x = torch.randn(3, 768, 1, 7, generator=generator) * 2
    x[:, 5, :, :] = 1_150.0  # one outlier channel, as in the real model
    x[:, 9, :, 2] = -300.0
    x[1] = 0.01 * x[1]  # and one example with small activations
    reference = torch.nn.functional.layer_norm(
        x.permute(0, 2, 3, 1), (768,), norm.weight * 1.0, norm.bias * norm.weight, eps=1e-5
    ).permute(0, 3, 1, 2)  # (x_hat + b) * w == x_hat * w + b * w
    assert torch.allclose(norm(x), reference, atol=1e-4)
    half = norm.half()(x.half()).float()
    assert torch.isfinite(half).all()
    assert (half - reference).abs().max() < 0.02 * reference.abs().max()
