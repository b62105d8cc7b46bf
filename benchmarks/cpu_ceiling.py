"""The arithmetic ceiling of this CPU: how many sentences/s a model could reach if it did nothing but matmuls.

    python benchmarks/cpu_ceiling.py [--model sst2-minilm-l6 --model DIR ...] [--data test.tsv] [--out FILE.json]

For each matmul kernel the backends use, time an (M × K) · (K × N) product at the encoder's own
shapes (M = 32 sentences of the data's mean length, the feed-forward K/N), on the threads the
backends use, and take the best of the shapes. Then

    ceiling (sentences/s) = kernel rate (op/s) / operations per sentence,

with operations per sentence counted from the model's config: per layer and token 4·h² (Q, K, V,
output) + 2·h·ffn (feed-forward) multiply-adds, plus 2·S·h for the attention scores and their
weighted sum, at the mean tokenized length S of the data. Everything that is not a matmul
(tokenization, LayerNorm, GELU, softmax, quantising activations, memory traffic) is counted as free, so
no backend on this machine can exceed these figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SST2_TEST = ROOT.parent / "shared" / "data" / "sst2" / "test.tsv"
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", help="built-in name or model directory (repeatable)")
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from fastsentiment.backends.base import inference_threads
    from fastsentiment.bench.report import machine
    from fastsentiment.errors import FastSentimentError
    from fastsentiment.jobs.rows import RowSource
    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import TextEncoder

    try:
        rows = list(RowSource(args.data, args.text_column).rows())
    except FastSentimentError as error:
        sys.exit(f"error: {error}")
    texts = [row.text for row in rows if not row.error]
    if not texts:
        sys.exit(f"error: {args.data}: no text to measure the model's work on ({len(rows)} row(s), none readable)")
    if len(texts) < len(rows):  # the mean length is of the texts a run would classify: said, not silent
        print(f"{len(rows) - len(texts)} of {len(rows)} rows left out (no readable text)", file=sys.stderr)
    threads = inference_threads()
    report = {
        "data": str(args.data),
        "sentences": len(texts),
        "threads": threads,
        "cpu": machine()["cpu"],
        "models": [],
    }
    for reference in args.model or ["sst2-minilm-l6"]:
        model = resolve_model(reference)
        encoder = TextEncoder.from_model_dir(model)
        mean_tokens = statistics.fmean(len(ids) for ids in encoder.encode(texts))
        shape = {key: model.encoder_shape[key] for key in ("layers", "hidden", "ffn")}
        macs = _macs_per_sentence(shape, mean_tokens)
        rows = round(BATCH * mean_tokens)
        kernels = {name: max(rate(rows, k, n, threads) for k, n in _shapes(shape)) for name, rate in _kernels().items()}
        ceilings = {name: ops / (2 * macs) for name, ops in kernels.items()}
        entry = {
            "model": Path(reference).name,
            "shape": shape,
            "mean_tokens": mean_tokens,
            "gmacs_per_sentence": macs / 1e9,
            "kernel_gops": {name: ops / 1e9 for name, ops in kernels.items()},
            "ceiling_sentences_per_s": ceilings,
        }
        report["models"].append(entry)
        print(f"{reference}: {shape}, {mean_tokens:.1f} tokens/sentence, {macs / 1e9:.3f} GMAC/sentence")
        for name in kernels:
            print(f"  {name:28s} {kernels[name] / 1e9:7.0f} Gop/s  ceiling {ceilings[name]:7.0f} sentences/s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def _macs_per_sentence(shape: dict, tokens: float) -> float:
    hidden, ffn = shape["hidden"], shape["ffn"]
    per_token = 4 * hidden * hidden + 2 * hidden * ffn + 2 * tokens * hidden
    return shape["layers"] * tokens * per_token


def _shapes(shape: dict) -> list[tuple[int, int]]:
    hidden, ffn = shape["hidden"], shape["ffn"]
    return [(hidden, ffn), (ffn, hidden), (hidden, 3 * hidden)]


def _kernels() -> dict:
    kernels = {
        "fp32 (MLAS sgemm)": lambda m, k, n, t: _ort_rate(_matmul_model(k, n), m, k, t),
        "int8 block-wise (MatMulNBits)": lambda m, k, n, t: _ort_rate(_blockwise(k, n), m, k, t),
        "int8 per-tensor (u8s8 VNNI)": lambda m, k, n, t: _ort_rate(_per_tensor(k, n), m, k, t),
    }
    try:
        import openvino  # noqa: F401

        kernels["bf16 (OpenVINO)"] = lambda m, k, n, t: _openvino_rate(_matmul_model(k, n), m, k, t)
    except ImportError:
        pass
    return kernels


def _matmul_model(k: int, n: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def _blockwise(k: int, n: int):
    from fastsentiment.export.onnx import quantise_blockwise

    return _quantised(k, n, quantise_blockwise)


def _per_tensor(k: int, n: int):
    from fastsentiment.export.onnx import quantise_per_tensor

    return _quantised(k, n, quantise_per_tensor)


def _quantised(k: int, n: int, quantise):
    """The single-MatMul model through one of the quantisers the onnx export uses."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(_matmul_model(k, n), source)
        quantise(source, target)
        return onnx.load(str(target))


def _ort_rate(model, m: int, k: int, threads: int) -> float:
    import onnxruntime

    from fastsentiment.backends.onnx_backend import session_options

    session = onnxruntime.InferenceSession(
        model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
    )
    n = session.get_outputs()[0].shape[1]
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    return 2 * m * k * n / _median_seconds(lambda: session.run(None, {"x": x}))


def _openvino_rate(model, m: int, k: int, threads: int) -> float:
    import openvino as ov

    core = ov.Core()
    network = core.read_model(model.SerializeToString(), ov.Tensor(np.empty(0, dtype=np.uint8)))
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(network, "CPU", config)
    request = compiled.create_infer_request()
    n = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    return 2 * m * k * n / _median_seconds(lambda: request.infer({0: x}))


def _median_seconds(call, warmup: int = 10, rounds: int = 9, calls: int = 20) -> float:
    for _ in range(warmup):
        call()
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        timings.append((time.perf_counter() - start) / calls)
    return statistics.median(timings)


if __name__ == "__main__":
    main()
