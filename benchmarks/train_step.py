"""Seconds per training step (forward, backward, AdamW) in fp32 and in bf16 autocast, on this CPU.

    python benchmarks/train_step.py runs/builtin/all-mpnet-base-v2 [--batch 32 --tokens 16 --steps 4]

Where the CPU has no bf16 arithmetic (no AVX-512 bf16, no AMX) bf16 is emulated and many times slower: this is the
measurement behind `fastsentiment train --precision auto`. The median of the steps after the first is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from transformers import AutoModelForSequenceClassification

from fastsentiment.backends.base import cpu_flags, usable_cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(usable_cpus())
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(5, model.config.vocab_size - 1, (args.batch, args.tokens))
    mask = torch.ones_like(ids)
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})
    print(f"CPU flags: {' '.join(flags) or 'none of avx2/avx512/amx'}; {usable_cpus()} threads")
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        seconds = []
        for _ in range(args.steps):
            started = time.perf_counter()
            with autocast:
                logits = model(input_ids=ids, attention_mask=mask).logits
            logits.float().logsumexp(-1).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds.append(time.perf_counter() - started)
        print(f"{precision}: {statistics.median(seconds[1:]):.2f} s per step of {args.batch} x {args.tokens} tokens")


if __name__ == "__main__":
    main()
