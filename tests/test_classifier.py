import os
import re

import numpy as np
import pytest

from conftest import run_cli
from fastsentiment import Classifier
from fastsentiment.errors import BackendError, InputError


@pytest.fixture(scope="module")
def pipeline_for():
    import torch
    from transformers import pipeline

    cache = {}

    def make(model_dir):
        if model_dir not in cache:
            cache[model_dir] = pipeline("text-classification", model=str(model_dir), dtype=torch.float32, device="cpu")
        return cache[model_dir]

    return make


TEXTS = ["I like cheese", "I hate cheesecake", "the film was not good , but the cake was great", "a"]


def test_outputs_match_transformers_pipeline_shapes_and_values(tiny_model, pipeline_for):
    clf = Classifier.load(tiny_model, backend="torch")
    reference = pipeline_for(tiny_model)
    for kwargs in [{}, {"top_k": None}, {"top_k": 1}, {"function_to_apply": "none"}, {"function_to_apply": "sigmoid"}]:
        for inputs in [TEXTS[0], TEXTS]:
            ours, theirs = clf(inputs, **kwargs), reference(inputs, **kwargs)
            assert _labels(ours) == _labels(theirs), kwargs
            np.testing.assert_allclose(_scores(ours), _scores(theirs), atol=1e-5, err_msg=str(kwargs))


def _labels(result):
    return [_labels(item) if isinstance(item, list) else item["label"] for item in result]


def _scores(result):
    return np.array([_scores(item) if isinstance(item, list) else item["score"] for item in result])


def test_agrees_with_pipeline_on_all_of_sst2_dev(pipeline_for, sst2_dev):
    """The built-in model, batched and padded by us, against the pipeline's one-at-a-time answers."""
    texts, _ = sst2_dev
    clf = Classifier.load(backend="torch")
    reference = pipeline_for(clf.model.path)
    ours, theirs = clf(texts, batch_size=64), reference(texts, batch_size=1)
    assert [o["label"] for o in ours] == [t["label"] for t in theirs]
    assert np.abs(np.array([o["score"] for o in ours]) - np.array([t["score"] for t in theirs])).max() <= 1e-5


def test_batch_size_does_not_change_results(tiny_model):
    clf = Classifier.load(tiny_model, backend="torch")
    one = clf.logits(TEXTS, batch_size=1)
    np.testing.assert_allclose(clf.logits(TEXTS, batch_size=3), one, atol=1e-5)
    np.testing.assert_allclose(clf.logits(TEXTS, batch_size=64), one, atol=1e-5)


def test_padding_to_a_multiple_changes_the_calls_shapes_not_their_results(tiny_model):
    """Each call is padded to a multiple of 16 tokens (masked), whatever its texts' lengths; its logits are those of
    dynamic padding, in every call form and for texts windowed over a long document."""
    exact = Classifier.load(tiny_model, backend="onnx", precision="fp32")
    padded = Classifier.load(tiny_model, backend="onnx", precision="fp32", pad_to_multiple_of=16)
    widths = []
    logits = padded.backend.logits
    padded.backend.logits = lambda input_ids, attention_mask: (
        widths.append(input_ids.shape[1]) or logits(input_ids, attention_mask)
    )
    np.testing.assert_allclose(padded.logits(TEXTS, batch_size=2), exact.logits(TEXTS, batch_size=2), atol=1e-5)
    assert widths and all(width % 16 == 0 for width in widths)
    long_text = "a good film about cheese " * 30
    for windowed, reference in zip(
        padded([long_text], long_text="chunk", stride=4), exact([long_text], long_text="chunk", stride=4), strict=True
    ):
        assert windowed["label"] == reference["label"] and windowed["score"] == pytest.approx(
            reference["score"], abs=1e-5
        )
    # A classifier cut shorter for one call pads alike (a server's one-call model: tests/test_serve_batcher.py).
    assert padded.encoder.limited_to(20).pad_to_multiple_of == 16


def test_predict_returns_every_label_score(bert_dir):
    (prediction,) = Classifier.load(bert_dir, backend="torch").predict(["I like cheese"])
    assert set(prediction.scores) == {"NEGATIVE", "POSITIVE"}
    assert prediction.score == max(prediction.scores.values())
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction.label == max(prediction.scores, key=prediction.scores.get)


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "caf\udcff", "\u200b", "\ufeff", "\u200e\u200f", "\x00\x01"])
def test_unusable_text_is_rejected(bert_dir, bad):
    """Zero-width spaces, byte-order marks, direction marks and control characters alone are empty text too: the
    model would only score [CLS] [SEP]."""
    with pytest.raises(InputError, match=r"input 2: (empty text|not valid UTF-8)"):
        Classifier.load(bert_dir, backend="torch")(["fine", bad])


@pytest.mark.parametrize("long_text", ["truncate", "chunk"])
def test_a_text_over_the_limit_files_have_is_refused_by_the_api_too(bert_dir, long_text):
    """The Python API tokenised a text of any size whole, to keep its first 512 tokens: four million characters took
    a gigabyte and seconds. It is refused before any is tokenised, as a file job refuses such a row."""
    from fastsentiment.texts import MAX_TEXT_CHARS

    clf = Classifier.load(bert_dir, backend="torch")
    huge = "good film " * (MAX_TEXT_CHARS // 10) + "!"
    message = (
        f"input 2: a text of {MAX_TEXT_CHARS + 1:,} characters, over the limit of {MAX_TEXT_CHARS:,} (split it up)"
    )
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        clf(["fine", huge], long_text=long_text)
    assert len(clf.logits([huge[:-1]], long_text=long_text)) == 1  # the limit itself is a text


def test_one_string_is_one_text_everywhere_and_any_iterable_is_read_once(bert_dir):
    clf = Classifier.load(bert_dir, backend="torch")
    (one,) = clf.predict("I like cheese")  # not one prediction per character
    assert one == clf.predict(["I like cheese"])[0]
    np.testing.assert_array_equal(clf.logits("good film"), clf.logits(["good film"]))
    np.testing.assert_array_equal(clf.logits(text for text in TEXTS), clf.logits(TEXTS))
    assert clf("a\u200bb") and clf(TEXTS, function_to_apply="SOFTMAX") == clf(TEXTS, function_to_apply="softmax")


def test_unknown_backend_precision_and_function_are_rejected(bert_dir):
    with pytest.raises(BackendError, match="unknown backend 'tensorflow'"):
        Classifier.load(bert_dir, backend="tensorflow")
    with pytest.raises(BackendError, match="no precision 'fp8'"):
        Classifier.load(bert_dir, backend="torch", precision="fp8")
    with pytest.raises(InputError, match="function_to_apply"):
        Classifier.load(bert_dir, backend="torch")("x", function_to_apply="tanh")
    with pytest.raises(BackendError, match="no precision 'fp8'"):
        Classifier.load(bert_dir, backend="torch:fp8")


def test_a_backend_named_with_its_precision_is_that_backend_at_that_precision(bert_dir):
    """ "onnx:fp32", as bench and compare name a row, is backend onnx at precision fp32."""
    named = Classifier.load(bert_dir, backend="onnx:fp32")
    assert (named.backend.spec.name, named.backend.precision) == ("onnx", "fp32")
    np.testing.assert_array_equal(
        named.logits(TEXTS), Classifier.load(bert_dir, backend="onnx", precision="fp32").logits(TEXTS)
    )
    assert Classifier.load(bert_dir, backend="onnx:fp32", precision="fp32").backend.precision == "fp32"
    with pytest.raises(BackendError, match="onnx:fp32 and precision 'int8' disagree"):
        Classifier.load(bert_dir, backend="onnx:fp32", precision="int8")
    with pytest.raises(BackendError, match="no precision after the colon"):
        Classifier.load(bert_dir, backend="onnx:")


@pytest.mark.parametrize(
    ("inputs", "options", "message"),
    [
        (None, {}, "inputs must be a text or a list of texts, got NoneType"),
        (b"bytes", {}, "inputs must be a text or a list of texts, got bytes"),
        (np.array("x"), {}, "inputs must be a text or a list of texts, got ndarray"),  # was a TypeError
        ("x", {"top_k": 0}, "top_k must be a whole number of at least 1"),
        ("x", {"top_k": "2"}, "top_k must be a whole number of at least 1 .*got '2'"),
        ("x", {"top_k": 1.5}, "top_k must be a whole number"),
        ("x", {"top_k": True}, "top_k must be a whole number"),
        ("x", {"batch_size": 0}, "batch size must be a whole number of at least 1, got 0"),
        (["x", "y"], {"batch_size": 1.5}, "batch size must be a whole number of at least 1, got 1.5"),
        (["x", "y"], {"batch_size": "2"}, "batch size must be a whole number of at least 1, got '2'"),
        (["x", "y"], {"batch_size": True}, "batch size must be a whole number"),
        ([], {"batch_size": 0}, "batch size must be a whole number of at least 1, got 0"),  # no texts: was taken
        ([], {"batch_size": "8"}, "batch size must be a whole number of at least 1, got '8'"),
        ("x", {"function_to_apply": 1}, "function_to_apply must be one of softmax, sigmoid, none, got 1"),
        ("x", {"truncation": "yes"}, "truncation is True, 'longest_first' or 'only_first' .cut., False or"),
        ("x", {"truncation": "only_second"}, "got 'only_second' .texts here come alone"),
        ("x " * 100, {"truncation": "do_not_truncate"}, "input 1 has 102 tokens, over the model's limit of 64"),
        ("x", {"truncation": True, "long_text": "chunk"}, "for windows give long_text 'chunk' alone"),
        ("x " * 100, {"truncation": False}, "input 1 has 102 tokens, over the model's limit of 64"),
        ("x", {"max_length": 65}, "max_length must be a whole number from 3 up to the 64 tokens this classifier was"),
        ("x", {"max_length": 2}, "max_length must be a whole number from 3 up to the 64 tokens .* got 2"),
        ("x", {"padding": "bogus"}, "padding is one of None, True, False, 'longest', 'max_length', 'do_not_pad'"),
        ({"text": "x", "text_pair": "y"}, {}, "text pairs .text_pair. are not classified"),
        ([{"text": "x"}, {"label": 1}], {}, "a record input holds its text under 'text', got the keys 'label'"),
        ({}, {}, "a record input holds its text under 'text', got an empty record"),
        ({"x", "y"}, {}, "inputs is a set, whose order is arbitrary: pass a list"),
        (["x", float("nan")], {}, "input 2: a missing value .NaN., not text"),
        ("x", {"truncation": False, "long_text": "truncate"}, None),  # the default long_text: truncation decides
        ("x", {"truncation": "do_not_truncate", "long_text": "chunk"}, "for windows give long_text 'chunk' alone"),
        ("\u0301\u0301 \ufe0f", {}, "input 1: empty text .its tokenizer keeps none of its characters."),
        (["fine", "\u0301"], {"long_text": "chunk"}, "input 2: empty text .its tokenizer keeps none"),
    ],
)
def test_calls_that_cannot_mean_anything_are_refused(bert_dir, inputs, options, message):
    import fastsentiment

    if message is None:  # a neighbour of a refusal that is taken
        assert Classifier.load(bert_dir, backend="torch")(inputs, **options)[0]["label"]
        return
    with pytest.raises(ValueError, match=message) as refused:  # as transformers.pipeline's refusals are
        Classifier.load(bert_dir, backend="torch")(inputs, **options)
    assert isinstance(refused.value, fastsentiment.InputError) and fastsentiment.InputError is InputError


def test_pipeline_call_forms_are_taken_as_transformers_takes_them(bert_dir, pipeline_for):
    """Records `{"text": ...}` (a lone one answered by one dict), a per-call `max_length` with `truncation=True`,
    and `padding`, as `pipe(texts, truncation=True, max_length=..., padding=True)` passes them."""
    clf, reference = Classifier.load(bert_dir, backend="torch"), pipeline_for(bert_dir)
    long_text = "good film but bad cake " * 6
    for inputs, options in [
        ({"text": TEXTS[0]}, {}),
        ({"text": TEXTS[0]}, {"top_k": None}),
        ({"text": TEXTS[0], "label": 1}, {}),  # a dataset row: its other fields are left alone (were refused)
        ([{"text": TEXTS[0], "text_pair": None}], {}),  # no pair (was refused as one)
        ([{"text": text} for text in TEXTS], {}),
        ([long_text, TEXTS[1]], {"truncation": True, "max_length": 8}),
        (long_text, {"truncation": True, "max_length": 8, "padding": True}),
        (long_text, {"max_length": 8}),  # unset truncation with a max_length cuts, as transformers does
        (long_text, {"max_length": 8, "truncation": False}),  # ... but not where truncation is off
        (long_text, {"max_length": 8, "padding": "longest"}),  # ... or padding takes the max_length
        (long_text, {"max_length": 8, "truncation": "longest_first"}),  # transformers' strategies for one text
        (long_text, {"max_length": 8, "truncation": "only_first", "padding": True}),
    ]:
        ours, theirs = clf(inputs, **options), reference(inputs, **options)
        assert type(ours) is type(theirs) and len(ours) == len(theirs), (inputs, options)
        flat = [ours] if isinstance(ours, dict) else ours
        expected = [theirs] if isinstance(theirs, dict) else theirs
        assert _labels(flat) == _labels(expected), options
        np.testing.assert_allclose(_scores(flat), _scores(expected), atol=1e-5)
    loaded_short = Classifier.load(bert_dir, backend="torch", max_length=8)
    assert clf(long_text, max_length=8) == loaded_short(long_text)
    with pytest.raises(InputError, match="input 1 has 44 tokens, over the max_length of 8;"):  # not "the model's"
        loaded_short(long_text, truncation=False)


def test_settings_are_checked_before_any_text_runs_and_agreeing_ones_are_taken(bert_dir, caplog):
    """A typo in top_k or function_to_apply was found after the model had read every text (a generator's texts used
    up); long_text="error" beside truncation=False, which ask for the same, was refused as a request for windows; an
    explicit truncation=True warned for every text it cut, where the pipeline cuts without a word."""
    clf = Classifier.load(bert_dir, backend="onnx", precision="fp32")
    read = []

    def texts():
        for text in TEXTS:
            read.append(text)
            yield text

    for options, message in [
        ({"top_k": 0}, "top_k must be"),
        ({"function_to_apply": "softmx"}, "softmx"),
        ({"long_text": "chunk", "aggregate": "maen"}, "unknown aggregate 'maen'"),
        ({"batch_size": 0}, "batch size must be"),
    ]:
        with pytest.raises(InputError, match=message):
            clf(texts(), **options)
    assert read == []
    long_text = "good film but bad cake " * 20
    with pytest.raises(InputError, match=r"input 1 has .* tokens, over the model's limit"):
        clf(long_text, long_text="error", truncation=False)
    with pytest.raises(InputError, match="truncation True cuts long texts and long_text 'error' refuses them; give"):
        clf(long_text, long_text="error", truncation=True)
    with pytest.raises(InputError, match=r"unknown long_text .--long-text. 'chnk'"):  # not "disagree"
        clf(long_text, long_text="chnk", truncation=True)
    with caplog.at_level("WARNING", logger="fastsentiment"):
        cut = clf([long_text, long_text], truncation=True)
        assert not [record for record in caplog.records if "truncated" in record.getMessage()]
        assert clf([long_text, long_text]) == cut  # unset: the same cut, with a warning per text
        assert len([record for record in caplog.records if "truncated" in record.getMessage()]) == 2


def test_model_and_backend_references_of_any_form_a_caller_may_pass(bert_dir, monkeypatch):
    """bytes of a folder that exists were "not found"; a number was a TypeError from os.fspath; "" loaded whatever
    folder the process was in; backend=None (as device=None and precision=None: the default) an AttributeError."""
    from fastsentiment.errors import ModelError

    expected = Classifier.load(bert_dir, backend="onnx", precision="fp32").logits(TEXTS)
    by_bytes = Classifier.load(os.fsencode(bert_dir), backend="onnx", precision="fp32")
    np.testing.assert_array_equal(by_bytes.logits(TEXTS), expected)
    assert Classifier.load(bert_dir, backend=None).backend.spec.name in ("onnx", "openvino", "torch")
    with pytest.raises(ModelError, match="a model is a built-in name, a folder or a hub id, got int"):
        Classifier.load(123)
    monkeypatch.chdir(bert_dir)  # a model folder here: "" must not mean it
    with pytest.raises(ModelError, match="the model is an empty name"):
        Classifier.load("")
    with pytest.raises(BackendError, match="backend must be a name such as 'auto' or 'onnx:int8', got 7"):
        Classifier.load(bert_dir, backend=7)


def test_a_dataset_read_by_index_is_taken_as_the_pipeline_takes_it(bert_dir, pipeline_for):
    """`pipe(KeyDataset(dataset, "text"))`, transformers' documented way to run a dataset: an object of __getitem__
    and __len__ without __iter__, which Python iterates, was refused as not a list of texts."""
    from transformers.pipelines.pt_utils import KeyDataset

    rows = KeyDataset([{"text": text} for text in TEXTS], "text")
    assert not hasattr(rows, "__iter__")
    ours, theirs = Classifier.load(bert_dir, backend="torch")(rows), list(pipeline_for(bert_dir)(rows))
    assert _labels(ours) == _labels(theirs)
    np.testing.assert_allclose(_scores(ours), _scores(theirs), atol=1e-5)


def test_devices_as_pipeline_code_gives_them_are_taken(bert_dir):
    """transformers' device numbers (-1: the CPU, 0: the first CUDA GPU), a torch.device and None failed with an
    AttributeError ('int' object has no attribute 'split')."""
    torch = pytest.importorskip("torch")
    from fastsentiment.classifier import device_name

    expected = Classifier.load(bert_dir, backend="onnx", precision="fp32", device="cpu").logits(TEXTS)
    for device in (-1, torch.device("cpu"), None):
        clf = Classifier.load(bert_dir, backend="onnx", precision="fp32", device=device)
        assert clf.backend.device == "cpu", device
        np.testing.assert_array_equal(clf.logits(TEXTS), expected)
    assert [device_name(d) for d in (0, np.int64(1), torch.device("cuda", 1), "mps")] == [
        "cuda:0",
        "cuda:1",
        "cuda:1",
        "mps",
    ]
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA device"):
            Classifier.load(bert_dir, backend="torch", device=0)
    for bad in (-2, True, 1.5):
        with pytest.raises(InputError, match=f"device must be a name such as 'cpu' or 'cuda:0'.*got {bad!r}"):
            Classifier.load(bert_dir, backend="onnx", device=bad)


def test_a_table_is_refused_not_read_as_its_column_names(bert_dir):
    import pandas as pd

    clf = Classifier.load(bert_dir, backend="torch")
    table = pd.DataFrame({"text": TEXTS})
    with pytest.raises(InputError, match=r"inputs is a table: pass its text column \(df\['text'\]\)"):
        clf(table)
    assert clf(table["text"]) == clf(TEXTS)


def test_a_regression_head_gives_its_raw_output_as_transformers_does(tmp_path, pipeline_for):
    import json

    from tiny_models import build_model

    model = build_model(tmp_path / "rating", "bert", labels=("rating",))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "problem_type": "regression"}))
    clf = Classifier.load(model, backend="onnx", precision="fp32")
    (answer,) = clf(TEXTS[0])
    (expected,) = pipeline_for(model)(TEXTS[0])
    assert answer["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert answer["score"] == pytest.approx(float(clf.logits([TEXTS[0]])[0, 0]))  # not squashed into (0, 1)
    # and the console shows the raw output as a number, not as a percentage (0.0113 was "1.13%")
    shown = run_cli("classify", TEXTS[0], "-m", str(model), "-b", "onnx", "-p", "fp32")
    assert shown.returncode == 0, shown.stderr.decode()
    label, score, _ = shown.stdout.decode().split(maxsplit=2)
    assert label == "rating" and "%" not in score and float(score) == pytest.approx(answer["score"], abs=1e-4)


def test_transformers_truncation_argument_is_taken(bert_dir):
    """`pipe(texts, truncation=True)` is common pipeline code: True cuts, as the default does."""
    clf = Classifier.load(bert_dir, backend="torch")
    long_text = "good " * 100
    assert clf([long_text, "bad"], truncation=True) == clf([long_text, "bad"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads": 0}, "threads must be a whole number of at least 1"),
        ({"threads": -1}, "threads must be a whole number of at least 1"),
        ({"labels": "abc"}, "labels must be a list of names"),
        ({"labels": []}, "labels must be a list of names in class-id order, got an empty one"),
        # Each of these loaded, and then failed every long text with a TypeError, named class 0 "0", or took the
        # throughput setup for a typo; and the load's own refusals were not ValueErrors, as a call's are.
        ({"max_length": 32.0}, "max_length \\(--max-length\\) must be a whole number of tokens, got 32.0"),
        ({"max_length": "64"}, "max_length \\(--max-length\\) must be a whole number of tokens, got '64'"),
        ({"max_length": 10_000}, "exceeds what the model accepts"),
        ({"max_length": 2}, "max_length \\(--max-length\\) must be at least 3"),
        ({"labels": [0, 1]}, "the labels \\(--labels\\) must be names \\(strings\\)"),
        ({"labels": ["a", "a"]}, "must be distinct"),
        ({"labels": ["a", "b", "c"]}, "name 3 classes"),
        ({"workload": "latancy"}, "unknown workload 'latancy'; expected one of throughput, latency, start"),
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of must be a whole number of at least 1, got 0"),
        ({"pad_to_multiple_of": 8.0}, "pad_to_multiple_of must be a whole number of at least 1, got 8.0"),
    ],
)
def test_load_options_that_cannot_mean_anything_are_refused(bert_dir, options, message):
    with pytest.raises(InputError, match=message) as refused:
        Classifier.load(bert_dir, backend="openvino", **options)
    assert isinstance(refused.value, ValueError)


def test_load_takes_numpy_whole_numbers_as_a_call_does(bert_dir):
    """max_length=np.int64(16) was refused as "must be a whole number of tokens, got np.int64(16)", where batch_size,
    threads and a call's own max_length take numpy's integers."""
    clf = Classifier.load(bert_dir, backend="onnx", precision="fp32", max_length=np.int64(16), batch_size=np.int64(2))
    assert clf.encoder.max_length == 16 and type(clf.encoder.max_length) is int
    assert clf("good " * 40) == Classifier.load(bert_dir, backend="onnx", precision="fp32")("good " * 40, max_length=16)
    with pytest.raises(InputError, match="max_length \\(--max-length\\) must be at least 3"):
        Classifier.load(bert_dir, backend="onnx", precision="fp32", max_length=np.int64(2))


def test_labels_may_come_from_any_iterable(bert_dir):
    clf = Classifier.load(bert_dir, backend="onnx", precision="fp32", labels=(name for name in ["bad", "good"]))
    assert clf.labels == ["bad", "good"] and clf("I like cheese")[0]["label"] in ("bad", "good")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_stay_close_to_fp32(bert_dir, precision):
    reference = Classifier.load(bert_dir, backend="torch").logits(TEXTS)
    reduced = Classifier.load(bert_dir, backend="torch", precision=precision).logits(TEXTS)
    assert reduced.dtype == np.float32
    assert np.abs(reduced - reference).max() < 0.5


def test_the_default_batch_size_is_the_devices(bert_dir):
    """32 texts per call on a CPU; 256 on a CUDA GPU, which at 32 waits on kernel launches; a batch size asked for
    is kept everywhere."""
    from fastsentiment.backends.registry import default_batch_size

    assert [default_batch_size(d) for d in ("cpu", "cuda", "cuda:1", "mps", "ane")] == [32, 256, 256, 32, 32]
    assert Classifier.load(bert_dir, backend="onnx", device="cpu").batch_size == 32
    assert Classifier.load(bert_dir, backend="torch", device="cpu", batch_size=500).batch_size == 500


def test_a_batch_the_device_has_no_memory_for_runs_in_smaller_calls(bert_dir, caplog):
    """torch's out-of-memory error (a GPU's; raised here by a network that holds at most 24 padded tokens) splits
    the batch, later calls keep under what fit, results stay the same; one text that does not fit is one line."""
    torch = pytest.importorskip("torch")
    clf = Classifier.load(bert_dir, backend="torch", device="cpu", batch_size=64)
    texts = [f"the film number {i} was {'good' if i % 2 else 'bad'}" for i in range(40)]
    expected = clf.logits(texts)

    class HoldsTokens(torch.nn.Module):
        def __init__(self, network, tokens: int) -> None:
            super().__init__()
            self.network, self.tokens, self.calls = network, tokens, []

        def forward(self, input_ids, **inputs):
            self.calls.append(input_ids.numel())
            if input_ids.numel() > self.tokens:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.network(input_ids=input_ids, **inputs)

    clf.backend._model = small = HoldsTokens(clf.backend._model, 24)
    with caplog.at_level("WARNING", logger="fastsentiment"):
        np.testing.assert_allclose(clf.logits(texts), expected, atol=1e-5)
    assert "ran out of memory at 40 texts" in caplog.text
    ran = [tokens for tokens in small.calls if tokens <= 24]
    assert max(small.calls) > 24 and len(ran) >= 40 // 2  # it failed big, then ran in calls that fit
    failed_before = len([t for t in small.calls if t > 24])
    np.testing.assert_allclose(clf.logits(texts), expected, atol=1e-5)
    assert len([t for t in small.calls if t > 24]) == failed_before  # the next call starts within the budget
    small.tokens = 3
    with pytest.raises(BackendError, match=r"torch on cpu ran out of memory for one text of \d+ tokens"):
        clf.logits(["a rather long text that no call can hold"])


def test_cuda_runs_when_present(bert_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = Classifier.load(bert_dir, backend="torch", device="cpu").logits(TEXTS)
    gpu = Classifier.load(bert_dir, backend="torch", device="cuda")
    assert gpu.backend.device == "cuda" and gpu.batch_size == 256
    np.testing.assert_allclose(gpu.logits(TEXTS), cpu, atol=1e-3)
    for precision in ("bf16", "fp16"):  # the half precisions of a GPU
        half = Classifier.load(bert_dir, backend="torch", device="cuda:0", precision=precision)
        assert next(half.backend._model.parameters()).dtype == getattr(
            torch, {"bf16": "bfloat16"}.get(precision, "float16")
        )
        assert np.abs(half.logits(TEXTS) - cpu).max() < 0.5
    with pytest.raises(BackendError, match="torch int8 runs on cpu; on cuda use fp32, bf16 or fp16"):
        Classifier.load(bert_dir, backend="torch", device="cuda", precision="int8")
    beyond = torch.cuda.device_count()
    with pytest.raises(BackendError, match=f"no CUDA device {beyond} \\(torch sees {beyond}\\)"):
        Classifier.load(bert_dir, backend="torch", device=f"cuda:{beyond}")


def test_fp16_is_for_gpus_and_int8_for_the_cpu(bert_dir):
    """torch fp16 on a CPU is refused in one line (bf16 is the CPU's half precision); `auto` measures, on each kind
    of device, only the precisions that run there."""
    from fastsentiment.backends.onnx_backend import OnnxBackend
    from fastsentiment.backends.torch_backend import TorchBackend

    for cpu in ("cpu", "cpu:0"):
        with pytest.raises(BackendError, match="torch fp16 runs on cuda or mps; on cpu use fp32, bf16 or int8"):
            Classifier.load(bert_dir, backend="torch", device=cpu, precision="fp16")
    assert Classifier.load(bert_dir, backend="torch", device="cpu:0", precision="int8").backend.precision == "int8"
    # "cpu:0" is the CPU for every backend (openvino refused it, where onnx and torch took it)
    assert Classifier.load(bert_dir, backend="openvino", device="cpu:0", precision="fp32").backend.device == "cpu"
    runs_on = {
        kind: [p for p in TorchBackend.spec.precisions if TorchBackend.spec.precision_runs_on(p, kind)]
        for kind in ("auto", "cpu", "cuda")
    }
    assert runs_on == {
        "auto": ["fp32", "bf16", "int8"],
        "cpu": ["fp32", "bf16", "int8"],
        "cuda": ["fp32", "bf16", "fp16"],
    }
    assert [p for p in OnnxBackend.spec.precisions if OnnxBackend.spec.precision_runs_on(p, "cuda")] == ["fp32", "fp16"]


def test_attention_on_cuda_leaves_out_cudnn_and_only_while_it_runs():
    """cuDNN builds an attention plan per new (batch, length): the torch backend and the trainer leave it out on
    CUDA, for the call only; on other devices nothing is touched."""
    torch = pytest.importorskip("torch")
    from fastsentiment.backends.torch_backend import attention_kernels

    assert torch.backends.cuda.cudnn_sdp_enabled()
    with attention_kernels("cuda:0"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
        q = torch.randn(2, 4, 5, 8)  # a masked attention still runs under the narrowed choice
        mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
        assert torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask).shape == q.shape
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with attention_kernels("cpu"), attention_kernels("mps"):
        assert torch.backends.cuda.cudnn_sdp_enabled()


def test_cuda_requested_without_a_gpu_is_a_clear_error(bert_dir):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendError, match="no CUDA device"):
        Classifier.load(bert_dir, backend="torch", device="cuda")


def test_the_backends_preference_order_does_not_depend_on_what_was_imported_first():
    """A program that imported the training code (which imports torch's backend) before listing backends got torch
    first: `auto` without a measurement, and an unknown device's error, then followed another order."""
    import subprocess
    import sys

    script = """
import fastsentiment.backends.torch_backend
from fastsentiment.backends.registry import backend_names, first_runnable
print(backend_names()[:3], first_runnable("cpu"))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["['onnx',", "'torch',", "'openvino']", "onnx"]


def test_threads_of_a_new_process_load_and_export_at_once(bert_dir, tmp_path):
    """A web app's threads loading models at start-up: the second found the backend list half made ("unknown backend
    'onnx'"), and two first exports at once failed inside torch's exporter (and left INFO logging switched off)."""
    import os
    import subprocess
    import sys

    script = f"""
import logging, threading
from fastsentiment import Classifier
answers = []
def load(precision):
    try:
        answers.append(Classifier.load({str(bert_dir)!r}, backend="onnx", precision=precision)("good film")[0]["label"])
    except Exception as error:
        answers.append(repr(error))
threads = [threading.Thread(target=load, args=(p,)) for p in ("int8", "int8-dynamic", "int8", "fp32")]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
print(sorted(set(answers)), logging.root.manager.disable)
"""
    env = {**os.environ, "FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    labels, disabled = result.stdout.strip().rsplit(" ", 1)
    assert len(eval(labels)) == 1 and eval(labels)[0] in ("NEGATIVE", "POSITIVE"), labels
    assert disabled == "0"


@pytest.mark.parametrize("long_text", ["truncate", "error", "chunk"])
def test_names_of_another_count_than_the_texts_are_refused(bert_dir, long_text):
    """One name short was a ValueError from zip (truncate, error) or taken silently (chunk), naming the wrong text
    in a later message."""
    clf = Classifier.load(bert_dir, backend="onnx", precision="fp32")
    with pytest.raises(InputError, match=r"^names: 1 for 2 texts; give one name per text$"):
        clf.predict(["good", "bad"], names=["first"], long_text=long_text)
    named = clf.predict(["good", "bad"], names=["a", "b"], long_text=long_text)
    assert [p.label for p in named] == [p.label for p in clf.predict(["good", "bad"])]
