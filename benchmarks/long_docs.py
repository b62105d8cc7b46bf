"""Long documents: accuracy of truncate vs chunk (strides, aggregates) and tokens/s of chunked vs short texts.

    python benchmarks/long_docs.py --docs long-docs.tsv --short ../shared/data/sst2/test.tsv --backend onnx \
        --out docs/results/long-docs.json

`--docs` is the set `scripts/build_long_docs.py` writes from SST-2 dev. Throughput is measured in one process on
one backend: the short sentences and the long documents, each timed end to end (tokenising included), best of
`--repeat` passes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", required=True)
    parser.add_argument("--short", required=True, help="short sentences (SST-2 test.tsv)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--max-length", type=int, default=None, help="window length (default: the model's limit)")
    parser.add_argument("--strides", default="0,32,64,128")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--speed-stride", type=int, default=None, help="stride of the chunked speed run [default]")
    parser.add_argument("--no-accuracy", action="store_true", help="measure speed only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from fastsentiment import Classifier
    from fastsentiment.bench.data import load_bench_data
    from fastsentiment.bench.report import machine
    from fastsentiment.windows import AGGREGATES

    clf = Classifier.load(args.model, backend=args.backend, precision=args.precision, max_length=args.max_length)
    docs = load_bench_data(args.docs, label_names=clf.labels).labelled
    short = load_bench_data(args.short).speed.texts
    truth = np.asarray(docs.labels)
    doc_tokens = sum(len(e.ids) for e in clf.encoder.encodings(docs.texts))
    short_tokens = sum(len(e.ids) for e in clf.encoder.encodings(short))

    def accuracy(**options) -> float:
        return float((clf.logits(docs.texts, **options).argmax(1) == truth).mean())

    accuracy_rows = [] if args.no_accuracy else [{"long_text": "truncate", "accuracy": accuracy(long_text="truncate")}]
    for stride in () if args.no_accuracy else (int(s) for s in args.strides.split(",")):
        for aggregate in AGGREGATES:
            accuracy_rows.append(
                {
                    "long_text": "chunk",
                    "stride": stride,
                    "aggregate": aggregate,
                    "accuracy": accuracy(long_text="chunk", stride=stride, aggregate=aggregate),
                }
            )

    def tokens_per_s(texts, tokens, **options) -> float:
        clf.logits(texts[:32], **options)  # warm-up
        best = 0.0
        for _ in range(args.repeat):
            started = time.perf_counter()
            clf.logits(texts, **options)
            best = max(best, tokens / (time.perf_counter() - started))
        return best

    speed = {
        "short_tokens_per_s": tokens_per_s(short, short_tokens),
        "chunk_tokens_per_s": tokens_per_s(docs.texts, doc_tokens, long_text="chunk", stride=args.speed_stride),
        "truncate_tokens_per_s_of_what_it_reads": tokens_per_s(
            docs.texts, len(docs.texts) * clf.encoder.max_length, long_text="truncate"
        ),
    }
    speed["chunk_vs_short"] = speed["chunk_tokens_per_s"] / speed["short_tokens_per_s"]
    report = {
        "model": str(clf.model.path.name),
        "backend": f"{clf.backend.spec.name}:{clf.backend.precision}",
        "window": clf.encoder.max_length,
        "speed_stride": args.speed_stride,
        "documents": len(docs.texts),
        "document_tokens_mean": doc_tokens / len(docs.texts),
        "short_sentences": len(short),
        "short_tokens_mean": short_tokens / len(short),
        "accuracy": accuracy_rows,
        "speed": speed,
        "machine": machine(),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
