"""MPNet for sequence classification in the ANE layout.

Like RoBERTa (positions from `padding_idx + 1`, with padding_idx fixed at 1 whatever pad_token_id says, as in
Hugging Face; a dense -> tanh -> out_proj head on <s>), without token
types, and with one addition: every layer's attention scores get a per-head bias looked up from the
bucketed distance between query and key (log-spaced beyond 8 positions, capped at 128). The bias depends
on the sequence length only, so it is computed once per call and shared by all layers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fastsentiment.models.ane.layers import (
    EncoderConfig,
    EncoderLayer,
    key_mask,
    positions_after_padding,
    to_channels_first,
)

# Hugging Face's MPNet buckets distances into 32 whatever its config says; its table of biases has
# relative_attention_num_buckets rows (`bias_rows`), of which only the first 32 are ever looked up.
BUCKETS = 32
MAX_DISTANCE = 128


def bias_rows(config: dict[str, Any]) -> int:
    """Rows of the relative-position bias table, as Hugging Face sizes it from config.json."""
    return int(config.get("relative_attention_num_buckets", BUCKETS))


def relative_buckets(length: int, device: torch.device) -> torch.Tensor:
    """(S_k, S_q) bucket of each key position relative to each query position.

    Half the buckets are for keys after the query; within a half, distances below a quarter of the buckets
    have a bucket each and longer ones share log-spaced buckets up to MAX_DISTANCE.
    """
    positions = torch.arange(length, device=device)
    offset = positions[:, None] - positions[None, :]  # key - query, laid out (key, query)
    half = BUCKETS // 2
    exact = half // 2
    after = (offset > 0).long() * half
    distance = offset.abs()
    far = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(MAX_DISTANCE / exact) * (half - exact))
    far = far.long().clamp(max=half - 1)
    return after + torch.where(distance < exact, distance, far)


class MPNetEmbeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.position_offset = config.position_offset
        self.words = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = nn.Embedding(config.max_positions, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = positions_after_padding(input_ids, self.position_offset)
        return to_channels_first(self.norm(self.words(input_ids) + self.positions(positions)))


class AneMPNetForSequenceClassification(nn.Module):
    def __init__(self, config: EncoderConfig, bias_rows: int = BUCKETS) -> None:
        super().__init__()
        self.config = config
        self.embeddings = MPNetEmbeddings(config)
        self.relative_bias = nn.Embedding(bias_rows, config.num_heads)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.dense = nn.Conv2d(config.hidden_size, config.hidden_size, 1)
        self.out_proj = nn.Conv2d(config.hidden_size, config.num_labels, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = key_mask(attention_mask, x.dtype)
        bias = self.relative_bias(relative_buckets(input_ids.shape[1], input_ids.device))  # (S_k, S_q, heads)
        head_bias = bias.permute(2, 0, 1).unsqueeze(2).to(x.dtype)  # (heads, S_k, 1, S_q)
        for layer in self.layers:
            x = layer(x, mask, head_bias)
        first = torch.tanh(self.dense(x[:, :, :, :1]))
        return self.out_proj(first).flatten(1)


NETWORK = AneMPNetForSequenceClassification
SETTINGS = bias_rows
HF_LAYER_NAMES = {
    "mpnet.encoder.layer.{i}.attention.attn.q": ("layers.{i}.attention.query", "linear"),
    "mpnet.encoder.layer.{i}.attention.attn.k": ("layers.{i}.attention.key", "linear"),
    "mpnet.encoder.layer.{i}.attention.attn.v": ("layers.{i}.attention.value", "linear"),
    "mpnet.encoder.layer.{i}.attention.attn.o": ("layers.{i}.attention.output", "linear"),
    "mpnet.encoder.layer.{i}.attention.LayerNorm": ("layers.{i}.attention_norm", "channel_norm"),
    "mpnet.encoder.layer.{i}.intermediate.dense": ("layers.{i}.expand", "linear"),
    "mpnet.encoder.layer.{i}.output.dense": ("layers.{i}.contract", "linear"),
    "mpnet.encoder.layer.{i}.output.LayerNorm": ("layers.{i}.output_norm", "channel_norm"),
}
HF_MODEL_NAMES = {
    "mpnet.embeddings.word_embeddings": ("embeddings.words", "copy"),
    "mpnet.embeddings.position_embeddings": ("embeddings.positions", "copy"),
    "mpnet.embeddings.LayerNorm": ("embeddings.norm", "copy"),
    "mpnet.encoder.relative_attention_bias": ("relative_bias", "copy"),
    "classifier.dense": ("dense", "linear"),
    "classifier.out_proj": ("out_proj", "linear"),
}
