"""Start-up and whole-process memory of the default path, as a user meets it.

    python benchmarks/cold_start.py [--model sst2-minilm-l6] [--out docs/results/cold-start-builtin.json]

- cold start: wall time of `fastsentiment classify "I like cheese"` from process start to exit
  (median of 9, after one run that fills the export cache);
- peak RSS of `fastsentiment classify --file test.tsv` (1,821 sentences), from the kernel's
  accounting of the child (ru_maxrss), the whole process included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_TEST = ROOT.parent / "shared" / "data" / "sst2" / "test.tsv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sst2-minilm-l6")
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    executable = str(Path(sys.executable).with_name("fastsentiment"))
    command = [executable, "classify", "I like cheese", "--model", args.model]
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(9):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    process = subprocess.Popen(
        [executable, "classify", "--file", str(args.data), "--column", "sentence", "--model", args.model],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage, not the largest child's
    file_seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"classify --file failed with status {status}")
    result = {
        "model": args.model,
        "cold_start_s_median": statistics.median(times),
        "cold_start_s_all": times,
        "file_sentences": sum(1 for _ in open(args.data, encoding="utf-8")) - 1,
        "file_seconds_end_to_end": file_seconds,
        "file_peak_rss_mb": usage.ru_maxrss / 1024,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
