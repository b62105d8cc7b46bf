"""Label agreement of every backend x precision with a trained model's own Hugging Face fp32 labels on SST-2 dev.

Random-weight test models cannot show whether a reduced precision keeps a trained model's labels (their margins
sit anywhere); this runs a trained model, e.g. the MPNet teacher of the built-in model, through every path that
can run it and writes a markdown table and the raw figures:

    python benchmarks/trained_agreement.py runs/builtin/teacher-mpnet ../shared/data/sst2/dev.tsv \
        --out docs/results/mpnet-teacher-agreement
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fastsentiment import Classifier
from fastsentiment.backends.registry import availability
from fastsentiment.bench.report import machine
from fastsentiment.errors import FastSentimentError
from fastsentiment.models import resolve_model
from fastsentiment.train.data import read_labelled

PATHS = [
    ("onnx", "fp32"),
    ("openvino", "fp32"),
    ("ane", "fp32"),
    ("ane", "fp16"),
    ("torch", "bf16"),
    ("onnx", "int8"),
    ("onnx", "int8-dynamic"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("openvino", "int8-static"),
    ("torch", "int8"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("dev", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--paths", help="comma-separated backend:precision list (default: all)")
    args = parser.parse_args()
    paths = [tuple(p.split(":")) for p in args.paths.split(",")] if args.paths else PATHS

    reference_clf = Classifier.load(args.model, backend="torch", precision="fp32")
    examples, _ = read_labelled(args.dev, label_names=reference_clf.labels)
    texts, labels = examples.texts, np.asarray(examples.labels)
    reference = reference_clf.logits(texts)
    del reference_clf
    rows = [_row("torch", "fp32", reference, reference, labels, 0.0)]
    model = resolve_model(str(args.model))
    for backend, precision in paths:
        status = availability(backend, model=model)
        if not status.runnable:
            rows.append({"config": f"{backend}:{precision}", "failed": status.reason})
            continue
        try:
            started = time.perf_counter()
            logits = Classifier.load(args.model, backend=backend, precision=precision).logits(texts)
            rows.append(_row(backend, precision, logits, reference, labels, time.perf_counter() - started))
        except FastSentimentError as error:
            rows.append({"config": f"{backend}:{precision}", "failed": str(error)})
        print(json.dumps(rows[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "model": str(args.model),
        "dev": str(args.dev),
        "sentences": len(texts),
        "machine": machine(),
        "rows": rows,
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "| path | agreement with torch fp32 | dev accuracy | max \\|Δlogit\\| |",
        "|---|---|---|---|",
    ]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['config']} | does not run: {row['failed']} | | |")
        else:
            lines.append(
                f"| {row['config']} | {row['agreement']:.2%} | {row['accuracy']:.2%} | {row['max_abs_logit_delta']:.3f} |"
            )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _row(backend, precision, logits, reference, labels, seconds) -> dict:
    return {
        "config": f"{backend}:{precision}",
        "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
        "accuracy": float((logits.argmax(1) == labels).mean()),
        "max_abs_logit_delta": float(np.abs(logits - reference).max()),
        "seconds": round(seconds, 2),
    }


if __name__ == "__main__":
    main()
