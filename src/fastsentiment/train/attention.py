"""Attention distillation: the student's last-layer self-attention pulled towards the teacher's.

MiniLM (Wang et al., 2020) transfers a teacher by matching the self-attention distributions of the last layers,
which needs no projection between widths (the maps are token by token, whatever the hidden size) but the same
number of heads and the same tokens. The built-in model's teacher, all-mpnet-base-v2, and its student,
all-MiniLM-L6-v2, both have 12 heads and tokenise with the same uncased WordPiece vocabulary; a text whose two
tokenisations differ in length is left out of this loss (the logits still teach it).

The teacher's maps are computed once (`teacher_attention`) and kept per text as a [heads, length, length]
block of fp16 values, beside the saved logits: 0.43 GB for SST-2 train (66,002 texts, 13.3 tokens on average).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttentionMaps:
    """One [heads, n, n] block per text, flattened end to end; lengths[i] = n (0: no map for that text). `kept`, when
    set, marks the texts the loss uses (the others' blocks stay in `values`, unused, so that nothing is copied)."""

    heads: int
    lengths: np.ndarray
    values: np.ndarray
    kept: np.ndarray | None = None

    @classmethod
    def from_blocks(cls, heads: int, blocks: Sequence[np.ndarray | None]) -> AttentionMaps:
        lengths = np.array([0 if block is None else block.shape[-1] for block in blocks], dtype=np.int64)
        present = [block.astype(np.float16, copy=False).ravel() for block in blocks if block is not None]
        values = np.concatenate(present) if present else np.zeros(0, dtype=np.float16)
        return cls(heads, lengths, values)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """Where each text's block starts in `values` (and, last, where the final one ends)."""
        return np.concatenate([[0], np.cumsum(self.heads * self.lengths**2)])

    def aligned_with(self, token_counts: Sequence[int]) -> AttentionMaps:
        """These maps with every text whose length differs from the student's token count left out."""
        return dataclasses.replace(self, kept=(self.lengths == np.asarray(token_counts)) & (self.lengths > 0))

    @property
    def used(self) -> np.ndarray:
        """The length of each text's map as the loss uses it (0: none)."""
        return self.lengths if self.kept is None else np.where(self.kept, self.lengths, 0)

    def batch(self, rows: Sequence[int], width: int):
        """The maps of `rows`, zero-padded to [len(rows), heads, width, width], and each row's length (0: none)."""
        import torch

        padded = np.zeros((len(rows), self.heads, width, width), dtype=np.float32)
        offsets, used = self.offsets, self.used[list(rows)]
        for slot, row in enumerate(rows):
            n = int(used[slot])
            if n:
                start = int(offsets[row])
                padded[slot, :, :n, :n] = self.values[start : start + self.heads * n * n].reshape(self.heads, n, n)
        return torch.from_numpy(padded), torch.from_numpy(used)


def attention_loss(student, teacher, lengths):
    """KL(teacher || student) of each real query position's attention over the keys, averaged over heads and the
    real positions of the texts that have a teacher map (lengths > 0); 0 when none has. `student` is the last
    layer's attention probabilities [batch, heads, width, width] (padded keys already get no attention)."""
    import torch

    student = student.float()
    positions = torch.arange(student.shape[-1], device=student.device)
    real = positions[None, :] < lengths[:, None].to(student.device)  # [batch, width]
    kl = (teacher * (torch.log(teacher.clamp_min(1e-12)) - torch.log(student.clamp_min(1e-12)))).sum(-1)
    per_position = kl.mean(1)  # over heads: [batch, width]
    count = real.sum()
    if count == 0:
        return student.sum() * 0.0
    return (per_position * real).sum() / count


def teacher_attention(teacher, texts: list[str], max_length: int, device, precision: str) -> AttentionMaps:
    """The teacher's last-layer self-attention for every text, run once (eager attention, which returns them)."""
    import torch

    from fastsentiment.models.network import load_network
    from fastsentiment.tokenization import TextEncoder
    from fastsentiment.train.loop import batched_outputs

    encoder = TextEncoder.from_model_dir(teacher, max_length=min(max_length, teacher.max_length))
    model = load_network(teacher, dtype=torch.float32, attn_implementation="eager").to(device)
    model.eval()
    sequences = encoder.encode(texts)
    blocks: list[np.ndarray | None] = [None] * len(sequences)
    outputs = batched_outputs(
        model, sequences, encoder, teacher.uses_token_type_ids, device, precision, 64, attentions=True
    )
    for rows, output in outputs:
        last = output.attentions[-1].float().cpu().numpy()
        for slot, row in enumerate(rows):
            n = len(sequences[row])
            blocks[row] = last[slot, :, :n, :n].astype(np.float16)
    return AttentionMaps.from_blocks(model.config.num_attention_heads, blocks)
