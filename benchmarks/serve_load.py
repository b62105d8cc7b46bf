"""HTTP load on `fastsentiment serve`, with dynamic batching on and off, at several concurrencies.

    python benchmarks/serve_load.py --out docs/results/serve-load.json

The load generator is wrk (Debian package `wrk`), a C program, so it takes little of the CPU the
server needs; a Lua script posts single SST-2 test sentences in turn. Each level runs for a fixed
time. The server is restarted for each batching mode.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_TEST = ROOT.parent / "shared" / "data" / "sst2" / "test.tsv"

LUA = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, batching: bool, port: int, precision: str | None = None) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("fastsentiment")), "serve", "--model", model, "--port", str(port)]
    if precision:
        command += ["--precision", precision]
    command.append("--batching" if batching else "--no-batching")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not become ready")


def run_wrk(port: int, script: Path, connections: int, seconds: int) -> dict:
    output = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "connections": connections,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "latency_ms_p50": latency("50%"),
        "latency_ms_p99": latency("99%"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sst2-minilm-l6")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--precision", help="the default backend's precision, e.g. int8-dynamic")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    with open(args.data, encoding="utf-8", newline="") as stream:
        sentences = [row["sentence"] for row in csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)]
    with tempfile.TemporaryDirectory() as scratch:
        bodies = Path(scratch) / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"inputs": s}) + "\n" for s in sentences))
        script = Path(scratch) / "post.lua"
        script.write_text(LUA % bodies)
        results = {
            "model": args.model,
            "precision": args.precision or "default",
            "cpus": len(os.sched_getaffinity(0)),
            "generator": "wrk, 1 thread",
            "runs": [],
        }
        for batching in (True, False):
            port = free_port()
            server = start_server(args.model, batching, port, args.precision)
            try:
                for connections in map(int, args.connections.split(",")):
                    row = {"batching": batching, **run_wrk(port, script, connections, args.seconds)}
                    results["runs"].append(row)
                    print(json.dumps(row), file=sys.stderr)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
