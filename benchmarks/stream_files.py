"""File jobs at scale: rows/s of `classify --file` locally and on Ray, and whether local memory stays flat.

    python benchmarks/stream_files.py [--rows 10000] [--model sst2-minilm-l6] [--out docs/results/stream-files.json]

Inputs are built from SST-2 train sentences with an id column (CSV): one of `--rows` rows and
one ten times larger. Measured, each as one whole `fastsentiment classify` process from start to exit:
- local engine on both files (rows/s, and peak RSS read from the process's own VmHWM at exit);
- Ray engine on the smaller file with 1 and 2 workers (a local Ray instance started by the job,
  so the wall time includes Ray's start-up and the actors' model load).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_TRAIN = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
# Runs the real CLI and, at exit, reports the process's peak RSS as the kernel counts it.
PEAK_RSS_WRAPPER = (
    "import atexit, sys\n"
    "def report():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'): sys.stderr.write('PEAK_RSS_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(report)\n"
    "from fastsentiment.cli import main\n"
    "sys.argv = ['fastsentiment'] + sys.argv[1:]\n"
    "main()\n"
)


def make_input(path: Path, rows: int, sentences: list[str]) -> Path:
    """`rows` rows spread evenly over all the sentences (cycling past the end), so that files of every
    size see the same mix of lengths and a memory difference comes from the size alone."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, sentences[(i * 7919) % len(sentences)]])  # a prime stride visits every sentence
    return path


def run(args: list[str]) -> dict:
    """Run one command; sample its RSS twice a second to show how memory evolves over the job."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, *args], stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT
        )
        samples = []
        while process.poll() is None:
            samples.append((time.perf_counter() - started, resident_mb(process.pid)))
            time.sleep(0.5)
        wall = time.perf_counter() - started
        stderr.seek(0)
        errors = stderr.read()
    if process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{errors[-2000:]}")
    peak = [int(line.split()[1]) for line in errors.splitlines() if line.startswith("PEAK_RSS_KB")]
    # The highest RSS seen by 25/50/75/100% of the wall time: flat memory stops growing early on.
    quarters = [max((mb for t, mb in samples if t <= wall * q and mb), default=None) for q in (0.25, 0.5, 0.75, 1.0)]
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak[-1] / 1024, 1) if peak else None,
        "peak_rss_mb_by_quarter": quarters,
    }


def resident_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--model", default="sst2-minilm-l6")
    parser.add_argument("--data", type=Path, default=SST2_TRAIN)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    with open(options.data, encoding="utf-8", newline="") as stream:
        sentences = [row["sentence"] for row in csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)]

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        small = make_input(folder / "small.csv", options.rows, sentences)
        large = make_input(folder / "large.csv", options.rows * 10, sentences)
        run(["classify", "I like cheese", "--model", options.model])  # fills the export cache
        jobs = [
            ("local", small, options.rows, []),
            ("local", large, options.rows * 10, []),
            ("ray, 1 worker x 2 threads", small, options.rows, ["--engine", "ray", "--num-workers", "1", "--threads", "2"]),
            ("ray, 2 workers x 1 thread", small, options.rows, ["--engine", "ray", "--num-workers", "2"]),
        ]  # fmt: skip
        for number, (engine, source, rows, extra) in enumerate(jobs):
            out = folder / (f"out{number}.parquet" if engine == "local" else f"out{number}")
            measured = run(["classify", "-f", str(source), "-o", str(out), "--model", options.model, *extra])
            row = {"engine": engine, "rows": rows, **measured, "rows_per_s": round(rows / measured["wall_s"], 1)}
            if engine != "local":  # the driver's own memory; the work happens in Ray's processes
                row["peak_rss_mb"] = row["peak_rss_mb_by_quarter"] = None
            results.append(row)
            print(json.dumps(row), flush=True)
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps({"model": options.model, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
