"""Which int8 recipe for ONNX Runtime: agreement with fp32 against speed, on SST-2.

    python benchmarks/int8_variants.py [--model sst2-minilm-l6] [--data ../shared/data/sst2] [--out FILE.json]

Every variant starts from the same graph-optimised fp32 export that `--precision fp32` runs. Agreement
and max/mean |Δlogit| are measured against that fp32 graph on dev (872 labelled) and test (1,821
unlabelled, so a second sample no recipe was chosen on); speed is sentences/s over test at batch 32,
length-sorted, median of 3 passes. The variants:

- block-wise: 8-bit weights in blocks of 128 with int8 compute (`MatMulNBits`), the `int8` default;
- per-tensor: `quantize_dynamic`, per-channel weights, one activation scale per tensor (`int8-dynamic`), with 8-bit
  weights and with 7-bit ones (what `int8-dynamic` runs on x86 CPUs without VNNI or AMX);
- hybrids: per-tensor everywhere except one group of projections, which stays block-wise.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"

# projection groups of a BERT layer, by the names the exporter gives their MatMuls
GROUPS = {
    "attention output": re.compile(r"layer\.\d+/attention/output/dense/"),
    "feed-forward in": re.compile(r"layer\.\d+/intermediate/dense/"),
    "feed-forward out": re.compile(r"layer\.\d+/output/dense/"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sst2-minilm-l6")
    parser.add_argument("--data", type=Path, default=SST2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import onnx

    from fastsentiment.backends.onnx_backend import OnnxBackend, onnx_file
    from fastsentiment.bench.data import load_bench_data
    from fastsentiment.classifier import Classifier
    from fastsentiment.export.onnx import export_onnx
    from fastsentiment.models import resolve_model
    from fastsentiment.tokenization import TextEncoder

    model = resolve_model(args.model)
    data = load_bench_data(str(args.data), label_names=model.labels)
    fp32 = onnx_file(model, "fp32")
    matmuls = [node.name for node in onnx.load(str(fp32)).graph.node if node.op_type == "MatMul"]

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        variants = {
            "fp32": fp32,
            "block-wise (int8)": onnx_file(model, "int8"),
            # export_onnx, unlike onnx_file, takes the variant as named rather than as this CPU should run it
            "per-tensor, 8-bit weights": export_onnx(model, scratch / "int8-dynamic-8bit.onnx", "int8-dynamic"),
            "per-tensor, 7-bit weights (int8-dynamic without VNNI)": onnx_file(model, "int8-dynamic-7bit"),
            "per-tensor, matmuls block-wise (QAttention only)": _hybrid(fp32, scratch / "qattention.onnx", matmuls),
        }
        for label, pattern in GROUPS.items():
            group = [name for name in matmuls if pattern.search(name)]
            variants[f"per-tensor, {label} block-wise"] = _hybrid(fp32, scratch / f"{len(variants)}.onnx", group)
        reference = None
        rows = []
        for label, path in variants.items():
            backend = OnnxBackend.open(path, precision=label)
            classifier = Classifier(model, backend, TextEncoder.from_model_dir(model), batch_size=32)
            dev = classifier.logits(data.labelled.texts)
            test = classifier.logits(data.speed.texts)
            if reference is None:
                reference = (dev, test)
            speed = _sentences_per_second(classifier, data.speed.texts)
            row = {
                "variant": label,
                "dev_agreement": float((dev.argmax(1) == reference[0].argmax(1)).mean()),
                "dev_accuracy": float((dev.argmax(1) == np.array(data.labelled.labels)).mean()),
                "test_agreement": float((test.argmax(1) == reference[1].argmax(1)).mean()),
                "test_mean_abs_delta": float(np.abs(test - reference[1]).mean()),
                "test_max_abs_delta": float(np.abs(test - reference[1]).max()),
                "sentences_per_s": speed,
                "file_mb": Path(path).stat().st_size / 1e6,
            }
            rows.append(row)
            print(
                f"{label:50s} dev agree {100 * row['dev_agreement']:6.2f}%  acc {100 * row['dev_accuracy']:5.2f}%  "
                f"test agree {100 * row['test_agreement']:6.2f}%  mean|Δ| {row['test_mean_abs_delta']:.3f}  "
                f"{speed:5.0f}/s  {row['file_mb']:4.0f} MB",
                flush=True,
            )
    if args.out:
        args.out.write_text(
            json.dumps({"model": args.model, "data": str(args.data), "variants": rows}, indent=2) + "\n"
        )


def _hybrid(source: Path, target: Path, blockwise: list[str]) -> Path:
    """Per-tensor int8 everywhere except the MatMuls named in `blockwise`, which get block-wise weights."""
    from fastsentiment.export.onnx import quantise_blockwise, quantise_per_tensor

    quantise_per_tensor(source, target, exclude=blockwise)
    quantise_blockwise(target, target)
    return target


def _sentences_per_second(classifier, texts: list[str]) -> float:
    classifier.logits(texts[:256])
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        classifier.logits(texts)
        timings.append(time.perf_counter() - start)
    return len(texts) / statistics.median(timings)


if __name__ == "__main__":
    main()
