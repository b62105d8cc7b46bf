"""The explicit converter from a Hugging Face BERT/DistilBERT state dict to the ANE layout.

Three kinds of change, nothing hidden in load-time hooks:
- names: Hugging Face module paths become ours (one table per architecture below);
- shapes: every Linear weight (out, in) becomes a 1x1 Conv2d kernel (out, in, 1, 1);
- LayerNorm: our channel LayerNorm computes (x_hat + b') * w, so b' = b / w gives x_hat * w + b exactly.
  `rescale_layernorm_bias=False` skips that last step and reproduces the bug that made the original
  experiment's PyTorch ANE model disagree with CoreML (see docs/ane-layernorm.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastsentiment.models.ane.bert import AneBertForSequenceClassification
from fastsentiment.models.ane.distilbert import AneDistilBertForSequenceClassification
from fastsentiment.models.ane.layers import EncoderConfig
from fastsentiment.models.modeldir import ModelDir

# Hugging Face name (with {i} for the layer) -> (our name, kind). Kinds: linear, channel_norm, copy.
_LAYER_NAMES = {
    "bert": {
        "bert.encoder.layer.{i}.attention.self.query": ("layers.{i}.attention.query", "linear"),
        "bert.encoder.layer.{i}.attention.self.key": ("layers.{i}.attention.key", "linear"),
        "bert.encoder.layer.{i}.attention.self.value": ("layers.{i}.attention.value", "linear"),
        "bert.encoder.layer.{i}.attention.output.dense": ("layers.{i}.attention.output", "linear"),
        "bert.encoder.layer.{i}.attention.output.LayerNorm": ("layers.{i}.attention_norm", "channel_norm"),
        "bert.encoder.layer.{i}.intermediate.dense": ("layers.{i}.expand", "linear"),
        "bert.encoder.layer.{i}.output.dense": ("layers.{i}.contract", "linear"),
        "bert.encoder.layer.{i}.output.LayerNorm": ("layers.{i}.output_norm", "channel_norm"),
    },
    "distilbert": {
        "distilbert.transformer.layer.{i}.attention.q_lin": ("layers.{i}.attention.query", "linear"),
        "distilbert.transformer.layer.{i}.attention.k_lin": ("layers.{i}.attention.key", "linear"),
        "distilbert.transformer.layer.{i}.attention.v_lin": ("layers.{i}.attention.value", "linear"),
        "distilbert.transformer.layer.{i}.attention.out_lin": ("layers.{i}.attention.output", "linear"),
        "distilbert.transformer.layer.{i}.sa_layer_norm": ("layers.{i}.attention_norm", "channel_norm"),
        "distilbert.transformer.layer.{i}.ffn.lin1": ("layers.{i}.expand", "linear"),
        "distilbert.transformer.layer.{i}.ffn.lin2": ("layers.{i}.contract", "linear"),
        "distilbert.transformer.layer.{i}.output_layer_norm": ("layers.{i}.output_norm", "channel_norm"),
    },
}
_MODEL_NAMES = {
    "bert": {
        "bert.embeddings.word_embeddings": ("embeddings.words", "copy"),
        "bert.embeddings.position_embeddings": ("embeddings.positions", "copy"),
        "bert.embeddings.token_type_embeddings": ("embeddings.token_types", "copy"),
        "bert.embeddings.LayerNorm": ("embeddings.norm", "copy"),
        "bert.pooler.dense": ("pooler", "linear"),
        "classifier": ("classifier", "linear"),
    },
    "distilbert": {
        "distilbert.embeddings.word_embeddings": ("embeddings.words", "copy"),
        "distilbert.embeddings.position_embeddings": ("embeddings.positions", "copy"),
        "distilbert.embeddings.LayerNorm": ("embeddings.norm", "copy"),
        "pre_classifier": ("pre_classifier", "linear"),
        "classifier": ("classifier", "linear"),
    },
}
_MODELS = {"bert": AneBertForSequenceClassification, "distilbert": AneDistilBertForSequenceClassification}


def encoder_config(model: ModelDir) -> EncoderConfig:
    """Our explicit config from a Hugging Face config.json."""
    c = model.config
    if model.model_type == "distilbert":
        return EncoderConfig(
            vocab_size=c["vocab_size"],
            hidden_size=c["dim"],
            num_layers=c["n_layers"],
            num_heads=c["n_heads"],
            intermediate_size=c["hidden_dim"],
            max_positions=c["max_position_embeddings"],
            num_labels=len(model.labels),
            activation=c.get("activation", "gelu"),
        )
    return EncoderConfig(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        num_layers=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"],
        max_positions=c["max_position_embeddings"],
        num_labels=len(model.labels),
        layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        activation=c.get("hidden_act", "gelu"),
        type_vocab_size=c.get("type_vocab_size", 2),
    )


def convert_state_dict(
    hf_state: dict[str, torch.Tensor], model_type: str, num_layers: int, *, rescale_layernorm_bias: bool = True
) -> dict[str, torch.Tensor]:
    """Map a Hugging Face state dict onto the ANE model's parameter names and shapes."""
    names = dict(_MODEL_NAMES[model_type])
    for i in range(num_layers):
        names.update(
            {hf.format(i=i): (ours.format(i=i), kind) for hf, (ours, kind) in _LAYER_NAMES[model_type].items()}
        )
    converted: dict[str, torch.Tensor] = {}
    for hf_module, (our_module, kind) in names.items():
        weight = _take(hf_state, f"{hf_module}.weight").float()
        bias = hf_state.get(f"{hf_module}.bias")
        bias = None if bias is None else bias.float()
        if kind == "linear":
            weight = weight[:, :, None, None]
        elif kind == "channel_norm" and rescale_layernorm_bias:
            if bool((weight == 0).any()):
                raise ValueError(f"{hf_module}.weight has zeros: (x_hat + b / w) * w cannot represent it")
            bias = bias / weight
        converted[f"{our_module}.weight"] = weight
        if bias is not None:
            converted[f"{our_module}.bias"] = bias
    return converted


def _take(state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in state:
        raise KeyError(f"the checkpoint has no tensor {name!r}")
    return state[name]


def load_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def ane_model_from_dir(model: ModelDir, *, rescale_layernorm_bias: bool = True) -> nn.Module:
    """Build the ANE-layout model of `model` with converted weights, in fp32 eval mode."""
    config = encoder_config(model)
    network = _MODELS[model.model_type](config)
    state = convert_state_dict(
        load_hf_state_dict(model.weights_path),
        model.model_type,
        config.num_layers,
        rescale_layernorm_bias=rescale_layernorm_bias,
    )
    network.load_state_dict(state, strict=True)
    return network.eval()
