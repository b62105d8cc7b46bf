"""DistilBERT for sequence classification in the ANE layout."""

from __future__ import annotations

import torch
from torch import nn

from fastsentiment.models.ane.layers import EncoderConfig, EncoderLayer, key_mask, to_channels_first


class DistilBertEmbeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.words = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = nn.Embedding(config.max_positions, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return to_channels_first(self.norm(self.words(input_ids) + self.positions(positions)[None]))


class AneDistilBertForSequenceClassification(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = DistilBertEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.pre_classifier = nn.Conv2d(config.hidden_size, config.hidden_size, 1)
        self.classifier = nn.Conv2d(config.hidden_size, config.num_labels, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = key_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        hidden = torch.relu(self.pre_classifier(x[:, :, :, :1]))  # the [CLS] position
        return self.classifier(hidden).flatten(1)  # (B, labels)


NETWORK = AneDistilBertForSequenceClassification
# Hugging Face weight name (with {i} for the layer) -> (our name, kind). Kinds: linear, channel_norm, copy.
HF_LAYER_NAMES = {
    "distilbert.transformer.layer.{i}.attention.q_lin": ("layers.{i}.attention.query", "linear"),
    "distilbert.transformer.layer.{i}.attention.k_lin": ("layers.{i}.attention.key", "linear"),
    "distilbert.transformer.layer.{i}.attention.v_lin": ("layers.{i}.attention.value", "linear"),
    "distilbert.transformer.layer.{i}.attention.out_lin": ("layers.{i}.attention.output", "linear"),
    "distilbert.transformer.layer.{i}.sa_layer_norm": ("layers.{i}.attention_norm", "channel_norm"),
    "distilbert.transformer.layer.{i}.ffn.lin1": ("layers.{i}.expand", "linear"),
    "distilbert.transformer.layer.{i}.ffn.lin2": ("layers.{i}.contract", "linear"),
    "distilbert.transformer.layer.{i}.output_layer_norm": ("layers.{i}.output_norm", "channel_norm"),
}
HF_MODEL_NAMES = {
    "distilbert.embeddings.word_embeddings": ("embeddings.words", "copy"),
    "distilbert.embeddings.position_embeddings": ("embeddings.positions", "copy"),
    "distilbert.embeddings.LayerNorm": ("embeddings.norm", "copy"),
    "pre_classifier": ("pre_classifier", "linear"),
    "classifier": ("classifier", "linear"),
}
