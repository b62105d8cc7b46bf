"""The explicit converter from a Hugging Face state dict to the ANE layout (every family with a module here).

Three kinds of change, nothing hidden in load-time hooks:
- names: Hugging Face module paths become ours (one table per architecture, in its ANE module);
- shapes: every Linear weight (out, in) becomes a 1x1 Conv2d kernel (out, in, 1, 1), a Conv1d kernel over the
  sequence (out, in, k) a (1, k) Conv2d kernel (out, in, 1, k);
- LayerNorm: our channel LayerNorm computes (x_hat + b') * w, so b' = b / w gives x_hat * w + b exactly.
  `rescale_layernorm_bias=False` skips that last step and reproduces the bug that made the original
  experiment's PyTorch ANE model disagree with CoreML (see docs/ane-layernorm.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from fastsentiment.models.ane.layers import EncoderConfig
from fastsentiment.models.architectures import ARCHITECTURES
from fastsentiment.models.modeldir import ModelDir


def _ane_module(model_type: str) -> ModuleType:
    architecture = ARCHITECTURES[model_type]
    if architecture.ane_module is None:
        raise ValueError(f"no Neural-Engine layout for model_type={model_type!r}")
    return importlib.import_module(f"fastsentiment.models.ane.{architecture.ane_module}")


def encoder_config(model: ModelDir) -> EncoderConfig:
    """Our explicit config from a Hugging Face config.json."""
    c = model.config
    architecture = model.architecture
    shape = architecture.encoder_shape(c)
    eps_key = architecture.layer_norm_eps_key
    return EncoderConfig(
        vocab_size=c["vocab_size"],
        hidden_size=shape["hidden"],
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        max_positions=c["max_position_embeddings"],
        num_labels=len(model.labels),
        layer_norm_eps=c.get(eps_key, 1e-12) if eps_key else 1e-12,
        activation=c.get(architecture.activation_key, "gelu"),
        type_vocab_size=c.get("type_vocab_size", 2 if architecture.token_type_ids else 0),
        position_offset=architecture.position_offset(c),
    )


def convert_state_dict(
    hf_state: dict[str, torch.Tensor],
    model_type: str,
    num_layers: int,
    *,
    rescale_layernorm_bias: bool = True,
    parameters: Collection[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Map a Hugging Face state dict onto the ANE model's parameter names and shapes. With `parameters` (the
    network's own names), table entries for modules this configuration of the network does not have are skipped;
    every other entry must be in the checkpoint."""
    module = _ane_module(model_type)
    names = dict(module.HF_MODEL_NAMES)
    for i in range(num_layers):
        names.update({hf.format(i=i): (ours.format(i=i), kind) for hf, (ours, kind) in module.HF_LAYER_NAMES.items()})
    converted: dict[str, torch.Tensor] = {}
    for hf_module, (our_module, kind) in names.items():
        if parameters is not None and f"{our_module}.weight" not in parameters:
            continue
        weight = _take(hf_state, f"{hf_module}.weight").float()
        bias = hf_state.get(f"{hf_module}.bias")
        bias = None if bias is None else bias.float()
        if kind == "linear":
            weight = weight[:, :, None, None]
        elif kind == "conv1d":
            weight = weight[:, :, None, :]
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
    module = _ane_module(model.model_type)
    # A family whose layout depends on more of config.json than the encoder's shape reads it with its SETTINGS.
    settings = getattr(module, "SETTINGS", None)
    network = module.NETWORK(config) if settings is None else module.NETWORK(config, settings(model.config))
    state = convert_state_dict(
        load_hf_state_dict(model.weights_path),
        model.model_type,
        config.num_layers,
        rescale_layernorm_bias=rescale_layernorm_bias,
        parameters=network.state_dict().keys(),
    )
    network.load_state_dict(state, strict=True)
    return network.eval()
