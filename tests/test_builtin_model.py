"""The shipped model: its stated accuracy, the experiment's sentences, and every backend on SST-2 dev."""

import re

import numpy as np
import pytest

from fastsentiment import Classifier
from fastsentiment.backends import availability
from fastsentiment.backends.base import cpu_computes_bf16
from fastsentiment.models import BUILTIN_MODELS, DEFAULT_MODEL, resolve_model

EXPERIMENT = {"I like cheese": "POSITIVE", "I like cheesecake": "POSITIVE", "I hate cheesecake": "NEGATIVE"}


@pytest.fixture(scope="module")
def builtin():
    return resolve_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def reference(builtin, sst2_dev):
    """Hugging Face fp32 logits on all of SST-2 dev: what every other path is measured against."""
    texts, _ = sst2_dev
    return Classifier.load(builtin.path, backend="torch", precision="fp32").logits(texts)


def card_accuracy(builtin) -> float:
    card = (builtin.path / "README.md").read_text()
    return float(re.search(r"^sst2_dev_accuracy: ([0-9.]+)$", card, re.MULTILINE).group(1))


def test_builtin_model_is_a_standard_fp16_directory_with_named_labels(builtin):
    from safetensors.numpy import load_file

    assert builtin.labels == ["NEGATIVE", "POSITIVE"]
    assert builtin.model_type == "bert"
    assert {tensor.dtype for tensor in load_file(builtin.weights_path).values()} == {np.dtype("float16")}
    assert BUILTIN_MODELS[DEFAULT_MODEL].path == builtin.path


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_the_experiments_sentences(backend):
    clf = Classifier.load(backend=backend)
    results = clf(list(EXPERIMENT))
    assert [r["label"] for r in results] == list(EXPERIMENT.values())


def test_shipped_model_scores_what_its_card_states_on_sst2_dev(builtin, sst2_dev, reference):
    texts, labels = sst2_dev
    assert len(texts) == 872
    accuracy = float((reference.argmax(axis=1) == np.array(labels)).mean())
    assert accuracy >= card_accuracy(builtin)


# (backend, precision, minimum label agreement, maximum |Δlogit| or None)
PATHS = [
    ("torch", "bf16", 0.99, None),
    # torch's dynamic int8 scales each activation tensor with one number; even with per-channel
    # weights and fp32 FFN down-projections it agreed on 98.7% of dev with the earlier built-in model and
    # 97.6% with the distilled one (wider activations), short of the 99% that ONNX Runtime's block-wise
    # int8 reaches (see the onnx row); `tune` rejects it. Its accuracy stays within 0.5 points.
    ("torch", "int8", 0.975, None),
    ("onnx", "fp32", 1.0, 1e-4),
    ("onnx", "int8", 0.99, None),
    # opt-in: one activation scale per tensor, ~2x the throughput of block-wise int8 on this CPU and
    # 98.6% agreement (docs/int8.md); below the 99% bar, which is why it is not the default.
    ("onnx", "int8-dynamic", 0.98, None),
    ("openvino", "fp32", 1.0, 1e-4),
    ("openvino", "bf16", 0.99, None),
    ("openvino", "int8", 0.99, None),
    # NNCF static int8, calibrated on the project's own 256 sentences, feed-forward down-projections in float
    # (export/openvino.py): 99.77% on a Xeon with AMX; with every matmul in int8 it was 98.85%.
    ("openvino", "int8-static", 0.99, None),
    ("ane", "fp32", 1.0, 1e-4),
]


@pytest.mark.parametrize(("backend", "precision", "agreement", "max_delta"), PATHS)
def test_every_backend_agrees_with_hugging_face_fp32_on_sst2_dev(
    builtin, sst2_dev, reference, backend, precision, agreement, max_delta
):
    status = availability(backend)
    if not status.runnable:
        pytest.skip(f"{backend}: {status.reason}")
    if (backend, precision) == ("openvino", "bf16") and not cpu_computes_bf16():
        pytest.skip("this CPU has no bf16 arithmetic: OpenVINO refuses bf16 (tests/test_export.py)")
    texts, labels = sst2_dev
    logits = Classifier.load(builtin.path, backend=backend, precision=precision).logits(texts)
    assert (logits.argmax(axis=1) == reference.argmax(axis=1)).mean() >= agreement
    if max_delta is not None:
        assert np.abs(logits - reference).max() <= max_delta
    labels = np.array(labels)
    reference_accuracy = (reference.argmax(axis=1) == labels).mean()
    assert abs((logits.argmax(axis=1) == labels).mean() - reference_accuracy) <= 0.005


def test_wrong_layernorm_mapping_is_the_experiments_disagreement(builtin, sst2_dev, reference):
    """Unscaled LayerNorm biases in the ANE layout: the symptom docs/ane-layernorm.md describes."""
    import torch

    from fastsentiment.models.ane import ane_model_from_dir

    texts, _ = sst2_dev
    clf = Classifier.load(builtin.path, backend="torch")
    wrong_model = ane_model_from_dir(builtin, rescale_layernorm_bias=False)

    class Wrong:
        def logits(self, input_ids, attention_mask):
            with torch.inference_mode():
                return wrong_model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()

    clf.backend = Wrong()
    wrong = clf.logits(texts)
    agreement = (wrong.argmax(axis=1) == reference.argmax(axis=1)).mean()
    assert agreement < 0.99  # visibly different predictions ...
    assert np.abs(wrong - reference).max() > 1.0  # ... from logits that moved by whole units


def test_readme_main_command_classifies_with_the_builtin_model():
    from conftest import run_cli

    result = run_cli("classify", "I like cheese", "I hate cheesecake")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("POSITIVE") and lines[0].endswith("I like cheese")
    assert lines[1].startswith("NEGATIVE") and lines[1].endswith("I hate cheesecake")
