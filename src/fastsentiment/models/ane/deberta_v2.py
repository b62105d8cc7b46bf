"""DeBERTa-v2 (and DeBERTa-v3, which shares its `model_type`) for sequence classification in the ANE layout.

The blocks are BERT's except for attention, which is disentangled: besides the content-to-content score q·k, each
head adds a content-to-position score (c2p: the query against the embedding of its distance to the key) and a
position-to-content score (p2c: the key against the embedding of the same distance), and divides all of them by
sqrt(head size x number of terms). Distances are query minus key, log-bucketed beyond half of `position_buckets`;
the distance embeddings go through the layer's own query and key projections (`share_att_key`, DeBERTa-v3) or
through projections of their own. Elsewhere: absolute positions only where `position_biased_input` says so (v3:
none), an optional convolution beside the first layer (v2 xlarge), and dense -> activation -> classifier on [CLS].

Every score is laid out (batch, key, 1, query) as in layers.PerHeadAttention. A distance's scores are computed
for the 2S - 1 distances a sequence of S tokens can have (not the whole table) and picked per (key, query) pair
with one gather along the distance axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastsentiment.models.ane.layers import (
    ChannelLayerNorm,
    EncoderConfig,
    EncoderLayer,
    PerHeadAttention,
    activation,
    key_mask,
    to_channels_first,
)
from fastsentiment.models.architectures import ARCHITECTURES


@dataclass(frozen=True)
class DisentangledSettings:
    """What a DeBERTa-v2 config.json says beyond the encoder's shape (Hugging Face's defaults where it is silent)."""

    relative_attention: bool
    content_to_position: bool
    position_to_content: bool
    position_buckets: int  # <= 0: distances are not bucketed
    max_relative_positions: int
    share_att_key: bool
    norm_relative_embeddings: bool
    position_biased_input: bool
    embedding_size: int
    conv_kernel_size: int  # 0: no convolution
    conv_groups: int
    conv_activation: str
    pooler_activation: str

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DisentangledSettings:
        config = ARCHITECTURES["deberta-v2"].with_defaults(config)
        kinds = config.get("pos_att_type") or []
        if isinstance(kinds, str):  # "p2c|c2p", as older configs write it
            kinds = kinds.split("|")
        kinds = {kind.strip().lower() for kind in kinds}
        max_relative = int(config.get("max_relative_positions", -1))
        return cls(
            relative_attention=bool(config.get("relative_attention", False)),
            content_to_position="c2p" in kinds,
            position_to_content="p2c" in kinds,
            position_buckets=int(config.get("position_buckets", -1)),
            max_relative_positions=max_relative if max_relative >= 1 else int(config["max_position_embeddings"]),
            share_att_key=bool(config.get("share_att_key", False)),
            norm_relative_embeddings="layer_norm" in str(config.get("norm_rel_ebd", "none")).lower(),
            position_biased_input=bool(config.get("position_biased_input", True)),
            embedding_size=int(config.get("embedding_size") or config["hidden_size"]),
            conv_kernel_size=int(config.get("conv_kernel_size", 0)),
            conv_groups=int(config.get("conv_groups", 1)),
            conv_activation=config.get("conv_act", "tanh"),
            pooler_activation=config.get("pooler_hidden_act", "gelu"),
        )

    @property
    def span(self) -> int:
        """Distances from -span to span - 1 have an embedding (the table has 2 x span rows)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

    @property
    def score_terms(self) -> int:
        # Counted from the config whether or not relative attention is on, as Hugging Face scales.
        return 1 + self.content_to_position + self.position_to_content


def bucketed_distances(length: int, settings: DisentangledSettings, device: torch.device) -> torch.Tensor:
    """(S_q, S_k) distance (query - key) of every pair, log-bucketed as DeBERTa-v2 does: distances up to half the
    buckets keep their value, longer ones share buckets spaced logarithmically up to max_relative_positions."""
    positions = torch.arange(length, device=device)
    distance = positions[:, None] - positions[None, :]
    buckets, farthest = settings.position_buckets, settings.max_relative_positions
    if buckets <= 0 or farthest <= 0:
        return distance
    half = buckets // 2
    magnitude = distance.abs()
    # The same float32 operations as Hugging Face's make_log_bucket_position, so that ceil() rounds alike.
    ratio = torch.log(magnitude.clamp(min=half - 1) / half) / torch.log(torch.tensor((farthest - 1) / half))
    logarithmic = (torch.ceil(ratio * (half - 1)) + half).long() * distance.sign()
    return torch.where(magnitude <= half, distance, logarithmic)


class DebertaEmbeddings(nn.Module):
    def __init__(self, config: EncoderConfig, settings: DisentangledSettings) -> None:
        super().__init__()
        width = settings.embedding_size
        self.words = nn.Embedding(config.vocab_size, width)
        self.positions = nn.Embedding(config.max_positions, width) if settings.position_biased_input else None
        self.token_types = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size > 0 else None
        self.project = nn.Linear(width, config.hidden_size, bias=False) if width != config.hidden_size else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.words(input_ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
        if self.token_types is not None:  # one segment: the first row, added to every token
            x = x + self.token_types.weight[0]
        if self.project is not None:
            x = self.project(x)
        # Padding tokens leave the embeddings as zeros, as Hugging Face's do.
        return to_channels_first(self.norm(x) * attention_mask[:, :, None].to(x.dtype))


class DisentangledAttention(PerHeadAttention):
    """PerHeadAttention's projections and layout, with the distance scores added to each head's."""

    def __init__(self, config: EncoderConfig, settings: DisentangledSettings) -> None:
        super().__init__(config.hidden_size, config.num_heads)
        hidden = config.hidden_size
        self.scale = 1.0 / math.sqrt(self.head_size * settings.score_terms)
        relative = settings.relative_attention
        self.content_to_position = relative and settings.content_to_position
        self.position_to_content = relative and settings.position_to_content
        separate = not settings.share_att_key
        self.position_key = nn.Conv2d(hidden, hidden, 1) if separate and self.content_to_position else None
        self.position_query = nn.Conv2d(hidden, hidden, 1) if separate and self.position_to_content else None

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor, distances: torch.Tensor, pairs: torch.Tensor
    ) -> torch.Tensor:
        # distances: (1, C, 1, D), the embeddings of the D distances this length can have; pairs: (B, S_k, 1, S_q),
        # the index into D of each key-query pair's distance.
        queries = self.query(x).split(self.head_size, dim=1)  # (B, d, 1, S_q) per head
        keys = self.key(x).transpose(1, 3).split(self.head_size, dim=3)  # (B, S_k, 1, d) per head
        values = self.value(x).split(self.head_size, dim=1)
        # The distances' projections laid out as the keys and the queries are, so that every score is the same
        # einsum (the pattern the CoreML conversion keeps as one; a matmul against a 2-D table it would not).
        batch = x.shape[0]
        distance_keys = distance_queries = [None] * len(queries)
        if self.content_to_position:
            projected = (self.position_key or self.key)(distances).expand(batch, -1, -1, -1)
            distance_keys = projected.transpose(1, 3).split(self.head_size, dim=3)  # (B, D, 1, d) per head
        if self.position_to_content:
            projected = (self.position_query or self.query)(distances).expand(batch, -1, -1, -1)
            distance_queries = projected.split(self.head_size, dim=1)  # (B, d, 1, D) per head
        heads = []
        for q, k, v, position_k, position_q in zip(queries, keys, values, distance_keys, distance_queries, strict=True):
            scores = torch.einsum("bchq,bkhc->bkhq", q, k)
            if position_k is not None:  # the query against its distance to each key: (B, D, 1, S_q), then picked
                scores = scores + torch.einsum("bchq,bkhc->bkhq", q, position_k).gather(1, pairs)
            if position_q is not None:  # the key against the same distance: (B, S_k, 1, D), then picked
                scores = scores + torch.einsum("bchq,bkhc->bkhq", position_q, k).gather(3, pairs)
            weights = (scores * self.scale + key_mask).softmax(dim=1)
            heads.append(torch.einsum("bkhq,bchk->bchq", weights, v))
        return self.output(torch.cat(heads, dim=1))


class FirstLayerConvolution(nn.Module):
    """DeBERTa-v2 xlarge's convolution over the embeddings, added to the first layer's output: a (1, k) Conv2d over
    the sequence axis, which is the last axis of this layout."""

    def __init__(self, config: EncoderConfig, settings: DisentangledSettings) -> None:
        super().__init__()
        size = settings.conv_kernel_size
        self.conv = nn.Conv2d(
            config.hidden_size,
            config.hidden_size,
            (1, size),
            padding=(0, (size - 1) // 2),
            groups=settings.conv_groups,
        )
        self.activation = activation(settings.conv_activation)
        self.norm = ChannelLayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, embeddings: torch.Tensor, first_layer: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (B, 1, 1, S), 1 for tokens and 0 for padding.
        convolved = self.activation(self.conv(embeddings) * tokens)
        return self.norm(first_layer + convolved) * tokens


class AneDebertaV2ForSequenceClassification(nn.Module):
    def __init__(self, config: EncoderConfig, settings: DisentangledSettings) -> None:
        super().__init__()
        self.config, self.settings = config, settings
        self.embeddings = DebertaEmbeddings(config, settings)
        if settings.relative_attention:
            self.relative_positions = nn.Embedding(2 * settings.span, config.hidden_size)
            self.relative_norm = (
                nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                if settings.norm_relative_embeddings
                else None
            )
        self.layers = nn.ModuleList(
            EncoderLayer(config, DisentangledAttention(config, settings)) for _ in range(config.num_layers)
        )
        self.convolution = FirstLayerConvolution(config, settings) if settings.conv_kernel_size > 0 else None
        self.dense = nn.Conv2d(config.hidden_size, config.hidden_size, 1)
        self.pooler_activation = activation(settings.pooler_activation)
        self.classifier = nn.Conv2d(config.hidden_size, config.num_labels, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeddings = self.embeddings(input_ids, attention_mask)
        mask = key_mask(attention_mask, embeddings.dtype)
        distances, pairs = self._relative_positions(input_ids.shape[0], input_ids.shape[1], embeddings.dtype)
        x = embeddings
        for index, layer in enumerate(self.layers):
            x = layer(x, mask, distances, pairs)
            if index == 0 and self.convolution is not None:
                x = self.convolution(embeddings, x, attention_mask[:, None, None, :].to(x.dtype))
        first = self.pooler_activation(self.dense(x[:, :, :, :1]))  # the [CLS] position
        return self.classifier(first).flatten(1)  # (B, labels)

    def _relative_positions(self, batch: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The embeddings of the distances a sequence of `length` tokens can have, (1, C, 1, D), and each key-query
        pair's index among them, (B, S_k, 1, S_q); empty tensors where attention has no relative terms."""
        device = self.dense.weight.device
        if not self.settings.relative_attention:
            return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
        span = self.settings.span
        # Bucketed distances never exceed the plain ones, so rows [span - S + 1, span + S - 1] of the table (those
        # that exist) are all a pair can pick.
        first, last = max(0, span - length + 1), min(2 * span - 1, span + length - 1)
        rows = torch.arange(first, last + 1, device=device)
        table = self.relative_positions(rows)
        if self.relative_norm is not None:
            table = self.relative_norm(table)
        index = (bucketed_distances(length, self.settings, device) + span).clamp(0, 2 * span - 1) - first
        pairs = index.transpose(0, 1)[None, :, None, :].expand(batch, length, 1, length)  # (B, S_k, 1, S_q)
        return to_channels_first(table[None].to(dtype)), pairs


NETWORK = AneDebertaV2ForSequenceClassification
SETTINGS = DisentangledSettings.from_config
# Hugging Face weight name (with {i} for the layer) -> (our name, kind). Entries for parts a configuration does
# without (separate distance projections, absolute positions, the convolution) are skipped by the converter when
# the network has no such module.
HF_LAYER_NAMES = {
    "deberta.encoder.layer.{i}.attention.self.query_proj": ("layers.{i}.attention.query", "linear"),
    "deberta.encoder.layer.{i}.attention.self.key_proj": ("layers.{i}.attention.key", "linear"),
    "deberta.encoder.layer.{i}.attention.self.value_proj": ("layers.{i}.attention.value", "linear"),
    "deberta.encoder.layer.{i}.attention.self.pos_key_proj": ("layers.{i}.attention.position_key", "linear"),
    "deberta.encoder.layer.{i}.attention.self.pos_query_proj": ("layers.{i}.attention.position_query", "linear"),
    "deberta.encoder.layer.{i}.attention.output.dense": ("layers.{i}.attention.output", "linear"),
    "deberta.encoder.layer.{i}.attention.output.LayerNorm": ("layers.{i}.attention_norm", "channel_norm"),
    "deberta.encoder.layer.{i}.intermediate.dense": ("layers.{i}.expand", "linear"),
    "deberta.encoder.layer.{i}.output.dense": ("layers.{i}.contract", "linear"),
    "deberta.encoder.layer.{i}.output.LayerNorm": ("layers.{i}.output_norm", "channel_norm"),
}
HF_MODEL_NAMES = {
    "deberta.embeddings.word_embeddings": ("embeddings.words", "copy"),
    "deberta.embeddings.position_embeddings": ("embeddings.positions", "copy"),
    "deberta.embeddings.token_type_embeddings": ("embeddings.token_types", "copy"),
    "deberta.embeddings.embed_proj": ("embeddings.project", "copy"),
    "deberta.embeddings.LayerNorm": ("embeddings.norm", "copy"),
    "deberta.encoder.rel_embeddings": ("relative_positions", "copy"),
    "deberta.encoder.LayerNorm": ("relative_norm", "copy"),
    "deberta.encoder.conv.conv": ("convolution.conv", "conv1d"),
    "deberta.encoder.conv.LayerNorm": ("convolution.norm", "channel_norm"),
    "pooler.dense": ("dense", "linear"),
    "classifier": ("classifier", "linear"),
}
