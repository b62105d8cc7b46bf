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


# ---- the other families: RoBERTa-like (byte-level BPE), XLM-R / DeBERTa-v2 (Unigram), MPNet (WordPiece) ----

CORPUS = [
    " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 9)) + (".", "!", "?", ",")[i % 4]
    for i in range(300)
] + ["Ünïcödé café naïve résumé", "12 345 6789 %$#@ ()[]{}", "CASED Words Matter Here"]

# family -> (special tokens in id order, template for one sentence, pad token)
FAMILY_TOKENS = {
    "roberta": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", "<pad>"),
    "camembert": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", "<pad>"),
    "xlm-roberta": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", "<pad>"),
    "mpnet": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", "<pad>"),
    "deberta-v2": (["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[CLS] $A [SEP]", "[PAD]"),
}
FAMILIES = tuple(FAMILY_TOKENS)


def build_family_tokenizer(kind: str, corpus: list[str], id_order: tuple[str, ...] | None = None):
    """A tokenizer.json of the family's kind, trained on `corpus` with the `tokenizers` library; `id_order` numbers
    the family's special tokens in another order."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    family_specials, template, _ = FAMILY_TOKENS[kind]
    unk = family_specials[3]
    specials = list(id_order or family_specials)
    assert sorted(specials) == sorted(family_specials), id_order
    if kind in ("roberta", "camembert"):  # byte-level BPE, cased: RoBERTa's tokenizer
        tokenizer = Tokenizer(models.BPE(unk_token=None))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    elif kind == "mpnet":  # lower-cased WordPiece with <s> </s>: MPNet's tokenizer
        # The vocabulary is built here rather than by `tokenizers`' WordPiece trainer, whose merges break ties in
        # hash order: each build would be another network, and the tests' numbers would change from run to run.
        normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
        tokenizer = Tokenizer(models.WordPiece(_wordpiece_vocab(corpus, specials, normalizer, splitter), unk_token=unk))
        tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, splitter
        tokenizer.decoder = decoders.WordPiece()
        trainer = None
    else:  # SentencePiece Unigram, cased: XLM-R's and DeBERTa-v3's tokenizers
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token=unk)
    if trainer is not None:
        tokenizer.train_from_iterator(corpus, trainer)
    if kind in ("xlm-roberta", "deberta-v2"):  # the trainer finds the same pieces every time, numbered in hash order
        tokenizer = _unigram_in_score_order(tokenizer, specials, unk)
    first, last = template.split()[0], template.split()[-1]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template,
        pair=f"{template} {last} $B:1 {last}:1" if first == "<s>" else f"{template} $B:1 {last}:1",
        special_tokens=[(first, tokenizer.token_to_id(first)), (last, tokenizer.token_to_id(last))],
    )
    return tokenizer


def _wordpiece_vocab(corpus: list[str], specials: list[str], normalizer, splitter, size: int = 300) -> dict:
    """Specials, every character alone and as a continuation, then the commonest words (ties alphabetical)."""
    from collections import Counter

    words = Counter(word for text in corpus for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({character for word in words for character in word})
    pieces = [*specials, *characters, *(f"##{c}" for c in characters)]
    common = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1]
    pieces += common[: max(0, size - len(pieces))]
    return {piece: index for index, piece in enumerate(pieces)}


def _unigram_in_score_order(tokenizer, specials: list[str], unk: str):
    """The same Unigram tokenizer with its pieces numbered in alphabetical order after the specials (the trainer's
    scores may differ in the last digits between runs; the numbering, which picks each piece's weights, must not)."""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tokenizer.to_str())
    pieces = state["model"]["vocab"]
    ordered = [p for p in pieces if p[0] in specials]
    ordered.sort(key=lambda piece: specials.index(piece[0]))
    ordered += sorted((p for p in pieces if p[0] not in specials), key=lambda piece: piece[0])
    state["model"]["vocab"] = ordered
    state["model"]["unk_id"] = [piece[0] for piece in ordered].index(unk)
    for added in state.get("added_tokens", []):
        added["id"] = [piece[0] for piece in ordered].index(added["content"])
    return Tokenizer.from_str(json.dumps(state))


def build_family_model(
    directory: Path,
    kind: str,
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    labels=("NEGATIVE", "POSITIVE"),
    max_tokens: int = 64,
    seed: int = 0,
    model_max_length: bool = True,
    config_overrides: dict | None = None,
    corpus: list[str] | None = None,
    id_order: tuple[str, ...] | None = None,
) -> Path:
    """A random-weight classifier of `kind` (a FAMILIES entry) with a trained tokenizer of its family's kind.

    `corpus` (default: a small built-in one) trains the tokenizer and sets the output layer's scale and offsets,
    so that on such sentences the labels come out mixed. `id_order` numbers the family's special tokens in another
    order (a <pad> other than RoBERTa's 1, say).
    """
    import json

    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    corpus = CORPUS + list(corpus or [])
    tokenizer = build_family_tokenizer(kind, corpus, id_order)
    tokenizer.save(str(directory / "tokenizer.json"))
    pad = FAMILY_TOKENS[kind][2]
    id2label = dict(enumerate(labels))
    shape = dict(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        pad_token_id=tokenizer.token_to_id(pad),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if kind == "deberta-v2":  # DeBERTa-v3's layout: relative positions only, no token types
        shape.update(
            max_position_embeddings=max_tokens,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            type_vocab_size=0,
            pooler_hidden_size=hidden,
            pooler_hidden_act="gelu",
            layer_norm_eps=1e-7,
        )
    else:  # RoBERTa-like and MPNet number positions from padding_idx + 1
        # (Hugging Face's MPNet fixes its padding_idx at 1, whatever pad_token_id says.)
        padding_idx = 1 if kind == "mpnet" else shape["pad_token_id"]
        shape.update(
            max_position_embeddings=max_tokens + padding_idx + 1,
            bos_token_id=tokenizer.token_to_id("<s>"),
            eos_token_id=tokenizer.token_to_id("</s>"),
        )
        if kind != "mpnet":
            shape["type_vocab_size"] = 1
    # Weights wider than the default 0.02 make the first token's state differ from sentence to sentence.
    shape = {"initializer_range": 0.1, **shape, **(config_overrides or {})}
    torch.manual_seed(seed)
    config = AutoConfig.for_model(kind, **shape)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn_like(module.weight))
                module.bias.copy_(0.3 * torch.randn_like(module.bias))
        _spread_labels(model, tokenizer, len(labels), corpus, max_tokens)
    model.save_pretrained(directory, safe_serialization=True)
    specials, template, pad = FAMILY_TOKENS[kind]
    first, last = template.split()[0], template.split()[-1]
    settings = {"bos_token": first, "cls_token": first, "eos_token": last, "sep_token": last, "pad_token": pad}
    settings.update(unk_token=specials[3], mask_token=specials[4])
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    if model_max_length:
        settings["model_max_length"] = max_tokens
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    return directory


def _spread_labels(model, tokenizer, num_labels: int, corpus: list[str], limit: int) -> None:
    """Rescale the output layer so that logits on the corpus have spread 4 around zero per label.

    A random head gives near-constant logits (one label for every sentence), which would let a parity or
    agreement test pass whatever the backend computes.
    """
    import torch

    sequences = [
        e.ids[: limit - 1] + e.ids[-1:] if len(e.ids) > limit else e.ids for e in tokenizer.encode_batch(corpus)
    ]
    width = max(len(ids) for ids in sequences)
    pad = model.config.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels][-1]
    scale = 4.0 / logits.std(dim=0).clamp_min(1e-6)
    out.weight.mul_(scale[:, None])
    out.bias.mul_(scale).sub_(logits.mean(dim=0) * scale)


# ---- the same weights in other files: shards, and the LayerNorm names of checkpoints saved before 2020 ----


def shard_model(source: Path, target: Path, *, pytorch: bool = False, max_shard_size: str = "20KB") -> Path:
    """A copy of the model at `source` whose weights are in shards with a shard index, as
    save_pretrained(max_shard_size=...) writes them; `pytorch=True` makes the shards pytorch_model-0000N-of-0000M.bin
    with a pytorch_model.bin.index.json (transformers 5 writes safetensors only). Other files are copied unchanged."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(source).save_pretrained(target, max_shard_size=max_shard_size)
    for file in source.iterdir():
        if file.is_file() and file.suffix not in (".safetensors", ".bin"):
            shutil.copyfile(file, target / file.name)  # config.json too: only the weights' files differ
    if pytorch:
        index = target / "model.safetensors.index.json"
        content = json.loads(index.read_text())
        names = {
            shard: shard.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
            for shard in set(content["weight_map"].values())
        }
        for shard, name in names.items():
            torch.save(load_file(target / shard), target / name)
            (target / shard).unlink()
        content["weight_map"] = {tensor: names[shard] for tensor, shard in content["weight_map"].items()}
        (target / "pytorch_model.bin.index.json").write_text(json.dumps(content))
        index.unlink()
    return target


def with_legacy_layernorm_names(model: Path, weights: str = "model.safetensors") -> Path:
    """Rename the model's LayerNorm tensors to LayerNorm.gamma / LayerNorm.beta, as fine-tunes saved before 2020
    (from TensorFlow's names) hold them, into `weights` (model.safetensors or pytorch_model.bin)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    renamed = {
        name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): tensor
        for name, tensor in tensors.items()
    }
    (model / "model.safetensors").unlink()
    if weights == "pytorch_model.bin":
        torch.save(renamed, model / weights)
    else:
        save_file(renamed, model / weights, metadata={"format": "pt"})
    return model


def transformers_logits(model_dir: Path, texts: list[str]):
    """transformers' own tokenizer and model on `texts` in one padded batch: the reference for a model whose files
    only transformers is known to read right (legacy tensor names, shards)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    network = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        return network(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
