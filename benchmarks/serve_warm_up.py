"""Fresh servers that meet an open-loop rate the moment they are ready: the server's start-up warm-up (and any
other server options) compared.

    python benchmarks/serve_warm_up.py --rate 245 --rounds 11 --out docs/results/serve-warm-up.json
    python benchmarks/serve_warm_up.py --rate 620 --rounds 5 --sides "--warm-up-length 0 --pad-to-multiple-of 1" "" \
        "--pad-to-multiple-of 1"

Each side is a server command line's options beside the benchmark's own (default: no warm-up and no padding, and the
server's defaults). Every round starts one fresh server of each side, one after the other, so that a slow spell of a
shared machine falls on all of them, and rotates which goes first; each gets `--rate` single-sentence requests a
second for `--seconds` from the moment /health says ready (benchmarks/open_loop.c, latencies counted from when each
request was due). Half of the saturation rate that `benchmarks/serve_load.py` measures is the rate issue 16 names.
Prints each server's p50, p90 and p99 and, per side, their medians.
"""

from __future__ import annotations

import argparse
import json
import shlex
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
    open_loop,
    read_sentences,
    report,
    server_model_arguments,
    start_server,
)

PERCENTILES = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    server_model_arguments(parser)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sides",
        nargs="+",
        default=["--warm-up-length 0 --pad-to-multiple-of 1", ""],
        help="server options, each side one quoted string (a lone option with a trailing space: '--no-batching ')",
    )
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sentences = read_sentences(args.data)
    server_args = SimpleNamespace(**vars(args), server_nice=0, max_wait_ms=0.0, max_batch_tokens=None)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        generator = build_open_loop(Path(scratch))
        lines = Path(scratch) / "bodies-1.jsonl"
        lines.write_bytes(b"".join(body + b"\n" for body in bodies_of(sentences, 1)))
        for round_ in range(args.rounds):
            # Each side goes first in turn, so that none always meets the machine as another left it.
            shift = round_ % len(args.sides)
            for side in args.sides[shift:] + args.sides[:shift]:
                port = free_port()
                server = start_server(server_args, port, shlex.split(side))
                try:
                    measured = open_loop(generator, port, lines, args.rate, args.seconds)
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=60)
                runs.append({"side": side, **{key: measured[key] for key in PERCENTILES}})
                print(json.dumps(runs[-1]), flush=True)
    medians = {
        side: {key: statistics.median(run[key] for run in runs if run["side"] == side) for key in PERCENTILES}
        for side in args.sides
    }
    settings = {key: getattr(args, key) for key in ("model", "backend", "precision", "model_batch_size")}
    report(
        {
            "cpu_flags": cpu_flags(),
            **settings,
            "options_of_every_side": f"--warm-up-length {args.warm_up_length}"
            + ("" if args.pad_to_multiple_of is None else f" --pad-to-multiple-of {args.pad_to_multiple_of}"),
            "rate": args.rate,
            "seconds": args.seconds,
            "runs": runs,
            "medians": medians,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
