"""The explicit converter from a Hugging Face state dict to the ANE layout (every family with a module here).

Three kinds of change, nothing hidden in load-time hooks:
- names: Hugging Face module paths become ours (one table per architecture, in its ANE module);
- shapes: every Linear weight (out, in) becomes a 1x1 Conv2d kernel (out, in, 1, 1), a Conv1d kernel over the
  sequence (out, in, k) a (1, k) Conv2d kernel (out, in, 1, k);
- LayerNorm: our channel LayerNorm computes (x_hat + b') * w, so b' = b / w gives x_hat * w + b exactly; a
  channel whose w is 0 (a pruned model's) gets b' = 0 and its b as a shift added after the product.
  `rescale_layernorm_bias=False` skips that last step and reproduces the bug that made the original
  experiment's PyTorch ANE model disagree with CoreML (see docs/ane-layernorm.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from fastsentiment.models.ane.layers import EncoderConfig
from fastsentiment.models.architectures import ARCHITECTURES
from fastsentiment.models.modeldir import SHARD_INDEX_SUFFIX, ModelDir, shard_map
from fastsentiment.models.network import CORRUPT_CHECKPOINT, refuse_misfit_weights, unreadable_weights


def _ane_module(model_type: str) -> ModuleType:
    architecture = ARCHITECTURES[model_type]
    if architecture.ane_module is None:
        raise ValueError(f"no Neural-Engine layout for model_type={model_type!r}")
    return importlib.import_module(f"fastsentiment.models.ane.{architecture.ane_module}")


def encoder_config(model: ModelDir) -> EncoderConfig:
    """Our explicit config from a Hugging Face config.json, with transformers' defaults where it is silent."""
    architecture = model.architecture
    c = architecture.with_defaults(model.config)
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
        layer_norm_eps=float(c.get(eps_key, 1e-12)) if eps_key else 1e-12,
        activation=c.get(architecture.activation_key, "gelu"),
        type_vocab_size=c.get("type_vocab_size", 2 if architecture.token_type_ids else 0),
        position_offset=architecture.position_offset(c),
    )


class MisfitCheckpoint(ValueError):
    """The checkpoint lacks tensors the network takes (`missing`), or holds them in other shapes (`mismatched`:
    name, shape in the checkpoint, shape the network takes), all by their Hugging Face names and layout."""

    def __init__(self, missing: list[str], mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        self.missing, self.mismatched = missing, mismatched
        named = [*missing[:1], *(name for name, _, _ in mismatched[:1])]
        super().__init__(f"{len(missing)} tensor(s) missing, {len(mismatched)} of another shape: {', '.join(named)}")


def convert_state_dict(
    hf_state: dict[str, torch.Tensor],
    model_type: str,
    num_layers: int,
    *,
    rescale_layernorm_bias: bool = True,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Map a Hugging Face state dict onto the ANE model's parameter names and shapes. With `parameters` (the
    network's own state dict), table entries for modules this configuration of the network does not have are
    skipped, and every tensor it takes must be in the checkpoint in its shape; without, every entry's weight must
    be there. Raises MisfitCheckpoint otherwise."""
    module = _ane_module(model_type)
    names = dict(module.HF_MODEL_NAMES)
    for i in range(num_layers):
        names.update({hf.format(i=i): (ours.format(i=i), kind) for hf, (ours, kind) in module.HF_LAYER_NAMES.items()})
    if parameters is not None:
        names = {hf: (ours, kind) for hf, (ours, kind) in names.items() if f"{ours}.weight" in parameters}
    _check_fit(hf_state, names, parameters)
    converted: dict[str, torch.Tensor] = {}
    for hf_module, (our_module, kind) in names.items():
        weight = hf_state[f"{hf_module}.weight"].float()
        bias = hf_state.get(f"{hf_module}.bias")
        bias = None if bias is None else bias.float()
        if kind == "linear":
            weight = weight[:, :, None, None]
        elif kind == "conv1d":
            weight = weight[:, :, None, :]
        elif kind == "channel_norm" and rescale_layernorm_bias:
            pruned = weight == 0
            if bool(pruned.any()):  # x_hat * 0 + b is b alone, which no b' in (x_hat + b') * 0 gives
                converted[f"{our_module}.shift"] = torch.where(pruned, bias, 0.0)
            bias = (bias / weight.masked_fill(pruned, 1.0)).masked_fill(pruned, 0.0)
        converted[f"{our_module}.weight"] = weight
        if bias is not None:
            converted[f"{our_module}.bias"] = bias
    return converted


def _check_fit(
    hf_state: dict[str, torch.Tensor],
    names: dict[str, tuple[str, str]],
    parameters: Mapping[str, torch.Tensor] | None,
) -> None:
    missing, mismatched = [], []
    for hf_module, (our_module, kind) in names.items():
        for part in ("weight", "bias"):
            hf_name, ours = f"{hf_module}.{part}", f"{our_module}.{part}"
            wanted = part == "weight" if parameters is None else ours in parameters
            if hf_name not in hf_state:
                missing += [hf_name] if wanted else []
            elif parameters is not None and wanted:
                stored, expected = tuple(hf_state[hf_name].shape), tuple(parameters[ours].shape)
                if part == "weight" and kind in ("linear", "conv1d"):  # the Conv2d kernel in Hugging Face's layout
                    expected = expected[:2] + expected[3:] if kind == "conv1d" else expected[:2]
                if stored != expected:
                    mismatched.append((hf_name, stored, expected))
    if missing or mismatched:
        raise MisfitCheckpoint(sorted(missing), sorted(mismatched))


# Names of LayerNorm parameters in checkpoints saved before 2020 (TensorFlow's), which transformers renames on load.
LEGACY_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


def load_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, or of every shard a shard index names, under transformers' names."""
    if path.name.endswith(SHARD_INDEX_SUFFIX):
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(shard_map(path).values())):
            state.update(_load_weights_file(path.parent / shard))
    else:
        state = _load_weights_file(path)
    return {_current_name(name): tensor for name, tensor in state.items()}


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _current_name(name: str) -> str:
    for legacy, current in LEGACY_NAMES.items():
        if name.endswith(legacy):
            return name.removesuffix(legacy) + current
    return name


def ane_model_from_dir(model: ModelDir, *, rescale_layernorm_bias: bool = True) -> nn.Module:
    """Build the ANE-layout model of `model` with converted weights, in fp32 eval mode. Weights that cannot be
    read, or do not fit config.json, are refused with ModelError in network.load_network's words."""
    from safetensors import SafetensorError

    config = encoder_config(model)
    module = _ane_module(model.model_type)
    # A family whose layout depends on more of config.json than the encoder's shape reads it with its SETTINGS.
    settings = getattr(module, "SETTINGS", None)
    network = module.NETWORK(config) if settings is None else module.NETWORK(config, settings(model.config))
    try:
        # (torch.load says RuntimeError for a file that is not the zip archive it writes)
        hf_state = load_hf_state_dict(model.weights_path)
    except (*CORRUPT_CHECKPOINT, RuntimeError, SafetensorError, OSError) as error:
        raise unreadable_weights(model, error) from None
    try:
        state = convert_state_dict(
            hf_state,
            model.model_type,
            config.num_layers,
            rescale_layernorm_bias=rescale_layernorm_bias,
            parameters=network.state_dict(),
        )
    except MisfitCheckpoint as misfit:
        refuse_misfit_weights(model, misfit.missing, misfit.mismatched)
        raise  # not reached: a misfit names at least one tensor
    for name in state:
        if name.endswith(".shift"):  # a LayerNorm with pruned channels (see convert_state_dict)
            network.get_submodule(name.removesuffix(".shift")).add_shift()
    network.load_state_dict(state, strict=True)
    return network.eval()
