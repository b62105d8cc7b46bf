"""Long documents, measured in one run: accuracy of truncate vs chunk, and tokens/s vs short sentences.

    python scripts/build_long_docs.py ../shared/data/sst2/dev.tsv build/long-docs.tsv
    flock -x /tmp/fs-cpu.lock python benchmarks/long_documents.py build/long-docs.tsv

Short-sentence tokens/s comes from SST-2 dev on the same classifier in the same process, so the ratio
compares like with like. Tokens are the texts' own (special tokens included), not window tokens: the
overlap between windows is a cost chunking pays, so it counts against it. Alternative aggregates are
computed from the windows' scores of the same chunked call ("logit-mean" from log-probabilities, which
ranks labels as a weighted mean of logits does).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np


def read(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])


def timed(call, repeat: int):
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def aggregated(prediction, labels: list[str], aggregate: str, stride: int) -> int:
    # A chunk carries its best label's score; with two labels (the built-in model) that is every score.
    scores = np.array(
        [[c["score"] if c["label"] == label else 1.0 - c["score"] for label in labels] for c in prediction.chunks]
    )
    # As the classifier weighs windows (windows.Window.weight): the `stride` tokens neighbours share count half in each.
    weights = np.array([chunk["tokens"] for chunk in prediction.chunks], dtype=float)
    weights[1:] -= stride / 2
    weights[:-1] -= stride / 2
    weights = weights[:, None]
    if aggregate == "max":
        return int(scores[scores.max(axis=1).argmax()].argmax())
    if aggregate == "logit-mean":
        return int((np.log(np.maximum(scores, 1e-30)) * weights).sum(axis=0).argmax())
    return int((scores * weights).sum(axis=0).argmax())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", type=Path, help="the set scripts/build_long_docs.py wrote")
    parser.add_argument("--short", type=Path, default=Path("../shared/data/sst2/dev.tsv"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--max-length", type=int, default=None, help="window length [default: the model's limit]")
    parser.add_argument("--strides", default="0,64,128")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the short-sentence timing (median)")
    args = parser.parse_args()

    from fastsentiment import Classifier

    clf = Classifier.load(backend=args.backend, precision=args.precision, max_length=args.max_length)
    texts, truth = read(args.documents)
    short, _ = read(args.short)
    doc_tokens = sum(len(e.ids) for e in clf.encoder.encodings(texts))
    short_tokens = sum(len(e.ids) for e in clf.encoder.encodings(short))
    clf.logits(short[:64])  # warm-up
    print(f"{clf!r}: {len(texts)} documents, {doc_tokens:,} tokens; {len(short)} short sentences, {short_tokens:,}")
    seconds, _ = timed(lambda: clf.logits(short), args.repeat)
    short_rate = short_tokens / seconds
    print("| mode | stride | aggregate | accuracy | tokens/s | vs short sentences |")
    print("|---|---:|---|---:|---:|---:|")
    print(f"| short sentences (SST-2 dev) | | | | {short_rate:,.0f} | 1.00 |")
    seconds, predictions = timed(lambda: clf.predict(texts), 1)
    accuracy = np.mean([clf.labels.index(p.label) == y for p, y in zip(predictions, truth, strict=True)])
    # Truncation reads only the first max_length tokens: its rate counts those, not the documents'.
    read_rate = sum(min(p.tokens, clf.encoder.max_length) for p in predictions) / seconds
    print(f"| truncate (tokens read) | | | {accuracy:.1%} | {read_rate:,.0f} | {read_rate / short_rate:.2f} |")
    for stride in (int(s) for s in args.strides.split(",")):
        seconds, predictions = timed(
            lambda stride=stride: clf.predict(texts, long_text="chunk", stride=stride, return_chunks=True), 1
        )
        rate = doc_tokens / seconds
        for aggregate in ("mean", "max", "logit-mean"):
            picked = [aggregated(p, list(clf.labels), aggregate, stride) for p in predictions]
            accuracy = np.mean(np.array(picked) == truth)
            print(f"| chunk | {stride} | {aggregate} | {accuracy:.1%} | {rate:,.0f} | {rate / short_rate:.2f} |")


if __name__ == "__main__":
    main()
