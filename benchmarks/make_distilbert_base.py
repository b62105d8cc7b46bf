"""Write a DistilBERT-base-sized classifier (6 layers, hidden 768, random weights) for speed tests.

    python benchmarks/make_distilbert_base.py OUT_DIR

Speed and memory do not depend on the weights' values; the MiniLM vocabulary (30,522 WordPieces,
the same size as DistilBERT's), taken from the built-in model, makes tokenization realistic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from fastsentiment.models import resolve_model


def main() -> None:
    target = Path(sys.argv[1])
    source = resolve_model().path
    torch.manual_seed(0)
    config = DistilBertConfig(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    DistilBertForSequenceClassification(config).save_pretrained(target)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        (target / name).write_bytes((source / name).read_bytes())
    print(target)


if __name__ == "__main__":
    main()
