"""RoBERTa, XLM-RoBERTa and CamemBERT for sequence classification in the ANE layout.

The encoder blocks are BERT's; two things differ. Positions are numbered from `padding_idx + 1` over
the non-padding tokens, as Hugging Face derives them (`positions_after_padding`). The head is
dense -> tanh -> out_proj on the first token (<s>).
"""

from __future__ import annotations

import torch
from torch import nn

from fastsentiment.models.ane.layers import (
    EncoderConfig,
    EncoderLayer,
    key_mask,
    positions_after_padding,
    to_channels_first,
)


class RobertaEmbeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.position_offset = config.position_offset
        self.words = nn.Embedding(config.vocab_size, config.hidden_size)
        self.positions = nn.Embedding(config.max_positions, config.hidden_size)
        # One segment only: the table's first row is a constant added to every token.
        self.token_types = nn.Embedding(max(config.type_vocab_size, 1), config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = positions_after_padding(input_ids, self.position_offset)
        summed = self.words(input_ids) + self.positions(positions) + self.token_types.weight[0]
        return to_channels_first(self.norm(summed))


class AneRobertaForSequenceClassification(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = RobertaEmbeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.dense = nn.Conv2d(config.hidden_size, config.hidden_size, 1)
        self.out_proj = nn.Conv2d(config.hidden_size, config.num_labels, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        mask = key_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        first = torch.tanh(self.dense(x[:, :, :, :1]))  # the <s> position
        return self.out_proj(first).flatten(1)  # (B, labels)


NETWORK = AneRobertaForSequenceClassification
# Hugging Face weight name (with {i} for the layer) -> (our name, kind); every family member keeps `roberta.`.
HF_LAYER_NAMES = {
    "roberta.encoder.layer.{i}.attention.self.query": ("layers.{i}.attention.query", "linear"),
    "roberta.encoder.layer.{i}.attention.self.key": ("layers.{i}.attention.key", "linear"),
    "roberta.encoder.layer.{i}.attention.self.value": ("layers.{i}.attention.value", "linear"),
    "roberta.encoder.layer.{i}.attention.output.dense": ("layers.{i}.attention.output", "linear"),
    "roberta.encoder.layer.{i}.attention.output.LayerNorm": ("layers.{i}.attention_norm", "channel_norm"),
    "roberta.encoder.layer.{i}.intermediate.dense": ("layers.{i}.expand", "linear"),
    "roberta.encoder.layer.{i}.output.dense": ("layers.{i}.contract", "linear"),
    "roberta.encoder.layer.{i}.output.LayerNorm": ("layers.{i}.output_norm", "channel_norm"),
}
HF_MODEL_NAMES = {
    "roberta.embeddings.word_embeddings": ("embeddings.words", "copy"),
    "roberta.embeddings.position_embeddings": ("embeddings.positions", "copy"),
    "roberta.embeddings.token_type_embeddings": ("embeddings.token_types", "copy"),
    "roberta.embeddings.LayerNorm": ("embeddings.norm", "copy"),
    "classifier.dense": ("dense", "linear"),
    "classifier.out_proj": ("out_proj", "linear"),
}
