"""RoBERTa, CamemBERT, XLM-RoBERTa, MPNet and DeBERTa-v2 on every backend, against Hugging Face.

Models are random-weight, of two shapes each, with LayerNorm weights and biases moved away from 1 and 0
and a scaled-up classifier (tiny_models.build_family_model); their tokenizers are real byte-level BPE,
WordPiece and SentencePiece-Unigram models trained here with the `tokenizers` library.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import coreml_program, run_cli
from fastsentiment.backends.base import cpu_computes_bf16
from tiny_models import FAMILIES, build_family_model, build_model

SHAPES = {
    "small": {"layers": 2, "hidden": 32, "heads": 4, "seed": 0},
    "wide": {"layers": 3, "hidden": 48, "heads": 6, "seed": 1},
}
FP32_BACKENDS = ("torch", "onnx", "openvino", "ane")
ANE_FAMILIES = ("roberta", "camembert", "xlm-roberta", "mpnet", "deberta-v2")


@pytest.fixture(scope="session")
def family_model(tmp_path_factory, sst2_dev):
    """Builds (once) a model of a family and shape; its tokenizer and label spread come from SST-2 dev sentences."""
    built: dict[str, Path] = {}

    def get(kind: str, shape: str = "small", **options) -> Path:
        key = repr((kind, shape, sorted(options.items())))
        if key not in built:
            folder = tmp_path_factory.mktemp(f"{kind}-{shape}")
            built[key] = build_family_model(folder / kind, kind, **SHAPES[shape], corpus=sst2_dev[0][:400], **options)
        return built[key]

    return get


@pytest.fixture(scope="module")
def texts(sst2_dev) -> list[str]:
    return sst2_dev[0][:120]


def hugging_face_logits(
    model_dir: Path, texts: list[str], batch: int = 16, max_length: int | None = None
) -> np.ndarray:
    """AutoModelForSequenceClassification on padded batches of mixed lengths, in the texts' own order (truncated to
    `max_length` tokens where given, else to the tokenizer's model_max_length)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    network = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(
            texts[start : start + batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            rows.append(network(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits)
    return torch.cat(rows).numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", FAMILIES)
def test_every_fp32_path_matches_hugging_face(family_model, texts, kind, shape, tmp_path, monkeypatch):
    from fastsentiment import Classifier

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path))
    model = family_model(kind, shape)
    reference = hugging_face_logits(model, texts)
    assert np.abs(reference).max() > 1  # logits that a wrong conversion would visibly change
    for backend in FP32_BACKENDS:
        if backend == "ane" and kind not in ANE_FAMILIES:
            continue
        logits = Classifier.load(model, backend=backend, precision="fp32", batch_size=16).logits(texts)
        assert np.abs(logits - reference).max() <= 1e-4, (kind, shape, backend)


@pytest.mark.parametrize("kind", ("roberta", "xlm-roberta", "mpnet"))
def test_a_literal_padding_token_in_a_text_is_numbered_as_hugging_face_numbers_it(family_model, texts, kind):
    """The tokenizer turns "<pad>" written in a text into the padding id, which Hugging Face leaves out when it
    numbers positions: the tokens after it move one place back (the ANE layout once counted them on)."""
    from fastsentiment import Classifier

    model = family_model(kind)
    padded = [f"<pad> {text}" for text in texts[:6]] + [f"{text} <pad> {text}" for text in texts[6:12]]
    reference = hugging_face_logits(model, padded)
    shifted = hugging_face_logits(model, [text.replace("<pad>", "") for text in padded])
    assert np.abs(reference - shifted).max() > 1e-2  # the token matters: a wrong numbering would show
    for backend in FP32_BACKENDS:
        logits = Classifier.load(model, backend=backend, precision="fp32").logits(padded)
        assert np.abs(logits - reference).max() <= 1e-4, backend


@pytest.mark.parametrize(
    ("kind", "null_prefix"),
    [("xlm-roberta", False), ("deberta-v2", False), ("roberta", False), ("xlm-roberta", True), ("deberta-v2", True)],
)  # (RobertaTokenizer fails on a null add_prefix_space, as it is refused here)
def test_tokenizer_classes_transformers_rebuilds_are_rebuilt_alike(family_model, kind, null_prefix, tmp_path):
    """A tokenizer.json that splits on a bare Metaspace (the hub's XLM-R files, written before transformers 5, and
    the test models') makes a piece of every extra, leading or trailing space, which SentencePiece, and transformers'
    XLMRobertaTokenizer and DebertaV2Tokenizer rebuilding the pipeline from the pieces, do not: read as it was,
    "Great  film" gave the model another input (a DeBERTa label flipped on it). RobertaTokenizer rebuilds its
    byte-level pipeline from tokenizer_config.json's add_prefix_space, which a fine-tune may have set (a text's first
    word was another piece)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from fastsentiment.models.modeldir import load_model_dir
    from fastsentiment.tokenization import TextEncoder

    # as the class's save_pretrained names it (the test models name PreTrainedTokenizerFast, read as they are)
    model = Path(shutil.copytree(family_model(kind), tmp_path / kind))
    settings = json.loads((model / "tokenizer_config.json").read_text())
    named = {"xlm-roberta": "XLMRobertaTokenizer", "deberta-v2": "DebertaV2Tokenizer", "roberta": "RobertaTokenizer"}
    prefix = {"add_prefix_space": True} if kind == "roberta" else {}
    if null_prefix:  # as saved configs may write it: false to the classes' __init__, where it was refused here
        prefix = {"add_prefix_space": None}
    (model / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": named[kind], **prefix}))
    spaced = ["Great  film,  loved it", " a leading space", "a trailing space ", "tab\tand\nnewline", "a   b  ", "ok"]
    theirs = [AutoTokenizer.from_pretrained(model)(text)["input_ids"] for text in spaced]
    as_written = [Tokenizer.from_file(str(model / "tokenizer.json")).encode(text).ids for text in spaced]
    assert as_written != theirs  # the file alone numbers the spaces otherwise: the test can tell
    ours = TextEncoder.from_model_dir(load_model_dir(model)).encodings(spaced)
    assert [encoding.ids for encoding in ours] == theirs


@pytest.mark.parametrize("kind", FAMILIES)
def test_reduced_precisions_run_every_family_and_follow_fp32(family_model, texts, kind, tmp_path, monkeypatch):
    """Every bf16 / int8 path runs each family and keeps the labels fp32 gives with a clear margin.

    Random weights make a chaotic network (a trained one is smooth), so label agreement over all sentences says
    little here: it is measured on a trained MPNet, the built-in model's teacher, in docs/architectures.md. What a
    random model can show is that a path computes the same function: where fp32's margin is at least half the
    logits' spread, bf16 and block-wise int8 keep every label; the per-tensor int8 recipes, whose error such a
    network amplifies most, must still follow fp32 far better than chance (a wrong input or layout gives ~50%).
    Every model runs on one thread: its sums then add up in one order wherever the test runs (with two threads,
    ONNX Runtime's int8 MPNet flipped one of 88 confident labels of this chaotic network, with one it flips none).
    """
    from fastsentiment import Classifier

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path))
    model = family_model(kind)
    reference = Classifier.load(model, backend="torch", precision="fp32", threads=1).logits(texts)
    confident = np.abs(reference[:, 1] - reference[:, 0]) > 0.5 * reference.std()
    assert confident.sum() >= 40
    faithful = [("torch", "bf16"), ("onnx", "int8")] + ([("openvino", "bf16")] if cpu_computes_bf16() else [])
    coarse = [("torch", "int8"), ("onnx", "int8-dynamic")]
    for (backend, precision), bar in [(path, 1.0) for path in faithful] + [(path, 0.65) for path in coarse]:
        logits = Classifier.load(model, backend=backend, precision=precision, threads=1).logits(texts)
        agreement = float((logits.argmax(1) == reference.argmax(1))[confident].mean())
        assert agreement >= bar, (kind, backend, precision, agreement)


@pytest.mark.parametrize("kind", [*FAMILIES, "bert", "distilbert"])
def test_static_int8_keeps_each_layers_ffn_down_projection_in_float(family_model, kind, tmp_path, monkeypatch):
    """The one rule `int8-static` adds to NNCF's preset finds exactly one MatMul per layer in every architecture's
    export (its effect on accuracy is measured on the built-in model: tests/test_builtin_model.py)."""
    import openvino as ov

    from fastsentiment.backends.onnx_backend import onnx_file
    from fastsentiment.export.openvino import ffn_down_projections
    from fastsentiment.models import load_model_dir

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path))
    if kind in FAMILIES:
        model = load_model_dir(family_model(kind))
    else:
        model = load_model_dir(build_model(tmp_path / kind, kind))
    shape = model.architecture.encoder_shape(model.config)
    network = ov.Core().read_model(str(onnx_file(model, "plain")))
    names = ffn_down_projections(network, shape["ffn"])
    assert len(names) == shape["layers"], names


@pytest.mark.parametrize("kind", ("mpnet", "deberta-v2"))
def test_relative_position_buckets_are_exported_as_integers(family_model, kind, tmp_path, monkeypatch):
    """Hugging Face computes MPNet's and DeBERTa-v2's buckets with log(distance), float arithmetic a runtime may
    round otherwise (bf16; OpenVINO's fp32 at DeBERTa's farthest distance); the export looks them up in an integer
    table instead, with the same buckets."""
    import onnx
    import torch
    from transformers.models.deberta_v2 import modeling_deberta_v2
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from fastsentiment.backends.onnx_backend import onnx_file
    from fastsentiment.export.onnx import _exportable
    from fastsentiment.models import load_model_dir

    model = load_model_dir(family_model(kind))
    positions = torch.arange(-300, 301)[None, :]  # beyond MPNet's max_distance and the models' lengths too

    def bucket():
        if kind == "mpnet":
            return MPNetEncoder.relative_position_bucket(positions)
        # The family model's 16 buckets, spaced up to its 64 positions. Past those, Hugging Face's bucket lies beyond
        # the 2 x 16 distance embeddings, to whose ends its attention clamps it.
        return modeling_deberta_v2.make_log_bucket_position(positions, 16, 64).long().clamp(-16, 16)

    computed = bucket()
    with _exportable(model):
        assert torch.equal(bucket(), computed)
    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path))
    graph = onnx.load(str(onnx_file(model, "plain")))
    assert "Log" not in {node.op_type for node in graph.graph.node}


@pytest.mark.skipif(not cpu_computes_bf16(), reason="OpenVINO runs bf16 only where the CPU computes it")
def test_openvino_bf16_after_fp32_does_not_take_the_fp32_compiled_blob(family_model, texts, tmp_path, monkeypatch):
    """OpenVINO's compiled-model cache handed a bf16 load the blob an fp32 load had cached for the same file; run
    with bf16 settings, it gave NaN (a tiny MPNet, one unpadded text). Each compute precision has its own folder."""
    from fastsentiment import Classifier

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path))
    model = family_model("mpnet")
    assert np.isfinite(Classifier.load(model, backend="openvino", precision="fp32").logits(texts[:1])).all()
    # (how close bf16 comes to fp32 is measured on trained models: a random network amplifies its rounding)
    assert np.isfinite(Classifier.load(model, backend="openvino", precision="bf16").logits(texts[:1])).all()
    assert sorted(p.name for p in (tmp_path / "openvino").iterdir()) == ["bf16", "fp32"]


@pytest.mark.parametrize("kind", FAMILIES)
def test_scores_equal_the_transformers_pipeline(family_model, texts, kind):
    import torch
    from transformers import pipeline

    from fastsentiment import Classifier

    model = family_model(kind)
    reference = pipeline("text-classification", model=str(model), dtype=torch.float32, device="cpu")
    expected = reference(texts[:24], top_k=None, truncation=True)
    # One text per call, as the pipeline runs them: padding's rounding is covered by the 1e-4 parity test above.
    ours = Classifier.load(model, backend="torch", precision="fp32", batch_size=1)(texts[:24], top_k=None)
    for mine, theirs in zip(ours, expected, strict=True):
        assert [r["label"] for r in mine] == [r["label"] for r in theirs]
        assert np.allclose([r["score"] for r in mine], [r["score"] for r in theirs], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ("roberta", "xlm-roberta", "mpnet", "deberta-v2"))
def test_ane_layout_at_fp16_agrees_with_fp32(family_model, texts, kind):
    """The numbers CoreML computes with on the Neural Engine, run by PyTorch on this CPU.

    As in the test above, a random network puts some sentences within fp16's rounding of a tie, and which of
    those flip changes from CPU to CPU (CI once saw 2 of 120): fp16 must keep every label fp32 gives with a
    margin wider than twice the largest logit change it makes, and a clear majority of all of them. Agreement
    over all of SST-2 dev is measured on trained models in docs/architectures.md.
    """
    from fastsentiment import Classifier

    model = family_model(kind)
    fp32 = Classifier.load(model, backend="ane", precision="fp32").logits(texts)
    fp16 = Classifier.load(model, backend="ane", device="cpu", precision="fp16").logits(texts)
    error = np.abs(fp16 - fp32).max()
    assert 0 < error <= 0.1 * np.abs(fp32).max()  # fp16 ran (not fp32 again), and closely
    margin = np.abs(fp32[:, 1] - fp32[:, 0])
    agree = fp16.argmax(1) == fp32.argmax(1)
    clear = margin > 2 * error
    assert clear.sum() >= 0.75 * len(texts)
    assert agree[clear].all()
    assert agree.mean() >= 0.95


@pytest.mark.parametrize("kind", ("roberta", "xlm-roberta", "mpnet", "deberta-v2"))
def test_coreml_export_of_every_family(family_model, kind, tmp_path):
    pytest.importorskip("coremltools")
    import coremltools.proto.FeatureTypes_pb2 as ft
    import coremltools.proto.MIL_pb2 as mil

    shape = SHAPES["small"]
    model = family_model(kind)
    package = tmp_path / "model.mlpackage"
    result = run_cli("export", "coreml", str(model), str(package), "--seq-lengths", "32")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    spec, block = coreml_program(package)
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert all(array.dataType == ft.ArrayFeatureType.INT32 for array in inputs.values())
    ops = Counter(op.type for op in block.operations)
    # Per layer: 4 attention and 2 feed-forward convs, and 2 einsums per head; the head's 2 convs. DeBERTa-v2 also
    # projects the distance table with each layer's query and key convs and scores it with 2 einsums more per head.
    disentangled = kind == "deberta-v2"
    assert ops["conv"] == shape["layers"] * (8 if disentangled else 6) + 2
    assert ops["einsum"] == shape["layers"] * shape["heads"] * (4 if disentangled else 2)
    assert "matmul" not in ops and "linear" not in ops
    floats = {mil.DataType.FLOAT16, mil.DataType.FLOAT32, mil.DataType.FLOAT64}
    conv_weights = {  # (DeBERTa's 4-D constants also hold the int32 index of each key-query pair's distance)
        op.attributes["val"].type.tensorType.dataType
        for op in block.operations
        if op.type == "const"
        and len(op.attributes["val"].type.tensorType.dimensions) == 4
        and op.attributes["val"].type.tensorType.dataType in floats
    }
    assert conv_weights == {mil.DataType.FLOAT16}


def test_the_coreml_backend_exports_lengths_each_model_takes(family_model, tmp_path):
    """Its package holds 32, 64 and 128 tokens, within the model's limit; DeBERTa-v2's, the longest alone."""
    from fastsentiment.backends.coreml_backend import package_lengths
    from fastsentiment.models.modeldir import load_model_dir

    roberta, deberta = load_model_dir(family_model("roberta")), load_model_dir(family_model("deberta-v2"))
    assert roberta.max_length == deberta.max_length == 64
    assert package_lengths(roberta, 128) == [32, 64] and package_lengths(deberta, 128) == [64]
    package = tmp_path / "deberta.mlpackage"
    lengths = ",".join(map(str, package_lengths(deberta, 128)))
    exported = run_cli("export", "coreml", str(deberta.path), str(package), "--seq-lengths", lengths)
    # quietly: the tracer's warnings about DeBERTa-v2's shape arithmetic were a dozen lines around the command's one
    assert (exported.returncode, exported.stderr.decode()) == (0, ""), exported.stderr.decode()[-2000:]


def test_a_deberta_v2_package_of_several_lengths_is_refused_in_one_line(family_model, tmp_path):
    package = tmp_path / "model.mlpackage"
    result = run_cli("export", "coreml", str(family_model("deberta-v2")), str(package), "--seq-lengths", "16,32")
    assert result.returncode == 2 and not package.exists()
    assert result.stderr.decode().strip() == (
        "error: a deberta-v2 package holds one sequence length (its relative-position terms are built for one "
        "sequence length when it is traced): export one package per length"
    )


# DeBERTa-v2 configurations other than the v3 layout the family model has (relative positions only, shared keys,
# both score terms, log buckets): each switch changes what the ANE layout computes.
DEBERTA_VARIANTS = {
    "separate distance projections": {"share_att_key": False},
    "content-to-position only": {"pos_att_type": ["c2p"]},
    "absolute positions too": {"position_biased_input": True},
    "distances not bucketed": {"position_buckets": -1, "max_relative_positions": 8},
    "buckets up to 20": {"position_buckets": 8, "max_relative_positions": 20},
    "convolution after layer 1": {"conv_kernel_size": 3, "conv_act": "gelu"},
    "narrower embeddings": {"embedding_size": 24},
    "no relative attention": {"relative_attention": False},
    "distance table not normalised": {"norm_rel_ebd": "none"},
    "token types": {"type_vocab_size": 2},
}


@pytest.mark.parametrize("variant", DEBERTA_VARIANTS)
def test_ane_layout_follows_every_deberta_v2_configuration(family_model, texts, variant):
    from fastsentiment import Classifier

    model = family_model("deberta-v2", config_overrides=DEBERTA_VARIANTS[variant])
    reference = hugging_face_logits(model, texts)
    logits = Classifier.load(model, backend="ane", precision="fp32", batch_size=16).logits(texts)
    # fp32 rounding grows with the logits: these reach ~10 here, and an AMX Xeon's kernels put "buckets up to 20"
    # 1.08e-4 from transformers (1.1e-5 of the scale); a wrong layout is off by tenths.
    assert np.abs(logits - reference).max() <= 3e-5 * max(1.0, float(np.abs(reference).max())), variant


def test_a_deberta_v2_config_without_the_keys_transformers_defaults_runs_as_transformers_builds_it(
    family_model, texts, tmp_path
):
    """Without max_position_embeddings the ANE layout was a KeyError traceback (transformers takes 512), and without
    layer_norm_eps it took BERT's 1e-12 (DebertaV2Config's default is 1e-7)."""
    import shutil

    from transformers import AutoConfig

    from fastsentiment import Classifier
    from fastsentiment.models import resolve_model
    from fastsentiment.models.ane import encoder_config

    model = Path(shutil.copytree(family_model("deberta-v2"), tmp_path / "silent"))
    config = json.loads((model / "config.json").read_text())
    del config["max_position_embeddings"], config["layer_norm_eps"]
    (model / "config.json").write_text(json.dumps(config))
    assert encoder_config(resolve_model(model)).layer_norm_eps == AutoConfig.from_pretrained(model).layer_norm_eps
    reference = hugging_face_logits(model, texts)
    logits = Classifier.load(model, backend="ane", precision="fp32", batch_size=16).logits(texts)
    assert np.abs(logits - reference).max() <= 3e-5 * max(1.0, float(np.abs(reference).max()))


def test_an_architecture_without_an_ane_layout_is_refused_in_one_line(family_model, monkeypatch):
    """Every architecture has a Neural-Engine layout today; one added without it is refused by name, with the list
    of those that have one, wherever the layout is asked for."""
    from dataclasses import replace

    from fastsentiment import Classifier
    from fastsentiment.errors import FastSentimentError
    from fastsentiment.models.architectures import ARCHITECTURES, ane_layout_problem

    assert all(ane_layout_problem(kind) is None for kind in ARCHITECTURES)
    monkeypatch.setitem(ARCHITECTURES, "deberta-v2", replace(ARCHITECTURES["deberta-v2"], ane_module=None))
    problem = ane_layout_problem("deberta-v2")
    assert problem.startswith("no Neural-Engine layout for deberta-v2") and "mpnet" in problem
    with pytest.raises(FastSentimentError, match="no Neural-Engine layout for deberta-v2"):
        Classifier.load(family_model("deberta-v2"), backend="ane")


@pytest.mark.parametrize("act", ["silu", "quick_gelu", "gelu_fast"])
def test_the_ane_layout_computes_the_activations_it_lists(family_model, texts, act):
    from fastsentiment import Classifier
    from fastsentiment.models.architectures import ANE_ACTIVATIONS

    assert act in ANE_ACTIVATIONS
    model = family_model("roberta", config_overrides={"hidden_act": act})
    reference = hugging_face_logits(model, texts[:24])
    logits = Classifier.load(model, backend="ane", precision="fp32").logits(texts[:24])
    # The rounding rule of the DeBERTa-v2 test above: these logits reach ~9, and an AVX-512 EPYC put silu 1.04e-4
    # from transformers (1.2e-5 of the scale).
    assert np.abs(logits - reference).max() <= 3e-5 * max(1.0, float(np.abs(reference).max())), act


def test_an_activation_the_ane_layout_lacks_is_refused_in_one_line_and_not_offered(family_model, tmp_path):
    model = family_model("deberta-v2", config_overrides={"pooler_hidden_act": "mish"})
    message = "the ANE layout has no 'mish' activation (config.json pooler_hidden_act;"
    for args in (
        ["classify", "-m", str(model), "-b", "ane", "a fine film"],
        ["export", "coreml", str(model), str(tmp_path / "m.mlpackage")],
    ):
        result = run_cli(*args)
        (line,) = result.stderr.decode().splitlines()
        assert result.returncode == 2 and line.startswith("error: ") and message in line, line
    listing = run_cli("backends", "--model", str(model)).stdout.decode()
    ane = next(line for line in listing.splitlines() if line.replace("│", " ").split()[:1] == ["ane"])
    assert ane.replace("│", " ").split()[1] == "no" and "'mish' activation" in ane
    assert run_cli("classify", "-m", str(model), "-b", "torch", "a fine film").returncode == 0


def test_a_position_numbering_without_a_padding_id_is_refused_in_one_line(family_model, tmp_path):
    import shutil

    model = Path(shutil.copytree(family_model("roberta"), tmp_path / "no-pad"))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "pad_token_id": None}))
    result = run_cli("classify", "-m", str(model), "-b", "onnx", "a fine film")
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: {model / 'config.json'}: pad_token_id is None: roberta models number their positions from it, "
        "an integer"
    )


# ---- real-world config quirks -------------------------------------------------------------------
def test_an_mpnet_directory_with_vocab_txt_alone_encodes_as_mpnets_tokenizer(family_model, texts, tmp_path):
    """A WordPiece vocab.txt whose special tokens are <s> and </s>, not BERT's [CLS] and [SEP]."""
    import shutil

    from tokenizers import Tokenizer
    from transformers import MPNetTokenizer

    from fastsentiment.models.modeldir import load_model_dir
    from fastsentiment.tokenization import TextEncoder

    model = Path(shutil.copytree(family_model("mpnet"), tmp_path / "mpnet-vocab"))
    vocab = Tokenizer.from_file(str(model / "tokenizer.json")).get_vocab()
    (model / "vocab.txt").write_text("".join(f"{token}\n" for token in sorted(vocab, key=vocab.get)))
    (model / "tokenizer.json").unlink()
    # as MPNetTokenizer's save_pretrained names it (the copy's PreTrainedTokenizerFast needs its tokenizer.json)
    settings = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "MPNetTokenizer"}))
    sample = [*texts[:20], "good <pad> film", "Ünïcode ÀND CASE"]
    theirs = [MPNetTokenizer(str(model / "vocab.txt"))(text)["input_ids"] for text in sample]
    assert theirs[0][0] == vocab["<s>"] and theirs[0][-1] == vocab["</s>"]
    ours = TextEncoder.from_model_dir(load_model_dir(model)).encodings(sample)  # untruncated, as theirs
    assert [encoding.ids for encoding in ours] == theirs


def test_three_labels_named_label_n_can_be_renamed(family_model):
    model = family_model("roberta", labels=("LABEL_0", "LABEL_1", "LABEL_2"))
    plain = run_cli("classify", "-m", str(model), "--backend", "torch", "--json", "a fine film")
    assert plain.returncode == 0, plain.stderr.decode()
    assert json.loads(plain.stdout)["label"] in {"LABEL_0", "LABEL_1", "LABEL_2"}
    named = run_cli(
        "classify",
        "-m",
        str(model),
        "--backend",
        "torch",
        "--json",
        "--labels",
        "negative,neutral,positive",
        "a fine film",
    )
    assert named.returncode == 0, named.stderr.decode()
    assert (
        json.loads(named.stdout)["label"]
        == {"LABEL_0": "negative", "LABEL_1": "neutral", "LABEL_2": "positive"}[json.loads(plain.stdout)["label"]]
    )
    wrong = run_cli("classify", "-m", str(model), "--labels", "bad,good", "a fine film")
    assert (
        wrong.returncode != 0
        and "the labels (--labels) name 2 classes" in wrong.stderr.decode()
        and b"Traceback" not in wrong.stderr
    )


def test_five_label_head_returns_five_scores_that_sum_to_one(tmp_path):
    from fastsentiment import Classifier

    stars = tuple(f"{n} stars" for n in range(1, 6))
    model = build_model(tmp_path / "bert5", "bert", labels=stars)
    (scores,) = Classifier.load(model, backend="onnx", precision="fp32")(["the film was great"], top_k=None)
    assert sorted(s["label"] for s in scores) == sorted(stars)
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-5


def test_multi_label_heads_score_with_sigmoid_unless_told_otherwise(family_model, texts):
    import torch
    from transformers import pipeline

    from fastsentiment import Classifier

    model = family_model(
        "xlm-roberta", labels=("joy", "anger", "fear"), config_overrides={"problem_type": "multi_label_classification"}
    )
    clf = Classifier.load(model, backend="torch", precision="fp32")
    logits = clf.logits(texts[:8])
    sigmoid = clf(texts[:8], top_k=None)
    for row, answer in zip(logits, sigmoid, strict=True):
        by_label = {a["label"]: a["score"] for a in answer}
        assert np.allclose([by_label[name] for name in clf.labels], 1 / (1 + np.exp(-row)), atol=1e-6)
    reference = pipeline("text-classification", model=str(model), dtype=torch.float32, device="cpu")
    expected = reference(texts[:8], top_k=None)
    for mine, theirs in zip(sigmoid, expected, strict=True):
        assert np.allclose([r["score"] for r in mine], [r["score"] for r in theirs], atol=1e-5)
    softmax = clf(texts[:8], top_k=None, function_to_apply="softmax")
    assert all(abs(sum(a["score"] for a in answer) - 1) < 1e-5 for answer in softmax)


@pytest.mark.parametrize("kind", ("roberta", "mpnet", "deberta-v2"))
def test_without_model_max_length_the_position_table_sets_the_limit(family_model, kind):
    """A 514-position RoBERTa (or MPNet, or a 512-position DeBERTa-v2) takes 512 tokens; longer inputs are truncated
    or windowed, never an index error; at full length (past MPNet's farthest relative-position bucket, and across
    all of DeBERTa's log-spaced buckets, to the farthest, where OpenVINO once computed the log ratio a hair above
    torch's 1.0 and moved a bucket on) every runtime still matches."""
    from fastsentiment import Classifier
    from fastsentiment.models import resolve_model

    model = family_model(kind, max_tokens=512, model_max_length=False)
    table = 512 if kind == "deberta-v2" else 514  # RoBERTa and MPNet number positions from padding_idx + 1
    assert json.loads((model / "config.json").read_text())["max_position_embeddings"] == table
    assert resolve_model(model).max_length == 512
    long_text = "the film was great and the cheese was bad " * 200  # about 2,000 tokens
    full_length = {}
    for backend in FP32_BACKENDS:
        clf = Classifier.load(model, backend=backend, precision="fp32")
        full_length[backend] = clf.logits([long_text])
        (truncated,) = clf([long_text])
        (whole,) = clf([long_text], long_text="chunk", return_chunks=True)
        assert len(whole["chunks"]) >= 4 and whole["chunks"][-1]["end"] > 0.95 * len(long_text.rstrip())
        assert 0 < truncated["score"] <= 1 and 0 < whole["score"] <= 1
    for backend in ("onnx", "openvino", "ane"):
        assert np.abs(full_length[backend] - full_length["torch"]).max() <= 1e-4, backend


def test_mpnet_numbers_positions_after_padding_index_1_whatever_its_pad_token_id(family_model, texts):
    """Hugging Face's MPNet fixes its padding index at 1 (positions start at 2) whatever config.json's pad_token_id
    says: with <pad> at 0, max_position_embeddings - 2 tokens fit, not - 1, and a token of id 1 (here <mask>) is
    numbered as padding. Every runtime, the ANE layout included, follows it."""
    from fastsentiment import Classifier
    from fastsentiment.models import resolve_model

    order = ("<pad>", "<mask>", "<s>", "<unk>", "</s>")
    model = family_model("mpnet", max_tokens=40, model_max_length=False, id_order=order)
    config = json.loads((model / "config.json").read_text())
    assert config["pad_token_id"] == 0 and config["max_position_embeddings"] == 42
    assert resolve_model(model).max_length == 40
    sample = [*texts[:20], "the film was great and the cheese was bad " * 10, f"<mask> {texts[20]}"]
    reference = hugging_face_logits(model, sample, max_length=40)  # the long text at 40 tokens: positions 2 to 41
    for backend in FP32_BACKENDS:
        logits = Classifier.load(model, backend=backend, precision="fp32").logits(sample)
        assert np.abs(logits - reference).max() <= 1e-4, backend
    # a CoreML package converted before this (positions one off) is not loaded from the cache: converted anew
    from fastsentiment.backends.coreml_backend import cached_package

    assert cached_package(resolve_model(model)).parent.name.endswith("-a2")


def test_an_mpnet_bias_table_of_fewer_than_32_rows_is_refused_in_one_line(family_model, tmp_path):
    """Hugging Face looks distances up in 32 rows whatever the table holds: fewer was an index error on every path."""
    import shutil

    model = Path(shutil.copytree(family_model("mpnet"), tmp_path / "mpnet-16"))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "relative_attention_num_buckets": 16}))
    result = run_cli("classify", "good film", "-m", str(model), "-b", "onnx")
    assert result.returncode == 2
    assert result.stderr.decode().count(
        "\n"
    ) == 1 and "relative_attention_num_buckets is 16: MPNet buckets distances" in (result.stderr.decode())


def test_mpnet_bias_table_of_other_than_32_rows_is_used_as_hugging_face_uses_it(family_model, texts, tmp_path):
    """config.json's relative_attention_num_buckets sizes MPNet's table of relative-position biases, but Hugging
    Face always buckets distances into 32 of its rows; the ANE layout and the CoreML export load such a table."""
    pytest.importorskip("coremltools")
    from fastsentiment import Classifier

    model = family_model("mpnet", config_overrides={"relative_attention_num_buckets": 64})
    reference = hugging_face_logits(model, texts)
    for backend in FP32_BACKENDS:
        logits = Classifier.load(model, backend=backend, precision="fp32", batch_size=16).logits(texts)
        assert np.abs(logits - reference).max() <= 1e-4, backend
    package = tmp_path / "model.mlpackage"
    result = run_cli("export", "coreml", str(model), str(package), "--seq-lengths", "32")
    assert result.returncode == 0, result.stderr.decode()[-2000:]


def test_cased_vocabulary_keeps_case(tmp_path):
    from transformers import BertTokenizer

    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import TextEncoder
    from tiny_models import write_vocab

    vocab = write_vocab(tmp_path / "vocab.txt")
    vocab.write_text(vocab.read_text() + "Good\nFilm\n")
    model = build_model(tmp_path / "cased", "bert", vocab=vocab, tokenizer_json=False)
    (model / "tokenizer_config.json").write_text('{"do_lower_case": false, "model_max_length": 64}')
    encoder = TextEncoder.from_model_dir(resolve_model(model))
    reference = BertTokenizer(str(model / "vocab.txt"), do_lower_case=False)
    for text in ("Good Film", "good film", "GOOD film"):
        assert encoder.encode([text])[0] == reference(text)["input_ids"]
    assert encoder.encode(["Good Film"]) != encoder.encode(["good film"])


@pytest.mark.parametrize("kind", FAMILIES)
def test_train_fine_tunes_every_family(family_model, kind, tmp_path):
    from fastsentiment import Classifier
    from fastsentiment.train import TrainConfig, train

    data = tmp_path / "train.tsv"
    rows = [("a great film i love it", 1), ("a bad film i hate it", 0)] * 20
    data.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))
    result = train(
        TrainConfig(
            base_model=str(family_model(kind)),
            train_file=str(data),
            output_dir=str(tmp_path / "out"),
            labels=["NEGATIVE", "POSITIVE"],
            max_steps=2,
            max_length=64,
            batch_size=8,
            eval_fraction=0.1,
            progress=False,
        ),
        on_event=lambda message: None,
    )
    clf = Classifier.load(result.output_dir, backend="torch")
    assert clf.model.model_type == kind and clf.labels == ["NEGATIVE", "POSITIVE"]
    assert clf(["a great film"])[0]["label"] in {"NEGATIVE", "POSITIVE"}
