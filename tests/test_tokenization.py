import logging

import numpy as np

from fastsentiment.models import resolve_model
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
