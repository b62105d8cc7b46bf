"""A fresh server that meets an open-loop rate the moment it is ready, with and without its start-up warm-up.

    python benchmarks/serve_warm_up.py --rate 245 --pairs 11 --out docs/results/serve-warm-up.json

Pairs of servers (`--warm-up-length 0` and `--warm-up-length`, by default the server's own, each first in every
other pair), one after the other so that a slow spell of a shared machine falls on both sides; each gets `--rate`
single-sentence requests a second for `--seconds` from the moment /health says ready (benchmarks/open_loop.c, latencies counted from when each request
was due). Half of the saturation rate that `benchmarks/serve_load.py` measures is the rate issue 16 names. Prints
each server's p50, p90 and p99 and, per side, their medians.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
from pathlib import Path
from types import SimpleNamespace

from serve_load import (
    SST2_TEST,
    bodies_of,
    build_open_loop,
    cpu_flags,
    free_port,
    model_arguments,
    open_loop,
    read_sentences,
    report,
    start_server,
)

PERCENTILES = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sentences = read_sentences(args.data)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        generator = build_open_loop(Path(scratch))
        lines = Path(scratch) / "bodies-1.jsonl"
        lines.write_bytes(b"".join(body + b"\n" for body in bodies_of(sentences, 1)))
        for pair in range(args.pairs):
            # Each side goes first in every other pair, so that neither always meets the machine as the other left it.
            for length in (0, args.warm_up_length) if pair % 2 == 0 else (args.warm_up_length, 0):
                server_args = SimpleNamespace(
                    model=args.model, backend=args.backend, precision=args.precision, server_nice=0,
                    model_batch_size=args.model_batch_size, max_wait_ms=0.0, max_batch_tokens=None,
                    warm_up_length=length, pad_to_multiple_of=args.pad_to_multiple_of,
                )  # fmt: skip
                port = free_port()
                server = start_server(server_args, port)
                try:
                    measured = open_loop(generator, port, lines, args.rate, args.seconds)
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=60)
                runs.append({"warm_up_length": length, **{key: measured[key] for key in PERCENTILES}})
                print(json.dumps(runs[-1]), flush=True)
    medians = {
        str(length): {key: statistics.median(run[key] for run in runs if run["warm_up_length"] == length)
                      for key in PERCENTILES}
        for length in (0, args.warm_up_length)
    }  # fmt: skip
    report(
        {"cpu_flags": cpu_flags(), "rate": args.rate, "seconds": args.seconds, "runs": runs, "medians": medians},
        args.out,
    )


if __name__ == "__main__":
    main()
