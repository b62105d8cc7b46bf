import json
import logging

import numpy as np
import pytest
from tokenizers import Tokenizer

from fastsentiment.errors import InputError, ModelError
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


def test_padding_to_a_multiple_rounds_each_batch_up_but_never_past_the_models_length(bert_dir):
    encoder = TextEncoder.from_model_dir(resolve_model(bert_dir)).padded_to_multiple_of(24)  # tiny-bert: 64 tokens
    sequences = encoder.encode(["good", "a good film about cheese"])
    batch = encoder.pad(sequences)
    assert batch.input_ids.shape == (2, 24) and encoder.padded_width(24) == 24 and encoder.padded_width(25) == 48
    assert batch.attention_mask.sum(axis=1).tolist() == [len(s) for s in sequences]
    assert (batch.input_ids[1, len(sequences[1]) :] == encoder.pad_id).all()
    assert encoder.padded_width(50) == 64  # 72 would pass the model's position embeddings
    assert encoder.pad(sequences, length=30).input_ids.shape == (2, 30)  # a fixed length (ANE, CoreML) stays
    assert encoder.limited_to(16).padded_width(5) == 16
    for multiple in (0, -8, 2.5, True, "8"):
        with pytest.raises(InputError, match="pad_to_multiple_of must be a whole number of at least 1"):
            encoder.padded_to_multiple_of(multiple)


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


# ---- a folder with vocab.txt and no tokenizer.json -----------------------------------------------------------------


def _vocab_txt_copy(model_dir, folder, settings: dict):
    """A copy of `model_dir` without its tokenizer.json (vocab.txt alone) and with `settings` as its
    tokenizer_config.json."""
    import shutil

    shutil.copytree(model_dir, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.parametrize(
    "settings",
    [
        {"tokenizer_class": "BertJapaneseTokenizer", "word_tokenizer_type": "mecab"},
        # the "basic" splitter composes accents (NFC), keeps Chinese characters together and keeps case by default
        {"tokenizer_class": "BertJapaneseTokenizer", "word_tokenizer_type": "basic"},
        {"tokenizer_class": "BertweetTokenizer"},
    ],
    ids=["japanese-mecab", "japanese-basic", "bertweet"],
)
def test_a_vocab_txt_of_a_class_not_rebuilt_as_wordpiece_is_refused_when_the_model_loads(bert_dir, tmp_path, settings):
    """Such a vocab.txt was read as BERT's WordPiece: Japanese BERT's 好き became 好 き, other ids than the model was
    trained on, with exit code 0. Refused in one line naming the folder, the class and how to get a tokenizer.json."""
    from fastsentiment.classifier import Classifier

    folder = _vocab_txt_copy(bert_dir, tmp_path / "m", settings)
    with pytest.raises(ModelError) as refused:
        Classifier.load(folder, backend="torch", device="cpu")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}: tokenizer class {settings['tokenizer_class']!r} is not supported without a")
    assert "AutoTokenizer.from_pretrained(folder).save_pretrained(folder)" in message


ADDED = {"[USER]": True, "@user": False}  # an added token's content -> special
ADDED_TEXTS = ["hello [USER] cheese", "hello[USER]cheese", "[USER]", "@user good", "hi @USER film", "a@user[USER]b"]


def _added_tokens_dir(folder, *, decoder: bool, gap: int = 0):
    """A BERT vocab.txt folder (tokenizer files only: AutoTokenizer reads no weights) whose tokens ADDED a slow
    tokenizer added after the vocabulary, in order ("@user" `gap` ids further on), listed in tokenizer_config.json's
    added_tokens_decoder or (decoder=False) in added_tokens.json; and the vocabulary's size."""
    from tiny_models import write_vocab

    folder.mkdir()
    size = len(write_vocab(folder / "vocab.txt").read_text().split())
    ids = {token: size + number for number, token in enumerate(ADDED)}
    ids["@user"] += gap
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    settings = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "additional_special_tokens": ["[USER]"]}
    if decoder:
        settings["added_tokens_decoder"] = {
            str(ids[token]): {"content": token, "lstrip": False, "normalized": not special, "rstrip": False}
            | {"single_word": not special, "special": special}  # "@user": a whole word only (not in "a@user")
            for token, special in ADDED.items()
        }
    else:
        (folder / "added_tokens.json").write_text(json.dumps(ids))
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder, size


@pytest.mark.parametrize("decoder", [True, False], ids=["added_tokens_decoder", "added_tokens.json"])
def test_the_added_tokens_of_a_vocab_txt_folder_get_their_ids_as_in_transformers(tmp_path, decoder):
    """A fine-tune's "[USER]" (special) and "@user" (normalised, so "@USER" too) were cut into pieces: the model
    read "[ u s e r ]" instead of the token it was trained with."""
    transformers = pytest.importorskip("transformers")
    folder, size = _added_tokens_dir(tmp_path / "m", decoder=decoder)
    model = ModelDir(path=folder, config={"model_type": "bert"})
    ours = [encoding.ids for encoding in load_tokenizer(model).encode_batch(ADDED_TEXTS)]
    assert ours == transformers.AutoTokenizer.from_pretrained(folder)(ADDED_TEXTS)["input_ids"]
    assert ours[2] == [2, size, 3] and ours[3][1] == size + 1 and size + 1 in ours[4]  # "@USER": lower-cased


@pytest.mark.parametrize("decoder", [True, False], ids=["added_tokens_decoder", "added_tokens.json"])
def test_an_added_token_whose_id_does_not_follow_the_vocabulary_is_a_model_error(tmp_path, decoder):
    """transformers numbers added tokens in order after the vocabulary whatever ids the folder states: a gap would
    give "@user" the embeddings of another row, silently."""
    folder, size = _added_tokens_dir(tmp_path / "m", decoder=decoder, gap=1)
    source = "tokenizer_config.json" if decoder else "added_tokens.json"
    with pytest.raises(ModelError, match=rf"{source}: the added token '@user' has id {size + 2} there, but {size + 1}"):
        load_tokenizer(ModelDir(path=folder, config={"model_type": "bert"}))


def test_an_added_token_id_that_is_no_number_is_a_model_error(tmp_path):
    """ "³" is a digit to str.isdigit but no number to int(): a traceback, where a malformed entry is refused."""
    folder, _ = _added_tokens_dir(tmp_path / "m", decoder=True)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["added_tokens_decoder"]["³"] = {"content": "@foo", "special": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError, match="added_tokens_decoder must map token ids to tokens"):
        load_tokenizer(ModelDir(path=folder, config={"model_type": "bert"}))


def test_a_model_max_length_too_short_for_a_text_is_refused_as_tokenizer_config_json_s(bert_dir, tmp_path):
    """It was refused as "max_length (--max-length) must be at least 3", an option the user never passed; now as the
    folder's setting, when the folder is loaded, as config.json's position table is."""
    import shutil

    folder = shutil.copytree(bert_dir, tmp_path / "m")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 2}))
    with pytest.raises(ModelError) as refused:
        resolve_model(folder)
    assert str(refused.value) == (
        f"{folder / 'tokenizer_config.json'}: model_max_length is 2; a text takes at least 3 tokens ([CLS] text [SEP])"
    )
