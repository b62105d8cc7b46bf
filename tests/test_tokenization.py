import json
import logging

import numpy as np
import pytest
from tokenizers import Tokenizer

from fastsentiment.errors import ModelError
from fastsentiment.models import resolve_model
from fastsentiment.models.modeldir import ModelDir
from fastsentiment.tokenization import TextEncoder, load_tokenizer


def test_long_text_is_truncated_with_a_warning_naming_dropped_tokens(bert_dir, caplog):
    encoder = TextEncoder.from_model_dir(resolve_model(bert_dir), max_length=16)
    long_text = " ".join(["good"] * 40)
    with caplog.at_level(logging.WARNING, logger="fastsentiment"):
        (ids,) = encoder.encode([long_text])
    assert len(ids) == 16
    assert ids[0] == encoder._tokenizer.token_to_id("[CLS]") and ids[-1] == encoder._tokenizer.token_to_id("[SEP]")
    assert "42 tokens" in caplog.text and "26 tokens dropped" in caplog.text


def test_short_text_is_not_warned_about(bert_dir, caplog):
    encoder = TextEncoder.from_model_dir(resolve_model(bert_dir))
    with caplog.at_level(logging.WARNING, logger="fastsentiment"):
        encoder.encode(["I like cheese"])
    assert caplog.text == ""


def test_dynamic_padding_pads_to_the_longest_and_masks_padding(bert_dir):
    encoder = TextEncoder.from_model_dir(resolve_model(bert_dir))
    sequences = encoder.encode(["good", "a good film about cheese"])
    batch = encoder.pad(sequences)
    longest = max(map(len, sequences))
    assert batch.input_ids.shape == (2, longest) and batch.input_ids.dtype == np.int64
    assert batch.attention_mask.sum(axis=1).tolist() == [len(s) for s in sequences]
    assert (batch.input_ids[0, len(sequences[0]) :] == encoder.pad_id).all()
    assert encoder.pad(sequences, length=32).input_ids.shape == (2, 32)


def test_tokenizer_json_and_vocab_txt_agree(bert_dir, tmp_path):
    import shutil

    vocab_only = tmp_path / "m"
    shutil.copytree(bert_dir, vocab_only)
    (vocab_only / "tokenizer.json").unlink()
    text = "I LIKE cheesecake, don't you?"
    assert (
        load_tokenizer(resolve_model(bert_dir)).encode(text).ids
        == load_tokenizer(resolve_model(vocab_only)).encode(text).ids
    )


# ---- the pipeline transformers' WordPiece classes rebuild from tokenizer_config.json ----------------------------

SPLIT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "good", "film", "Good", "Film", ",", "cafe"]
SAMPLES = ["Good Film", "good film", "Good,Film", "GOOD café", "Film 中"]


def _tokenizer_dir(
    folder, settings: dict, *, model_type: str = "bert", lowercase: bool = True, template: bool = True, split=True
):
    """A model directory's tokenizer files (no weights: AutoTokenizer reads none) with a WordPiece tokenizer.json
    built by the `tokenizers` library: lower-casing or cased, with or without BERT's template and splitter."""
    from tokenizers import models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(SPLIT_VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    if split:
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if template:
        tokenizer.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def _ours(folder) -> list[list[int]]:
    model = ModelDir(path=folder, config=json.loads((folder / "config.json").read_text()))
    return [encoding.ids for encoding in load_tokenizer(model).encode_batch(SAMPLES)]


def _theirs(folder) -> list[list[int]]:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(folder)(SAMPLES)["input_ids"]


@pytest.mark.parametrize(
    ("settings", "json_lowercases", "lowercased"),
    [
        ({"do_lower_case": False}, True, False),
        ({"do_lower_case": True}, False, True),
        ({}, False, True),  # transformers' default: do_lower_case true
    ],
    ids=["config-cased-json-lowercases", "config-lowercases-json-cased", "config-silent-json-cased"],
)
def test_bert_lower_cases_as_tokenizer_config_says_not_as_tokenizer_json(
    tmp_path, settings, json_lowercases, lowercased
):
    """transformers' BertTokenizer keeps only the vocabulary of tokenizer.json and lower-cases (or not) as
    tokenizer_config.json's do_lower_case says: "Good Film" went to a cased model as "good film", and back."""
    folder = _tokenizer_dir(tmp_path / "m", settings, lowercase=json_lowercases)
    ours = _ours(folder)
    assert ours == _theirs(folder)
    good, film = ("good", "film") if lowercased else ("Good", "Film")
    assert ours[0] == [2, SPLIT_VOCAB.index(good), SPLIT_VOCAB.index(film), 3]


def test_bert_without_a_template_in_tokenizer_json_still_wraps_a_text_in_cls_and_sep(tmp_path):
    """A tokenizer.json with "post_processor": null and no pre-tokenizer: transformers wraps the text in [CLS] …
    [SEP] and splits at punctuation all the same; without them the model read another input (logits off by 18)."""
    folder = _tokenizer_dir(tmp_path / "m", {"do_lower_case": True}, template=False, split=False)
    assert json.loads((folder / "tokenizer.json").read_text())["post_processor"] is None
    ours = _ours(folder)
    assert ours == _theirs(folder)
    assert ours[2] == [2, SPLIT_VOCAB.index("good"), SPLIT_VOCAB.index(","), SPLIT_VOCAB.index("film"), 3]


def test_mpnet_wraps_a_text_in_its_own_tokens_whatever_tokenizer_json_says(tmp_path):
    """MPNetTokenizer's template is <s> … </s> (its defaults, or tokenizer_config.json's cls/sep tokens), and it
    lower-cases by default, as BERT's."""
    folder = _tokenizer_dir(tmp_path / "m", {}, model_type="mpnet", lowercase=False)
    ours = _ours(folder)
    assert ours == _theirs(folder)
    assert ours[0] == [5, SPLIT_VOCAB.index("good"), SPLIT_VOCAB.index("film"), 6]


def test_tokenizer_class_decides_whether_tokenizer_json_is_taken_as_it_is(tmp_path):
    """tokenizer_config.json's tokenizer_class (a "Fast" suffix naming the same class), else config.json's, else
    the model_type's: a WordPiece class rebuilds the pipeline; PreTrainedTokenizerFast, or a class transformers
    does not know, takes tokenizer.json as it is (the families' test models are such)."""
    cases = {
        "distil-fast": ({"tokenizer_class": "DistilBertTokenizerFast"}, "roberta", False),
        "electra": ({"tokenizer_class": "ElectraTokenizer"}, "bert", False),
        "distilbert-model": ({}, "distilbert", False),
        "as-it-is": ({"tokenizer_class": "PreTrainedTokenizerFast"}, "bert", True),
        "unknown": ({"tokenizer_class": "NoSuchTokenizer"}, "mpnet", True),
        "empty-name": ({"tokenizer_class": ""}, "bert", True),  # a name no class has: as it is
    }
    for name, (settings, model_type, kept) in cases.items():
        folder = _tokenizer_dir(tmp_path / name, settings, model_type=model_type, lowercase=False, template=False)
        ours = _ours(folder)
        assert ours == _theirs(folder), name
        assert (ours[0] == [SPLIT_VOCAB.index("Good"), SPLIT_VOCAB.index("Film")]) == kept, name
    # a BertTokenizer subclass without an __init__ of its own keeps tokenizer.json's normaliser (cased here)
    folder = _tokenizer_dir(tmp_path / "convbert", {"tokenizer_class": "ConvBertTokenizer"}, lowercase=False)
    ours = _ours(folder)
    assert ours == _theirs(folder) and SPLIT_VOCAB.index("Good") in ours[0]


def test_a_do_lower_case_that_is_not_true_or_false_is_a_model_error(tmp_path):
    """transformers cannot load such a tokenizer either; one line instead of a TypeError from `tokenizers`."""
    folder = _tokenizer_dir(tmp_path / "m", {"do_lower_case": "yes"})
    with pytest.raises(ModelError, match="do_lower_case must be true or false, got 'yes'"):
        _ours(folder)
