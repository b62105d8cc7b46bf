"""Small random-weight DistilBERT and BERT classifiers saved as real Hugging Face directories."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

WORDS = "the a and of to is in it that film movie good bad great not like love hate cheese cake i this was".split()


def write_vocab(path: Path) -> Path:
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces += list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces += [f"##{c}" for c in string.ascii_lowercase + string.digits]
    pieces += WORDS
    path.write_text("\n".join(dict.fromkeys(pieces)) + "\n")
    return path


def build_model(
    directory: Path,
    kind: str,
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    tokenizer_json: bool = True,
    labels=("NEGATIVE", "POSITIVE"),
    max_positions: int = 64,
    seed: int = 0,
    vocab: Path | None = None,
) -> Path:
    import torch
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    directory.mkdir(parents=True, exist_ok=True)
    if vocab is None:
        vocab = write_vocab(directory / "vocab.txt")
    else:  # a real WordPiece vocabulary, for tests where the model must learn from real sentences
        vocab = Path(shutil.copyfile(vocab, directory / "vocab.txt"))
    size = len(vocab.read_text().split())
    id2label = dict(enumerate(labels))
    label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(seed)
    if kind == "bert":
        config = BertConfig(
            vocab_size=size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=hidden * 4,
            max_position_embeddings=max_positions,
            id2label=id2label,
            label2id=label2id,
        )
        model = BertForSequenceClassification(config)
    else:
        config = DistilBertConfig(
            vocab_size=size,
            dim=hidden,
            n_layers=layers,
            n_heads=heads,
            hidden_dim=hidden * 4,
            max_position_embeddings=max_positions,
            id2label=id2label,
            label2id=label2id,
        )
        model = DistilBertForSequenceClassification(config)
    # Random init gives near-zero logits and LayerNorms with w=1, b=0 (which would hide a wrong
    # LayerNorm conversion); make both non-trivial so parity tests can fail.
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn_like(module.weight))
                module.bias.copy_(0.3 * torch.randn_like(module.bias))
    model.eval().save_pretrained(directory, safe_serialization=True)
    (directory / "tokenizer_config.json").write_text(f'{{"do_lower_case": true, "model_max_length": {max_positions}}}')
    if tokenizer_json:
        BertWordPieceTokenizer(str(vocab), lowercase=True).save(str(directory / "tokenizer.json"))
    return directory
