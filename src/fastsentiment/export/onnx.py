"""Export a Hugging Face classifier to ONNX: graph-optimised fp32, block-wise int8, per-tensor int8, or fp16.

The export uses the TorchScript exporter (`dynamo=False`) on the eager attention implementation:
that graph is the one ONNX Runtime recognises and fuses into Attention, EmbedLayerNormalization,
SkipLayerNormalization and BiasGelu kernels (the dynamo exporter's graph gets no Attention fusion).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fastsentiment.errors import missing_extra
from fastsentiment.export import EXPORTING
from fastsentiment.models import ModelDir

OPSET = 17
# What making an ONNX graph from a model directory imports (the `export` extra): an `[onnx]` install runs cached
# graphs without them.
EXPORT_MODULES = ("torch", "transformers", "onnx")


def export_revision(model: ModelDir) -> int:
    """The revision of the exporter's graph for `model`'s architecture (`Architecture.export_revision`)."""
    return model.architecture.export_revision


# plain: the unfused fp32 graph, for runtimes other than ONNX Runtime (OpenVINO);
# plain-int8: the same graph with block-wise int8 weights (OpenVINO reads MatMulNBits as compressed weights).
# int8-dynamic: ONNX Runtime's classic dynamic quantisation, the fast and less exact int8 (see quantise_per_tensor).
# int8-dynamic-7bit: the same with 7-bit weights, for x86 CPUs without an int8 dot-product instruction (see
# int8_dynamic_variant).
VARIANTS = ("fp32", "int8", "int8-dynamic", "int8-dynamic-7bit", "fp16", "plain", "plain-int8")


def export_onnx(model: ModelDir, target: Path, precision: str = "fp32", weights_apart: bool | None = None) -> Path:
    """Write `model` as an ONNX file at `target` with dynamic batch and sequence axes.

    A graph too large for one protobuf message (2 GiB: XLM-RoBERTa-large in fp32) keeps its weights in one file
    beside it, `<target>.data` (see `weights_file`); `weights_apart` True writes every variant so (small models
    test that layout), False never."""
    if precision not in VARIANTS:
        raise ValueError(f"unknown ONNX precision {precision!r}")
    with EXPORTING, _library_logs_contained():
        return _export(model, target, precision, weights_apart)


# Protobuf's limit on one serialised message, and so on an ONNX file that holds its weights inside.
PROTOBUF_LIMIT = 2**31 - 1


def weights_file(onnx_path: Path) -> Path:
    """Where the weights of an ONNX file too large to hold them go: one file beside it, named after it (as ONNX
    Runtime's tools name it). Runtimes find it through the relative name the graph records."""
    return onnx_path.with_name(onnx_path.name + ".data")


def save_onnx(graph, target: Path, weights_apart: bool | None = None) -> None:
    """Write the ModelProto `graph` at `target`: whole where it fits in one protobuf message, else (or where
    `weights_apart` says so) with its weights in `weights_file(target)`."""
    import onnx

    if weights_apart is None:
        weights_apart = _beyond_protobuf(graph)
    weights_file(target).unlink(missing_ok=True)  # onnx appends to an existing weights file
    onnx.save(graph, str(target), save_as_external_data=weights_apart, location=weights_file(target).name)


def _beyond_protobuf(graph) -> bool:
    from google.protobuf.message import EncodeError

    try:
        return graph.ByteSize() > PROTOBUF_LIMIT
    except EncodeError:  # protobuf refuses even to measure a message beyond its limit
        return True


def _large(source: Path, weights_apart: bool | None) -> bool:
    """Whether a graph made from the ONNX file `source` should keep its weights apart: as `weights_apart` says, or,
    where it says nothing, if the source could not hold them inside (its tensors lie in files beside it)."""
    if weights_apart is not None:
        return weights_apart
    import onnx
    from onnx.external_data_helper import uses_external_data

    graph = onnx.load(str(source), load_external_data=False)
    return any(uses_external_data(tensor) for tensor in graph.graph.initializer)


@contextlib.contextmanager
def _library_logs_contained() -> Iterator[None]:
    """No INFO records from the exporting libraries, and the root logger as it was afterwards: importing ONNX
    Runtime's block-wise quantiser calls `logging.basicConfig(level=INFO)`, after which every library's INFO
    records (the transformer optimiser's fusion counts, a dozen lines) reached the user's terminal."""
    import logging

    root = logging.getLogger()
    handlers, level, disabled = root.handlers[:], root.level, logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(disabled)
        root.handlers[:] = handlers
        root.setLevel(level)


def _export(model: ModelDir, target: Path, precision: str, weights_apart: bool | None) -> Path:
    # Intermediate graphs in a folder of their own: torch writes a large model's tensors as files beside its graph.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as work:
        raw = Path(work) / "raw.onnx"
        _export_fp32(model, raw)
        if precision in ("plain", "plain-int8"):  # the graphs OpenVINO runs, in bf16 where the CPU has it
            finite = target if precision == "plain" else Path(work) / "finite.onnx"
            _finite_in_bf16(raw, finite, weights_apart)
            if precision == "plain-int8":
                quantise_blockwise(finite, target, weights_apart)
            return target
        optimised = target if precision == "fp32" else Path(work) / "optimised.onnx"
        _optimise(raw, optimised, model, weights_apart)
        if precision == "int8":
            quantise_blockwise(optimised, target, weights_apart)
        elif precision in ("int8-dynamic", "int8-dynamic-7bit"):
            quantise_per_tensor(
                optimised, target, reduce_range=precision == "int8-dynamic-7bit", weights_apart=weights_apart
            )
        elif precision == "fp16":
            _to_fp16(optimised, target, weights_apart)
    return target


def _export_fp32(model: ModelDir, target: Path) -> None:
    for module in EXPORT_MODULES:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(module, "export", "exporting a model to ONNX (once per model)")
    import warnings

    import torch
    import transformers

    from fastsentiment.models.network import load_network

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    network = load_network(model, dtype=torch.float32, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if model.uses_token_type_ids else [])
    example = torch.ones((2, min(8, model.max_length)), dtype=torch.int64)  # within the model's positions
    inputs = tuple(example if name != "token_type_ids" else torch.zeros_like(example) for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(), _exportable(model):
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            network,
            inputs,
            str(target),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


# The largest finite bf16 magnitude, (2 - 2^-7) * 2^127, which float32 holds exactly.
BF16_MAX = 3.3895313892515355e38


def _finite_in_bf16(source: Path, target: Path, weights_apart: bool | None = None) -> None:
    """Copy the graph with every float constant beyond bf16's range clipped to it.

    Hugging Face's eager attention masks padding by adding `(1 - mask) * finfo(float32).min`, a constant bf16
    cannot hold: rounded to -inf, `0 * -inf` would be NaN on every real token. The clipped value still sends
    every masked score's softmax weight to exactly 0.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(source))
    tensors = list(graph.graph.initializer) + [
        attribute.t for node in graph.graph.node if node.op_type == "Constant" for attribute in node.attribute
    ]
    for tensor in tensors:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        if values.size and np.abs(values).max() > BF16_MAX:
            tensor.CopyFrom(numpy_helper.from_array(np.clip(values, -BF16_MAX, BF16_MAX), tensor.name))
    save_onnx(graph, target, weights_apart)


@contextlib.contextmanager
def _exportable(model: ModelDir) -> Iterator[None]:
    """Trace the relative-position buckets of MPNet and DeBERTa-v2 as table lookups (see `bucket_by_table`)."""
    if model.model_type == "mpnet":
        from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

        owner, name = MPNetEncoder, "relative_position_bucket"
        computed = MPNetEncoder.relative_position_bucket

        def tabled(relative_position, num_buckets: int = 32, max_distance: int = 128):
            # Beyond max_distance the bucket no longer changes.
            return bucket_by_table(
                lambda distance: computed(distance, num_buckets, max_distance), relative_position, max_distance
            )

        replacement = staticmethod(tabled)
    elif model.model_type == "deberta-v2":
        from transformers.models.deberta_v2 import modeling_deberta_v2 as owner

        name = "make_log_bucket_position"
        computed = owner.make_log_bucket_position
        # Distances stay below max_length; the table covers every one up to max_position too, past which Hugging
        # Face's bucket lies beyond the table of distance embeddings, whose ends the attention clamps it to.
        farthest = model.max_length

        def replacement(relative_pos, bucket_size: int, max_position: int):
            return bucket_by_table(
                lambda distance: computed(distance, bucket_size, max_position),
                relative_pos,
                max(farthest, max_position),
            )
    else:
        yield
        return
    original = inspect.getattr_static(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def bucket_by_table(bucket: Callable[[Any], Any], relative_position, farthest: int):
    """`bucket(relative_position)` (Hugging Face's own function), looked up in a table of its value for every
    relative position from -farthest to farthest; those further are clipped (the caller's bucket must not change
    beyond).

    Hugging Face computes MPNet's and DeBERTa-v2's buckets with log(distance), float arithmetic that a traced graph
    leaves to the runtime, which may round otherwise: OpenVINO in bf16 on CPUs with AMX, and even in fp32 at
    DeBERTa-v2's farthest bucketed distance, where log(d) / log(d) is exactly 1 in torch and a hair above in
    OpenVINO, and ceil() moves it a bucket on. The bucket of a distance is a fixed function of it: the table is
    made here by `bucket` in torch fp32 and reaches the graph as a constant (through Python numbers, so that none
    of its arithmetic is traced): only integers reach the runtime.
    """
    import torch

    positions = torch.arange(-farthest, farthest + 1)
    table = torch.tensor(bucket(positions).to(torch.long).tolist())
    return table[relative_position.clamp(-farthest, farthest) + farthest]


def _optimise(source: Path, target: Path, model: ModelDir, weights_apart: bool | None = None) -> None:
    """Fuse the transformer subgraphs with ONNX Runtime's transformer optimiser (portable fusions only)."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    if model.architecture.ort_model_type is None:
        import onnx

        save_onnx(onnx.load(str(source)), target, weights_apart)
        return
    shape = model.encoder_shape
    with _collected(), _shape_inference_copies_released(MODEL_TYPES[model.architecture.ort_model_type][0]):
        optimised = optimize_model(
            str(source),
            model_type=model.architecture.ort_model_type,
            num_heads=shape["heads"],
            hidden_size=shape["hidden"],
            opt_level=1,
        )
        optimised.save_model_to_file(str(target), use_external_data_format=_large(source, weights_apart))
        del optimised


@contextlib.contextmanager
def _collected() -> Iterator[None]:
    """Collect garbage when the block ends: ONNX Runtime's optimiser and quantiser leave their copies of the model
    in reference cycles, which a large model's next export step would otherwise hold beside its own (5 GB of 7 on a
    2.24 GB model after the optimiser)."""
    import gc

    try:
        yield
    finally:
        gc.collect()


@contextlib.contextmanager
def _shape_inference_copies_released(optimiser_class: type) -> Iterator[None]:
    """While the optimiser runs, free each shape inference's copy of the model before the next one is made.

    Four of its fusions infer shapes again, each on a fresh copy of the whole model, weights included (ONNX
    Runtime 1.32); the copies they replace stay in reference cycles that nothing collects before the optimiser
    returns. On a model of XLM-RoBERTa-large's size (2.24 GB of weights) that held 15.6 GB at the peak, and 7.0 GB
    with each copy collected before the next.
    """
    import gc

    defined_here = "infer_runtime_shape" in vars(optimiser_class)
    original = optimiser_class.infer_runtime_shape

    def infer_runtime_shape(self, dynamic_axis_mapping=None, update=False):
        if update and getattr(self, "shape_infer_helper", None) is not None:
            self.shape_infer_helper = None
            gc.collect()
        return original(self, {} if dynamic_axis_mapping is None else dynamic_axis_mapping, update)

    optimiser_class.infer_runtime_shape = infer_runtime_shape
    try:
        yield
    finally:
        if defined_here:
            optimiser_class.infer_runtime_shape = original
        else:
            del optimiser_class.infer_runtime_shape


def quantise_blockwise(source: Path, target: Path, weights_apart: bool | None = None) -> None:
    """Block-wise int8 weights (blocks of 128 along the input axis) with int8 compute (accuracy level 4).

    Plain dynamic quantisation (`quantize_dynamic`) scales each activation tensor with one number;
    on MiniLM-sized models that flips ~2-4% of SST-2 dev labels against fp32 even per-channel. A
    scale per block of 128 keeps agreement above 99% (measured in tests/test_builtin_model.py).
    """
    import onnx

    with _collected(), _library_logs_contained():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(source)), bits=8, block_size=128, is_symmetric=True, accuracy_level=4
        )
        quantizer.process()
        save_onnx(quantizer.model.model, target, weights_apart)
        del quantizer


def int8_dynamic_variant() -> str:
    """Which per-tensor int8 graph this CPU should run. Without VNNI (AVX-512 VNNI, AVX-VNNI) or AMX, ONNX
    Runtime's u8s8 kernels multiply with VPMADDUBSW, whose 16-bit sums saturate on full-range int8 weights; its
    documentation's remedy is 7-bit weights (`reduce_range`)."""
    from fastsentiment.backends.base import cpu_computes_int8

    return "int8-dynamic" if cpu_computes_int8() else "int8-dynamic-7bit"


def quantise_per_tensor(
    source: Path,
    target: Path,
    exclude: Sequence[str] = (),
    reduce_range: bool = False,
    weights_apart: bool | None = None,
) -> None:
    """int8 weights per output channel, activations scaled per tensor at run time (`quantize_dynamic`).

    Nodes named in `exclude` are left in fp32 (benchmarks/int8_variants.py compares recipes with it).

    Every projection, the fused attention's QKV included (QAttention), and the word embeddings become
    int8, so the whole encoder runs on the u8s8 VNNI kernels: on an AVX-512 VNNI CPU without AMX that
    is ~2x the block-wise path's throughput and a third of its file size. The price is precision: one
    activation scale per tensor cannot follow BERT's outlier channels, so it agrees with fp32 on ~98.6%
    of SST-2 dev (the block-wise default: 99.7%), and a sentence's scores depend slightly on the other
    sentences in its batch. Measured in docs/int8.md; opt-in only.
    """
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs advice about calibration pre-processing on the root logger; it does not apply here.
    previously_disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with _collected():
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=reduce_range,
                nodes_to_exclude=list(exclude),
                use_external_data_format=_large(source, weights_apart),
                # The optimiser's fused contrib ops carry no type information the quantiser could read.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        logging.disable(previously_disabled)


def _to_fp16(source: Path, target: Path, weights_apart: bool | None = None) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Given the path, the converter infers shapes from the file: in memory, a graph over 2 GiB cannot be.
    graph = convert_float_to_float16(str(source), keep_io_types=True)
    save_onnx(graph, target, weights_apart)
