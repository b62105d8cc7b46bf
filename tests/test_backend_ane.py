"""Our Neural-Engine layout against the Hugging Face model it was converted from."""

import numpy as np
import pytest

from fastsentiment import Classifier
from fastsentiment.models import resolve_model
from tiny_models import build_model

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
    from fastsentiment.models.ane.convert import load_hf_state_dict

    state = load_hf_state_dict(resolve_model(bert_dir).weights_path)
    del state["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(KeyError, match=r"layer\.1\.output\.dense\.weight"):
        convert_state_dict(state, "bert", 2)


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
