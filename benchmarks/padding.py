"""What padding each model call to a multiple of N tokens costs or gains on this CPU (`pad_to_multiple_of`).

    python benchmarks/padding.py --backend openvino --precision bf16 --out docs/results/padding.json

For each multiple (1: the longest text of each call, as `classify` pads), in one process and interleaved over
`--rounds` rounds (the order reversed every other round): the length-sorted throughput over the data at the model
batch size (the streams where the backend runs them, as `serve_load.py`'s offline step), and the mean latency of
one text per call over every ninth sentence. Padded positions are masked, so the logits are those of the unpadded
call; what moves is the work and how well the shapes suit the CPU's kernels (AMX tiles hold 16 rows).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from serve_load import SST2_TEST, cpu_flags, load_model, model_arguments, read_sentences, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arguments(parser)
    parser.add_argument("--multiples", default="1,8,16,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    multiples = [int(multiple) for multiple in args.multiples.split(",")]
    loaded = load_model(args)
    models = {multiple: loaded.padded_to_multiple_of(multiple) for multiple in multiples}
    encoded = loaded.encoder.encode(read_sentences(args.data))
    lone = encoded[::9]
    for model in models.values():  # every shape each will meet, once, before anything is timed
        model.logits_for_ids(encoded)
        for ids in lone:
            model.logits_for_ids([ids], batch_size=1)
    rates: dict[int, list[float]] = {multiple: [] for multiple in multiples}
    lone_ms: dict[int, list[float]] = {multiple: [] for multiple in multiples}
    for round_ in range(args.rounds):
        for multiple in multiples if round_ % 2 == 0 else multiples[::-1]:
            model = models[multiple]
            started = time.perf_counter()
            model.logits_for_ids(encoded)
            rates[multiple].append(len(encoded) / (time.perf_counter() - started))
            seconds = []
            for ids in lone:
                started = time.perf_counter()
                model.logits_for_ids([ids], batch_size=1)
                seconds.append(time.perf_counter() - started)
            lone_ms[multiple].append(1000 * statistics.mean(seconds))
    rows = [
        {
            "pad_to_multiple_of": multiple,
            "sorted_sentences_per_s": statistics.median(rates[multiple]),
            "one_text_mean_ms": statistics.median(lone_ms[multiple]),
            "rounds": {"sentences_per_s": rates[multiple], "one_text_mean_ms": lone_ms[multiple]},
        }
        for multiple in multiples
    ]
    for row in rows:
        print(
            f"pad to a multiple of {row['pad_to_multiple_of']:>3}: {row['sorted_sentences_per_s']:7,.0f} sentences/s, "
            f"one text {row['one_text_mean_ms']:.2f} ms (medians of {args.rounds} rounds)"
        )
    report(
        {
            "cpu_flags": cpu_flags(),
            "backend": loaded.backend.spec.name,
            "precision": loaded.backend.precision,
            "model_batch_size": args.model_batch_size,
            "rows": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
