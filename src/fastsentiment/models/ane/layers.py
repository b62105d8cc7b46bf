"""Building blocks of the Apple Neural Engine (ANE) layout, after "Deploying Transformers on the
Apple Neural Engine" (Apple, 2022).

Activations are (batch, channels, 1, sequence). The ANE's native layout is channels-first 4-D,
so this shape lets every projection run as a 1x1 convolution (the ANE's fastest op) and keeps the
last axis, which the ANE pads to 64 bytes, equal to the sequence instead of the hidden size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# An additive key mask that stays finite in fp16 (finfo(float32).min overflows when CoreML casts).
MASK_VALUE = -1e4


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    num_labels: int
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    type_vocab_size: int = 0  # BERT's token types; DistilBERT has none
    position_offset: int = 0  # RoBERTa numbers positions from padding_idx + 1


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, 1, S) tensors, computed as (x_hat + bias) * weight.

    That order is the one Apple's reference layout uses. It differs from torch's x_hat * weight + bias,
    so Hugging Face parameters must be converted with bias / weight (see convert.py): loading them
    unchanged shifts every LayerNorm output by bias * (weight - 1).
    """

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_parameter("shift", None)

    def add_shift(self) -> None:
        """Add a `shift` after the product: the Hugging Face bias of channels whose weight is 0 (a pruned model's),
        which (x_hat + b') * 0 cannot give. Only such models carry it, so the others' graphs keep one op less."""
        self.shift = nn.Parameter(torch.zeros_like(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        # fp16 squares overflow above 256: the FFN outputs of trained encoders reach 1,000 and more in a few
        # channels (all-mpnet-base-v2: 1,151), which made the variance inf and the token's output the bias alone.
        # Dividing by the token's largest deviation (never below 1) first keeps every square <= 1; the result is
        # the same normalisation: (c/s) / sqrt(mean((c/s)^2) + eps/s^2) = c / sqrt(mean(c^2) + eps).
        spread = centred.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
        scaled = centred / spread
        normalised = scaled * torch.rsqrt(scaled.pow(2).mean(dim=1, keepdim=True) + self.eps / spread.pow(2))
        result = (normalised + self.bias.view(1, -1, 1, 1)) * self.weight.view(1, -1, 1, 1)
        return result if self.shift is None else result + self.shift.view(1, -1, 1, 1)


class PerHeadAttention(nn.Module):
    """Multi-head self-attention with 1x1-conv projections and one einsum per head.

    Splitting heads into a Python list of (B, d, 1, S) tensors avoids the 5-D reshapes and transposes
    of the usual implementation, which the ANE cannot run; each head is then two small matmuls.
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.head_size = hidden // heads
        self.scale = 1.0 / math.sqrt(self.head_size)
        self.query = nn.Conv2d(hidden, hidden, 1)
        self.key = nn.Conv2d(hidden, hidden, 1)
        self.value = nn.Conv2d(hidden, hidden, 1)
        self.output = nn.Conv2d(hidden, hidden, 1)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, head_bias: torch.Tensor | None = None) -> torch.Tensor:
        # key_mask: (B, S_k, 1, 1), 0 for tokens and MASK_VALUE for padding. head_bias: (heads, S_k, 1, S_q),
        # a per-head additive score bias (MPNet's relative positions).
        queries = self.query(x).split(self.head_size, dim=1)
        keys = self.key(x).transpose(1, 3).split(self.head_size, dim=3)  # (B, S, 1, d) per head
        values = self.value(x).split(self.head_size, dim=1)
        heads = []
        for head, (q, k, v) in enumerate(zip(queries, keys, values, strict=True)):
            scores = torch.einsum("bchq,bkhc->bkhq", q, k) * self.scale + key_mask  # (B, S_k, 1, S_q)
            if head_bias is not None:
                scores = scores + head_bias[head]
            weights = scores.softmax(dim=1)
            heads.append(torch.einsum("bkhq,bchk->bchq", weights, v))
        return self.output(torch.cat(heads, dim=1))


class EncoderLayer(nn.Module):
    """A post-LayerNorm transformer block, as in BERT and DistilBERT; `attention` replaces the plain multi-head
    attention where a family scores differently (it gets the block's input, the key mask and `forward`'s extra
    arguments)."""

    def __init__(self, config: EncoderConfig, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.attention = attention or PerHeadAttention(config.hidden_size, config.num_heads)
        self.attention_norm = ChannelLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.expand = nn.Conv2d(config.hidden_size, config.intermediate_size, 1)
        self.contract = nn.Conv2d(config.intermediate_size, config.hidden_size, 1)
        self.output_norm = ChannelLayerNorm(config.hidden_size, config.layer_norm_eps)
        self.activation = activation(config.activation)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, *attention_inputs: torch.Tensor | None) -> torch.Tensor:
        x = self.attention_norm(x + self.attention(x, key_mask, *attention_inputs))
        return self.output_norm(x + self.contract(self.activation(self.expand(x))))


def activation(name: str):
    """Hugging Face's activation of this name (architectures.ANE_ACTIVATIONS lists them for the checks before a
    load)."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("silu", "swish"):
        return F.silu
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"unsupported activation {name!r}")


def positions_after_padding(input_ids: torch.Tensor, position_offset: int) -> torch.Tensor:
    """RoBERTa's and MPNet's position ids as Hugging Face derives them: a token's count among the non-padding
    tokens up to it, after padding_idx (= position_offset - 1), and padding_idx for padding. With right padding this
    is index + position_offset, except after a padding token inside a text (the tokenizer turns a literal "<pad>"
    into one), which Hugging Face does not count."""
    padding_idx = position_offset - 1
    real = (input_ids != padding_idx).to(torch.int32)
    return (torch.cumsum(real, dim=1).to(torch.int32) * real + padding_idx).long()


def key_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, S) 1/0 attention mask -> (B, S, 1, 1) additive mask over keys, in the activations' `dtype`."""
    return ((1.0 - attention_mask.to(dtype)) * MASK_VALUE)[:, :, None, None]


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, S, C) -> (B, C, 1, S)."""
    return x.transpose(1, 2).unsqueeze(2)
