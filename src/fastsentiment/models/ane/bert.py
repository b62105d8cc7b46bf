"""BERT (and MiniLM) for sequence classification in the ANE layout."""

from __future__ import annotations

import torch
from torch import nn

from fastsentiment.models.ane.layers import EncoderConfig, EncoderLayer, key_mask, to_channels_first


class BertEmbeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.words = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_types = nn.Embedding(config.type_vocab_size, config.hidden_size)
        # Embeddings are (B, S, C); this LayerNorm is the standard one, before the switch to (B, C, 1, S).
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = self.words(input_ids) + self.positions(positions)[None] + self.token_types(token_type_ids)
        return to_channels_first(self.norm(summed))


class AneBertForSequenceClassification(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.pooler = nn.Conv2d(config.hidden_size, config.hidden_size, 1)
        self.classifier = nn.Conv2d(config.hidden_size, config.num_labels, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        mask = key_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        pooled = torch.tanh(self.pooler(x[:, :, :, :1]))  # the [CLS] position
        return self.classifier(pooled).flatten(1)  # (B, labels)


NETWORK = AneBertForSequenceClassification
# Hugging Face weight name (with {i} for the layer) -> (our name, kind). Kinds: linear, channel_norm, copy.
HF_LAYER_NAMES = {
    "bert.encoder.layer.{i}.attention.self.query": ("layers.{i}.attention.query", "linear"),
    "bert.encoder.layer.{i}.attention.self.key": ("layers.{i}.attention.key", "linear"),
    "bert.encoder.layer.{i}.attention.self.value": ("layers.{i}.attention.value", "linear"),
    "bert.encoder.layer.{i}.attention.output.dense": ("layers.{i}.attention.output", "linear"),
    "bert.encoder.layer.{i}.attention.output.LayerNorm": ("layers.{i}.attention_norm", "channel_norm"),
    "bert.encoder.layer.{i}.intermediate.dense": ("layers.{i}.expand", "linear"),
    "bert.encoder.layer.{i}.output.dense": ("layers.{i}.contract", "linear"),
    "bert.encoder.layer.{i}.output.LayerNorm": ("layers.{i}.output_norm", "channel_norm"),
}
HF_MODEL_NAMES = {
    "bert.embeddings.word_embeddings": ("embeddings.words", "copy"),
    "bert.embeddings.position_embeddings": ("embeddings.positions", "copy"),
    "bert.embeddings.token_type_embeddings": ("embeddings.token_types", "copy"),
    "bert.embeddings.LayerNorm": ("embeddings.norm", "copy"),
    "bert.pooler.dense": ("pooler", "linear"),
    "classifier": ("classifier", "linear"),
}
