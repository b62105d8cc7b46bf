"""Where the slowest requests' time goes: the server's own models and batcher in this process (no HTTP), fed single
sentences at a fixed rate, with every model call timed.

    python benchmarks/serve_trace.py --rate 245 --seconds 10

Prints the requests' p50/p90/p99 (each counted from when it was due, as benchmarks/open_loop.c counts), the model
calls by path (the streams, or the one-call model of a quiet machine) and by texts per call, their durations, and
for the slowest 1% of requests: how long each waited before the call that answered it began, how long that call
took and how many texts it held.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import threading
import time
from collections import Counter
from pathlib import Path

from serve_load import SST2_TEST, load_model, read_sentences, server_model_arguments, submit_at_rate

from fastsentiment.serve.app import load_and_warm, model_batcher
from fastsentiment.serve.batcher import BatchSettings


def timed(run, path: str, calls: list):
    """`run` (a classifier's logits_for_ids), noting each call's (start, end, texts, path)."""

    def call(sequences):
        started = time.perf_counter()
        logits = run(sequences)
        calls.append((started, time.perf_counter(), len(sequences), path, threading.get_ident()))
        return logits

    return call


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[round(fraction * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    server_model_arguments(parser)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    args = parser.parse_args()
    sentences = read_sentences(args.data)
    classifier, alone = load_and_warm(lambda: load_model(args), args.warm_up_length, args.pad_to_multiple_of)
    calls: list[tuple] = []
    classifier.logits_for_ids = timed(classifier.logits_for_ids, "streams", calls)
    if alone is not classifier:
        alone.logits_for_ids = timed(alone.logits_for_ids, "one call", calls)

    async def feed() -> list[tuple[float, float]]:
        batcher = model_batcher(classifier, alone, BatchSettings())
        batcher.start()
        answered = await submit_at_rate(batcher, sentences, args.rate, args.seconds)
        await batcher.drain()
        return answered

    answered = asyncio.run(feed())
    latencies = sorted(1000 * (end - due) for due, end in answered)
    print(
        f"{len(latencies)} requests: p50 {percentile(latencies, 0.5):.2f} ms, p90 {percentile(latencies, 0.9):.2f}, "
        f"p99 {percentile(latencies, 0.99):.2f}"
    )
    print("model calls by path:", dict(Counter(call[3] for call in calls)))
    print("texts per call:", dict(sorted(Counter(call[2] for call in calls).items())))
    for path in sorted({call[3] for call in calls}):
        durations = sorted(1000 * (end - start) for start, end, _, named, _ in calls if named == path)
        print(
            f"{path} calls: p50 {percentile(durations, 0.5):.2f} ms, p90 {percentile(durations, 0.9):.2f}, "
            f"p99 {percentile(durations, 0.99):.2f}, max {durations[-1]:.2f}"
        )
    ends = sorted(calls, key=lambda call: call[1])
    finishes = [call[1] for call in ends]

    def answering_call(due: float, end: float) -> tuple:
        """The call that likely answered a request due at `due` and answered at `end`: the last to finish before
        `end` of those that began after `due` (another stream's call may have finished in between)."""
        index = bisect.bisect_right(finishes, end) - 1
        return next((ends[i] for i in range(index, -1, -1) if ends[i][0] >= due), ends[index])

    parts = [(answering_call(due, end), due, end) for due, end in answered]
    for name, span in (
        ("due to its call's start", lambda call, due, end: call[0] - due),
        ("its call", lambda call, due, end: call[1] - call[0]),
        ("its call's end to answered", lambda call, due, end: end - call[1]),
    ):
        spans = sorted(1000 * span(*part) for part in parts)
        print(f"{name}: p50 {percentile(spans, 0.5):.2f} ms, p90 {percentile(spans, 0.9):.2f}")
    print("slowest 1% of requests:")
    slowest = sorted(answered, key=lambda pair: pair[1] - pair[0])[-max(1, len(answered) // 100) :]
    for due, end in slowest:
        start, finish, texts, path, _ = answering_call(due, end)
        print(
            f"  {1000 * (end - due):6.1f} ms: waited {1000 * (start - due):5.1f} before its call, which took "
            f"{1000 * (finish - start):5.1f} for {texts} texts ({path})"
        )


if __name__ == "__main__":
    main()
