"""Whole long documents: windows on token boundaries, their overlap and spans, and every surface that reads them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from conftest import run_cli
from fastsentiment import Classifier
from fastsentiment.errors import InputError
from fastsentiment.windows import aggregate_logits, cut, window_count

WORDS = "good bad great like love hate cheese cake film movie".split()  # one token each in the tiny vocabulary
LIMIT = 64  # the tiny models' max_position_embeddings and model_max_length


def words(count: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(count))


@pytest.fixture(scope="module")
def clf(bert_dir):
    return Classifier.load(bert_dir, backend="onnx", precision="fp32")


def test_a_text_of_exactly_the_window_length_is_one_window(clf):
    (prediction,) = clf.predict([words(LIMIT - 2)], long_text="chunk")
    assert (prediction.tokens, prediction.windows) == (LIMIT, 1)
    assert prediction.logits == pytest.approx(clf.predict([words(LIMIT - 2)])[0].logits)


@pytest.mark.parametrize("stride", [0, 8, 20])
def test_one_token_more_is_two_windows_sharing_the_stride(clf, stride):
    text = words(LIMIT - 1)
    encoding = clf.encoder.encodings([text])[0]
    first, second = cut(encoding, 0, LIMIT, stride).windows
    assert len(first.ids) == LIMIT and first.ids[0] == encoding.ids[0] and first.ids[-1] == encoding.ids[-1]
    assert second.ids[0] == encoding.ids[0] and second.ids[-1] == encoding.ids[-1]  # [CLS] ... [SEP] in each
    assert first.ids[1:-1][len(first.ids) - 2 - stride :] == second.ids[1 : 1 + stride]
    assert second.tokens == stride + 1
    (prediction,) = clf.predict([text], long_text="chunk", stride=stride)
    assert (prediction.tokens, prediction.windows) == (LIMIT + 1, 2)


def test_windows_are_counted_without_cutting_and_a_cap_refuses_before_cutting(clf):
    texts = [words(n) for n in (1, LIMIT - 2, LIMIT - 1, 200, 1000)]
    encodings = clf.encoder.encodings(texts)
    for stride in (0, 15, LIMIT - 3):
        counts = [window_count(e, LIMIT, stride) for e in encodings]
        assert counts == [len(cut(e, 0, LIMIT, stride).windows) for e in encodings]
    needed = sum(window_count(e, LIMIT, 15) for e in encodings)
    _, windows = clf.split(texts, "chunk", 15, max_windows=needed)
    assert sum(map(len, windows)) == needed
    with pytest.raises(InputError, match=f"make {needed} windows of {LIMIT} tokens, more than the {needed - 1}"):
        clf.split(texts, "chunk", 15, max_windows=needed - 1)


def test_window_spans_cover_the_whole_text_and_drive_the_verdict(clf):
    text = words(300, offset=3)
    (answer,) = clf([text], long_text="chunk", stride=16, return_chunks=True)
    chunks = answer["chunks"]
    assert len(chunks) > 5 and chunks[0]["start"] == 0 and chunks[-1]["end"] == len(text)
    for before, after in itertools.pairwise(chunks):
        assert after["start"] < before["end"]  # overlapping windows: no character is left out
        assert text[before["start"] : before["end"]].split()  # each span is real words of the text
    assert {chunk["label"] for chunk in chunks} <= set(clf.labels)
    assert sum(chunk["tokens"] for chunk in chunks) == 300 + 16 * (len(chunks) - 1)


@pytest.mark.parametrize("stride", [0, 7, 31])
def test_every_token_weighs_the_same_however_many_windows_hold_it(clf, stride):
    """A window's weight in the mean counts the tokens it shares with a neighbour half: the weights sum to the
    text's own tokens, and the first and last windows, which share on one side only, weigh more than a middle one
    of the same size."""
    for count in (LIMIT - 2, LIMIT + 5, 300):
        (document,) = clf.split([words(count)], "chunk", stride)[1]
        assert sum(window.weight for window in document) == count
        if len(document) > 2:
            first, middle = document[0], document[1]
            assert first.tokens == middle.tokens and first.weight - middle.weight == stride / 2
        (prediction,) = clf.predict([words(count)], long_text="chunk", stride=stride, return_chunks=True)
        assert prediction.windows == len(document)


def test_a_truncated_text_reports_the_window_it_kept(clf):
    """Under truncation the one window is the first window chunking makes: the same tokens of the text, the same
    span (not the whole text), and the text's own token count (no special tokens)."""
    text = words(150, offset=1)
    (truncated,) = clf([text], return_chunks=True)
    (chunked,) = clf([text], long_text="chunk", return_chunks=True)
    kept, first = truncated["chunks"][0], chunked["chunks"][0]
    assert (kept["start"], kept["end"], kept["tokens"]) == (first["start"], first["end"], first["tokens"])
    assert kept["tokens"] == LIMIT - 2 and kept["end"] < len(text) and text[: kept["end"]] == words(LIMIT - 2, 1)
    (short,) = clf([words(5)], return_chunks=True)
    assert (short["chunks"][0]["start"], short["chunks"][0]["end"], short["chunks"][0]["tokens"]) == (0, 24, 5)
    with pytest.raises(InputError, match="leave top_k unset"):
        clf([text], return_chunks=True, top_k=1)


def test_chunked_results_agree_across_fp32_backends(bert_dir, clf):
    texts = [words(150), words(30, 2), words(500, 5)]
    reference = Classifier.load(bert_dir, backend="torch", precision="fp32")
    for aggregate in ("mean", "max", "logit-mean"):
        ours = clf.logits(texts, long_text="chunk", aggregate=aggregate)
        theirs = reference.logits(texts, long_text="chunk", aggregate=aggregate)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_mean_aggregate_is_the_token_weighted_mean_of_window_probabilities(clf):
    text = words(200, 1)
    (prediction,) = clf.predict([text], long_text="chunk", stride=10, aggregate="mean", return_chunks=True)
    weights = np.array([chunk["tokens"] for chunk in prediction.chunks], dtype=float)
    weights[1:] -= 10 / 2  # the 10 tokens each pair of neighbours shares count half in each
    weights[:-1] -= 10 / 2
    windows = [clf.predict([text[c["start"] : c["end"]]])[0] for c in prediction.chunks]
    expected = sum(w * np.array(list(p.scores.values())) for w, p in zip(weights, windows, strict=True)) / weights.sum()
    np.testing.assert_allclose(list(prediction.scores.values()), expected, atol=1e-5)


def test_long_text_error_names_the_input_and_its_tokens(clf, bert_dir):
    with pytest.raises(InputError, match=r"^input 2 has 102 tokens, over the model's limit of 64"):
        clf(["good", words(100)], long_text="error")
    result = run_cli("classify", "good", words(100), "--model", str(bert_dir), "--long-text", "error")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()  # the other text is still classified
    assert (
        lines[0] == "error: input 2: 102 tokens, over the model's limit of 64 (--long-text chunk classifies it whole)"
    )
    assert result.stdout.decode().startswith(("POSITIVE", "NEGATIVE")) and "Traceback" not in result.stderr.decode()


def test_unknown_long_text_options_are_one_line_errors(clf, bert_dir):
    with pytest.raises(InputError, match="unknown long_text"):
        clf("good", long_text="summarise")
    # options the call would ignore, or cannot use, are refused as the CLI refuses them (they were ignored)
    for options in ({"stride": 5}, {"aggregate": "max"}, {"long_text": "error", "stride": 5}):
        with pytest.raises(InputError, match="shape the windows of long_text 'chunk'"):
            clf("good", **options)
    for stride in (1.5, True, -1, "8"):
        with pytest.raises(InputError, match="stride must be a whole number of tokens"):
            clf("good " * 100, long_text="chunk", stride=stride)
    result = run_cli("classify", "good", "--model", str(bert_dir), "--long-text", "chunk", "--stride", "600")
    assert result.returncode == 2 and result.stderr.decode().startswith("error: stride must be between 0 and")


def test_the_stride_is_checked_against_the_models_own_window(tmp_path):
    """The CLI checked --stride against 512-token windows before the model loaded: a model of 1,024 positions could
    not be given a stride of 600 that its windows hold."""
    from tiny_models import build_model

    model = build_model(tmp_path / "long-bert", "bert", max_positions=1024)
    text = " ".join(["good film"] * 700)
    result = run_cli(
        "classify", text, "-m", str(model), "-b", "onnx", "--long-text", "chunk", "--stride", "600", "--json"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["windows"] > 1


def test_file_job_in_error_mode_fails_only_the_long_rows(bert_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"good film\n{words(100)}\nbad cake\n")
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "--model", str(bert_dir), "--long-text", "error")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("error") for r in rows] == [None, "102 tokens, over the model's limit of 64 (--long-text chunk "
                                             "classifies it whole)", None]  # fmt: skip
    assert rows[0]["label"] and rows[2]["label"]
    assert "line 2: 102 tokens" in result.stderr.decode()


def test_file_job_in_chunk_mode_writes_tokens_and_windows(bert_dir, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(json.dumps({"text": t}) for t in [words(5), words(200), ""]) + "\n")
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "classify", "--file", str(source), "--out", str(out), "--model", str(bert_dir), "--backend", "onnx",
        "--long-text", "chunk", "--stride", "8",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr.decode()  # the empty row
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["tokens"], r["windows"]) for r in rows] == [(7, 1), (202, 4), (None, None)]
    assert rows[2]["error"] == "empty text" and rows[1]["label"] in ("NEGATIVE", "POSITIVE")


def test_truncate_stays_the_default_and_warns(bert_dir):
    result = run_cli("classify", words(100), "--model", str(bert_dir), "--json")
    assert result.returncode == 0
    assert "truncated to the model's limit of 64 (38 tokens dropped)" in result.stderr.decode()
    record = json.loads(result.stdout)
    assert record["tokens"] == 102 and record["windows"] == 1


def test_each_call_names_its_own_truncations(clf, caplog):
    """The count of named truncations belongs to one call (or one file job), not to the process: a server or a
    long-lived program keeps hearing about the texts it cuts."""
    for _ in range(3):
        caplog.clear()
        with caplog.at_level("WARNING", logger="fastsentiment"):
            clf([words(100, offset) for offset in range(3)])
        named = [record.getMessage() for record in caplog.records if "has 102 tokens; truncated" in record.getMessage()]
        assert [message.split(" has ")[0] for message in named] == ["input 1", "input 2", "input 3"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="fastsentiment"):
        clf([words(100, offset) for offset in range(8)])
    messages = [record.getMessage() for record in caplog.records]
    assert sum("; truncated to the model's limit" in message for message in messages) == 5
    assert messages[-1] == f"further inputs over {LIMIT} tokens are truncated without a line each"


@pytest.mark.parametrize("function", ["softmax", "sigmoid", "none"])
def test_mean_of_windows_is_taken_in_the_scores_asked_for(clf, function):
    """aggregate="mean" averages the windows' scores under function_to_apply (token-weighted); "none" has no
    probabilities to average, so raw scores are the mean of the logits. (Sigmoid of log-probabilities gave 0.4996
    where every window said 0.95.)"""
    text = words(200, offset=2)
    _, (windows,) = clf.split([text], "chunk", 16)
    window_logits = clf.logits_for_ids([window.ids for window in windows]).astype(np.float64)
    weights = np.array([window.weight for window in windows], dtype=np.float64)
    weights /= weights.sum()
    per_window = {
        "softmax": np.exp(window_logits) / np.exp(window_logits).sum(axis=1, keepdims=True),
        "sigmoid": 1 / (1 + np.exp(-window_logits)),
        "none": window_logits,
    }[function]
    expected = weights @ per_window
    (ranked,) = clf([text], long_text="chunk", stride=16, aggregate="mean", function_to_apply=function, top_k=None)
    got = {entry["label"]: entry["score"] for entry in ranked}
    np.testing.assert_allclose([got[label] for label in clf.labels], expected, atol=1e-5)


def _with_template(model, folder, post_processor):
    """A copy of the model whose tokenizer wraps a text as `post_processor` (tokenizer.json's form) says."""
    import shutil

    shutil.copytree(model, folder)
    state = json.loads((folder / "tokenizer.json").read_text())
    state["post_processor"] = post_processor
    (folder / "tokenizer.json").write_text(json.dumps(state))
    # A tokenizer taken as tokenizer.json says: BERT's own class would rebuild the [CLS] ... [SEP] template.
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return Classifier.load(folder, backend="torch")


def test_cuts_and_windows_keep_the_tokenizers_own_special_tokens(bert_dir, tmp_path):
    """Truncation kept the last token as if it were [SEP] whatever the template: without a closing special token,
    the text's last word was spliced onto its start. And a template of three special tokens made windows with a
    stride the room allowed by two: the window never advanced (a hang)."""
    from tokenizers import Tokenizer

    text = words(100)
    bare = _with_template(bert_dir, tmp_path / "bare", None)
    raw = Tokenizer.from_file(str(tmp_path / "bare" / "tokenizer.json")).encode(text).ids
    (([kept],),) = [bare.split([text])[1]]
    assert kept.ids == raw[:LIMIT] and kept.tokens == LIMIT

    specials = {token: {"id": token, "ids": [i], "tokens": [token]} for token, i in (("[CLS]", 2), ("[SEP]", 3))}
    template = [{"SpecialToken": {"id": token, "type_id": 0}} for token in ("[SEP]", "[SEP]")]
    doubled = _with_template(
        bert_dir,
        tmp_path / "doubled",
        {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                *template,
            ],
            "pair": [],
            "special_tokens": specials,
        },
    )
    assert (doubled.encoder.special_tokens, doubled.encoder.closing_tokens) == (3, 2)
    (([cut_once],),) = [doubled.split([text])[1]]
    assert cut_once.ids[-2:] == [3, 3] and len(cut_once.ids) == LIMIT and cut_once.tokens == LIMIT - 3
    with pytest.raises(InputError, match=f"stride must be between 0 and {LIMIT - 4} tokens"):
        doubled([text], long_text="chunk", stride=LIMIT - 3)
    _, (windows,) = doubled.split([text], long_text="chunk", stride=LIMIT - 4)
    assert all(len(w.ids) <= LIMIT and w.ids[-2:] == [3, 3] for w in windows) and len(windows) == 100 - LIMIT + 4


def test_a_text_its_tokenizer_keeps_nothing_of_is_an_empty_text_on_every_surface(bert_dir, tmp_path):
    """Combining marks and variation selectors alone, which a BERT tokenizer strips with the accents, were classified
    with confidence from [CLS] [SEP]."""
    marks = "\u0301\u0301 \ufe0f"
    said = "empty text (its tokenizer keeps none of its characters)"
    result = run_cli("classify", "good film", marks, "-m", str(bert_dir), "-b", "onnx:fp32", "--json")
    assert result.returncode == 2, result.stderr.decode()
    good, refused = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert good["label"] and refused["error"] == said
    source = tmp_path / "in.txt"
    source.write_text(f"good film\n{marks}\nbad cake\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli("classify", "-f", str(source), "-o", str(out), "-m", str(bert_dir), "-b", "onnx:fp32")
    assert result.returncode == 2 and f"line 2: {said}" in result.stderr.decode(), result.stderr.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["error"] for row in rows] == [None, said, None] and rows[0]["label"] and rows[2]["label"]
    result = run_cli("interactive", "-m", str(bert_dir), "-b", "onnx:fp32", input=f"{marks}\ngood film\n")
    assert result.returncode == 0 and f"error: line 1: {said}" in result.stderr.decode()
    assert result.stdout.decode().count("Sentiment prediction:") == 1


def _max_window_is_the_surest(clf, sureness) -> None:
    """Windows of one text in order of sureness, the surest last (not where taking the first window would pass)."""
    segments = sorted(
        (words(LIMIT - 2, offset) for offset in (0, 3, 7)), key=lambda segment: sureness(clf.logits([segment])[0])
    )
    windows = clf.logits(segments)
    assert len({float(sureness(row)) for row in windows}) == 3  # no ties to hide in
    text = " ".join(segments)
    (prediction,) = clf.predict([text], long_text="chunk", stride=0, aggregate="max", return_chunks=True)
    assert [text[chunk["start"] : chunk["end"]] for chunk in prediction.chunks] == segments
    np.testing.assert_allclose(
        clf.logits([text], long_text="chunk", stride=0, aggregate="max")[0], windows[-1], atol=1e-6
    )


def test_max_takes_the_surest_window_of_a_regression_or_single_output_head(tmp_path):
    """A softmax over one output is 1 for every window: "max" took the first window of a regression head; and a
    one-output sigmoid head preferred p=0.62 to p=0.0025, a far surer "no"."""
    from tiny_models import build_model

    rating = build_model(tmp_path / "rating", "bert", labels=("rating",))
    config = json.loads((rating / "config.json").read_text())
    (rating / "config.json").write_text(json.dumps({**config, "problem_type": "regression"}))
    _max_window_is_the_surest(Classifier.load(rating, backend="onnx", precision="fp32"), lambda row: row[0])

    (rating / "config.json").write_text(json.dumps(config))  # one output and no problem type: a sigmoid
    single = Classifier.load(rating, backend="onnx", precision="fp32")
    _max_window_is_the_surest(single, lambda row: abs(1 / (1 + np.exp(-row[0])) - 0.5))


def test_max_takes_the_window_where_a_multi_label_head_is_surest_of_a_label():
    """Not the window farthest from 0.5 in any label: nearly every window is sure some label is absent, and the
    window where nothing fires won over the one where a label did."""
    fires, nothing = [4.0, -3.0, -3.0], [-9.0, -9.0, -9.0]
    picked = aggregate_logits(np.array([nothing, fires]), np.ones(2), "max", True, "sigmoid")
    np.testing.assert_array_equal(picked, fires)


def test_an_aggregate_is_never_taken_for_the_default_by_being_empty(clf, bert_dir):
    for aggregate in ("", 0, False, []):
        with pytest.raises(InputError, match="unknown aggregate"):
            clf("good " * 100, long_text="chunk", aggregate=aggregate)
    result = run_cli("classify", "good film", "--model", str(bert_dir), "--long-text", "chunk", "--aggregate", "")
    assert result.returncode == 2 and result.stderr.decode().startswith("error: unknown aggregate ''")
