"""How long a short request waits while the server computes a large one, for several token budgets.

    python benchmarks/serve_overtake.py --budgets 16384,4096,2048,1024 --out docs/results/serve-overtake.json

For each `--max-batch-tokens` budget, one `fastsentiment serve` process on 127.0.0.1 (default batching otherwise):
1. idle: single sentences one after another on the idle server (the short request's latency with nothing else);
2. the large request (`--long-texts` texts of the model's whole length, as one request) and, while it runs, single
   sentences one after another, a pause of `--gap-ms` between them (a user who keeps asking). Reported: the large
   request's time, and the short requests' latencies while it ran (median, 90th percentile, the longest).
The budget trades the two: a batch holds its slot for about budget tokens' worth of compute, which is how long a short
request that arrives meanwhile may wait; a smaller budget means more batches (and more scheduling) for the large one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path

from serve_load import cpu_flags, free_port, read_sentences, report, start_server  # this folder: benchmarks/

from fastsentiment.serve import WARM_UP_LENGTH

ROOT = Path(__file__).resolve().parents[1]
SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"


def post(port: int, body: dict, timeout: float = 600) -> float:
    """Seconds until the answer (200 required)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
        if response.status != 200:
            raise SystemExit(f"answer {response.status}")
    return time.perf_counter() - started


def milliseconds(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


def one_budget(args, budget: int, sentences: list[str], long_texts: list[str]) -> dict:
    port = free_port()
    server = start_server(
        argparse.Namespace(
            backend=args.backend,
            model=None,
            precision=None,
            model_batch_size=8,
            max_wait_ms=0.0,
            max_batch_tokens=budget,
            server_nice=0,
            warm_up_length=WARM_UP_LENGTH,
            pad_to_multiple_of=None,
        ),
        port,
    )
    try:
        post(port, {"inputs": long_texts[:2]})  # every shape the run will see, once
        for sentence in sentences[:20]:
            post(port, {"inputs": sentence})
        idle = [post(port, {"inputs": sentence}) for sentence in sentences[20:60]]
        large: dict[str, float] = {}
        thread = threading.Thread(target=lambda: large.setdefault("seconds", post(port, {"inputs": long_texts})))
        thread.start()
        time.sleep(0.05)
        during, index = [], 60
        while thread.is_alive():
            during.append(post(port, {"inputs": sentences[index % len(sentences)]}))
            index += 1
            time.sleep(args.gap_ms / 1000)
        thread.join()
        return {
            "max_batch_tokens": budget,
            "idle": milliseconds(idle),
            "large_request_s": large["seconds"],
            "short_while_large_runs": milliseconds(during),
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--budgets", default="16384,4096,2048,1024")
    parser.add_argument("--long-texts", type=int, default=96, help="texts in the large request")
    parser.add_argument("--gap-ms", type=float, default=100)
    parser.add_argument("--data", type=Path, default=SST2_DEV)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sentences = read_sentences(args.data)
    # Texts longer than the model takes (truncated to its whole length): dev sentences run together.
    long_texts = [" ".join(sentences[i : i + 40]) for i in range(args.long_texts)]
    results = {
        "backend": args.backend,
        "cpu_flags": cpu_flags(),
        "long_texts": args.long_texts,
        "runs": [one_budget(args, int(budget), sentences, long_texts) for budget in args.budgets.split(",")],
    }
    report(results, args.out)


if __name__ == "__main__":
    main()
