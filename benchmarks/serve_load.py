"""HTTP load on `fastsentiment serve`, measured as a user would meet it, against the offline rate of the same backend.

    python benchmarks/serve_load.py --backend openvino --out docs/results/serve-load.json

One run, on 127.0.0.1 only, with bounded time and request counts:
1. offline: the same backend and model batch size in this process, length-sorted over the data
   (sentences/s), and the median batch-1 model latency (the median of three passes);
2. closed loop: wrk (Debian package `wrk`, a C program that takes little of the CPU the server
   needs) with N connections, each posting the next request as soon as the last is answered,
   for single-sentence bodies and 8-sentence bodies; 64 connections give the saturation rate;
3. open loop: requests sent at a fixed rate (25/50/75% of that saturation rate), whether or not
   earlier ones were answered, as independent users do; each latency counts from the moment the
   request was due, so a stalled server cannot hide its queue (no coordinated omission); the generator
   is benchmarks/open_loop.c, compiled here with the system's C compiler (about 40 µs of CPU per request);
   for every closed- and open-loop row, the server's CPU: cores busy, of them the event loop's (the main thread:
   HTTP, JSON, batching) and the other threads' (the model runtime, the batch threads), and CPU ms per request;
4. without HTTP: the server's own models and batcher (`load_and_warm`, `model_batcher`) in this process, fed
   single sentences by coroutines instead of sockets, at 64 closed-loop clients and at the open-loop rates of
   step 3: what the server would do if HTTP, JSON and a load generator cost nothing. The gap between 3 and 4 is
   the request path; what 4 misses of a target, no request path can give.
5. the models alone at the same rates: texts already tokenised, fed from plain threads straight to each of the
   server's two model configurations (every thread on one call; the streams' parallel calls), whatever is due by
   then in one call: what the models give with no request path at all; the gap between 4 and 5 is the batcher's
   scheduling (and the event loop it needs).
The server is one `fastsentiment serve` process started by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from fastsentiment.serve import WARM_UP_LENGTH

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


def bodies_of(sentences: list[str], per_request: int) -> list[bytes]:
    if per_request == 1:
        return [json.dumps({"inputs": s}).encode() for s in sentences]
    groups = [sentences[i : i + per_request] for i in range(0, len(sentences) - per_request + 1, per_request)]
    return [json.dumps({"inputs": group}).encode() for group in groups]


# ---- offline reference --------------------------------------------------------------------
def offline(args, sentences: list[str]) -> dict:
    from fastsentiment import Classifier

    # The server's workload: with --backend auto, the path the server takes.
    classifier = Classifier.load(args.model, backend=args.backend, precision=args.precision, workload="serve")
    classifier.logits(sentences[:256], batch_size=args.model_batch_size)  # warm every common shape
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        classifier.logits(sentences, batch_size=args.model_batch_size)
        rates.append(len(sentences) / (time.perf_counter() - started))
    # One text at a time as it runs best: with every thread on the one call (the batched classifier may split
    # its threads into parallel streams).
    lone = Classifier.load(args.model, backend=args.backend, precision=args.precision, workload="latency")
    encoded = lone.encoder.encode(sentences[:300])
    lone.logits_for_ids(encoded, batch_size=1)  # every shape once: OpenVINO prepares kernels per new shape
    # Three passes: one pass's median moves by up to a third between passes a second apart on a shared machine,
    # and this figure sets a target.
    pass_medians = []
    for _ in range(3):
        latencies = []
        for ids in encoded:
            started = time.perf_counter()
            lone.logits_for_ids([ids], batch_size=1)
            latencies.append(time.perf_counter() - started)
        pass_medians.append(1000 * statistics.median(latencies))
    return {
        "backend": classifier.backend.spec.name,
        "precision": classifier.backend.precision,
        "model_batch_size": args.model_batch_size,
        "sorted_sentences_per_s": statistics.median(rates),
        "batch1_latency_ms_p50": statistics.median(pass_medians),
        "batch1_latency_ms_p50_passes": pass_medians,
    }


# ---- the server ---------------------------------------------------------------------------
def start_server(args, port: int, options: Sequence[str] = ()) -> subprocess.Popen:
    """`fastsentiment serve` as `args` (`server_model_arguments` and the server's options) and `options` (more of its
    command line, taking precedence) describe it, once /health says ready."""
    command = [sys.executable, "-m", "fastsentiment", "serve", "--port", str(port), "--backend", args.backend]
    command += ["--model-batch-size", str(args.model_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    if args.max_batch_tokens:
        command += ["--max-batch-tokens", str(args.max_batch_tokens)]
    command += ["--warm-up-length", str(args.warm_up_length)]
    if args.pad_to_multiple_of is not None:
        command += ["--pad-to-multiple-of", str(args.pad_to_multiple_of)]
    command += list(options)
    if args.model:
        command += ["--model", args.model]
    if args.precision:
        command += ["--precision", args.precision]
    if args.server_nice:
        command = ["nice", "-n", str(args.server_nice), *command]
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


# ---- closed loop: wrk ---------------------------------------------------------------------
def settle(port: int, body: bytes) -> None:
    """Wait until the server has answered everything before: one request, answered after all queued work."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def run_wrk(port: int, script: Path, connections: int, seconds: float) -> dict:
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{round(seconds)}s", "--latency", "--timeout", "10s"]
    command += ["-s", str(script), f"http://127.0.0.1:{port}"]
    output = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "connections": connections,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "latency_ms_p50": latency("50%"),
        "latency_ms_p99": latency("99%"),
        "errors": (int(errors.group(1)) if errors else 0) + (1 if socket_errors else 0),
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def session(args, sentences: list[str], per_request_levels: str, connections: str, fractions: str) -> dict:
    """The offline reference, then one server under closed- and open-loop load, then the same without HTTP."""
    result = {"offline": offline(args, sentences), "closed_loop": [], "open_loop": []}
    print(json.dumps(result["offline"]), file=sys.stderr)
    port = free_port()
    server = start_server(args, port)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            generator = build_open_loop(Path(scratch))
            for per_request in map(int, per_request_levels.split(",")):
                bodies = bodies_of(sentences, per_request)
                lines = Path(scratch) / f"bodies-{per_request}.jsonl"
                lines.write_bytes(b"".join(body + b"\n" for body in bodies))
                script = Path(scratch) / f"post-{per_request}.lua"
                script.write_text(LUA % lines)
                run_wrk(port, script, 64, 2)  # warm-up: every shape the server will see
                for level in map(int, connections.split(",")):
                    settle(port, bodies[0])
                    with ServerCpu(server.pid) as cpu:
                        row = {"sentences_per_request": per_request, **run_wrk(port, script, level, args.seconds)}
                    row["server_cpu"] = cpu.report(row["requests_per_s"] * args.seconds)
                    result["closed_loop"].append(row)
                    print(json.dumps(row), file=sys.stderr)
                saturation = row["requests_per_s"]
                for fraction in map(float, fractions.split(",")):
                    settle(port, bodies[0])
                    with ServerCpu(server.pid) as cpu:
                        measured = open_loop(generator, port, lines, fraction * saturation, args.seconds)
                    row = {"sentences_per_request": per_request, "fraction_of_saturation": fraction, **measured}
                    row["server_cpu"] = cpu.report(measured["requests"])
                    result["open_loop"].append(row)
                    print(json.dumps(row), file=sys.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    if args.no_http:  # after the server has gone, so that the two never share the CPU
        rates = [row["target_requests_per_s"] for row in result["open_loop"] if row["sentences_per_request"] == 1]
        result["without_http"] = without_http(args, sentences, rates)
        print(json.dumps(result["without_http"]), file=sys.stderr)
        result["model_alone"] = model_alone(args, sentences, rates)
        print(json.dumps(result["model_alone"]), file=sys.stderr)
    return result


# ---- without HTTP: the server's batcher fed by coroutines -----------------------------------
def without_http(args, sentences: list[str], rates: list[float], clients: int = 64) -> dict:
    from fastsentiment.serve.app import load_and_warm, model_batcher
    from fastsentiment.serve.batcher import BatchSettings

    classifier, alone = load_and_warm(lambda: load_model(args), args.warm_up_length, args.pad_to_multiple_of)
    batching = BatchSettings(max_wait_ms=args.max_wait_ms)

    async def measure() -> dict:
        batcher = model_batcher(classifier, alone, batching)
        batcher.start()
        loop = asyncio.get_running_loop()

        async def closed(seconds: float) -> dict:
            latencies: list[float] = []
            stop = loop.time() + seconds

            async def client(first: int) -> None:
                index = first
                while loop.time() < stop:
                    started = time.perf_counter()
                    await batcher.submit([sentences[index % len(sentences)]])
                    latencies.append(time.perf_counter() - started)
                    index += clients

            started = time.perf_counter()
            await asyncio.gather(*(client(first) for first in range(clients)))
            return {"connections": clients, "requests_per_s": len(latencies) / (time.perf_counter() - started)}

        async def open_loop_at(rate: float, seconds: float) -> dict:
            answered = await submit_at_rate(batcher, sentences, rate, seconds)
            latencies = [end - due for due, end in answered]
            return {"target_requests_per_s": round(rate, 2), "requests": len(answered), **percentiles(latencies)}

        await closed(2)  # warm-up, as the HTTP run has
        result = {"closed_loop": await closed(args.seconds), "open_loop": []}
        for rate in rates:
            result["open_loop"].append(await open_loop_at(rate, args.seconds))
        await batcher.drain()
        return result

    return asyncio.run(measure())


async def submit_at_rate(batcher, sentences: list[str], rate: float, seconds: float) -> list[tuple[float, float]]:
    """Single sentences submitted to `batcher` every 1/rate s for `seconds`, whether or not earlier ones were
    answered: for each, (when it was due, when it was answered), so that its latency counts from when it was due
    (as open_loop.c counts it)."""
    answered: list[tuple[float, float]] = []

    async def one(index: int, due: float) -> None:
        await batcher.submit([sentences[index % len(sentences)]])
        answered.append((due, time.perf_counter()))

    total, start, sent, requests = round(rate * seconds), time.perf_counter(), 0, []
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            requests.append(asyncio.create_task(one(sent, start + sent / rate)))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await asyncio.gather(*requests)
    return answered


# ---- the model alone: what the models give at these rates with no request path at all ---------------
def model_alone(args, sentences: list[str], rates: list[float]) -> dict:
    """Single texts due every 1/rate s, as in the open loop, fed straight to each of the server's two model
    configurations from plain threads: "latency" (every thread on one call; one caller) and "streams" (the
    batched classifier; as many callers as it runs calls at once). Each caller takes every text due by then (up to
    the model batch size), already tokenised. No HTTP, no event loop, no tokenising, no second process on the
    CPU: what each configuration gives at these rates by itself (the server chooses between the two per batch).
    A latency target that both miss is out of reach of the request path."""
    from fastsentiment.backends.base import parallel_calls
    from fastsentiment.serve.app import load_and_warm

    # As the server has them: padded and warmed alike.
    streams, latency = load_and_warm(lambda: load_model(args), args.warm_up_length, args.pad_to_multiple_of)
    results = {}
    for name, model in (("latency", latency), ("streams", streams)):
        encoded = model.encoder.encode(sentences)
        for size in (1, 2, 4, args.model_batch_size):  # every shape once, as the server's warm-up and load do
            model.logits_for_ids(encoded[:600], batch_size=size)
        callers = parallel_calls(model.backend) if name == "streams" else 1
        rows = []
        for rate in rates:
            latencies = feed_at_rate(model, encoded, callers, rate, args.seconds, args.model_batch_size)
            rows.append({"target_requests_per_s": round(rate, 2), "requests": len(latencies), **percentiles(latencies)})
        results[name] = {"parallel_calls": callers, "open_loop": rows}
    return results


def feed_at_rate(model, encoded: list, callers: int, rate: float, seconds: float, batch_size: int) -> list[float]:
    """Each text's latency from when it was due (one due every 1/rate s), `callers` threads taking what is due."""
    total, latencies, taken, lock = round(rate * seconds), [], 0, threading.Lock()
    start = time.perf_counter() + 0.05

    def caller() -> None:
        nonlocal taken
        while True:
            with lock:
                if taken >= total:
                    return
                now = time.perf_counter()
                due = min(total, int((now - start) * rate) + 1) if now >= start else 0
                batch = range(taken, min(due, taken + batch_size))
                taken = batch.stop
            if not batch:
                time.sleep(max(0.0, start + batch.start / rate - now))
                continue
            model.logits_for_ids([encoded[i % len(encoded)] for i in batch], batch_size=len(batch))
            finished = time.perf_counter()
            with lock:
                latencies.extend(finished - (start + i / rate) for i in batch)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {
        f"latency_ms_p{q}": round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 3)
        for q in (50, 90, 99)
    }


# ---- open loop: fixed request rate --------------------------------------------------------
def build_open_loop(scratch: Path) -> Path:
    """Compile benchmarks/open_loop.c (the open-loop generator: C, so that it takes next to no CPU from the server)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("the open-loop generator needs a C compiler (Debian: apt-get install gcc)")
    binary = scratch / "open_loop"
    subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(Path(__file__).with_name("open_loop.c")), "-lm"], check=True
    )
    return binary


def open_loop(
    generator: Path, port: int, bodies: Path, rate: float, seconds: float, max_connections: int = 256
) -> dict:
    """Requests at a fixed rate, each latency counted from when it was due (see open_loop.c)."""
    command = [str(generator), str(port), f"{rate:.3f}", str(seconds), str(max_connections), str(bodies)]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 90).stdout)


class ServerCpu:
    """Where the server's CPU went during one measurement: its event loop (the main thread, which also parses HTTP)
    and its other threads (the model runtime's and the batch threads), from each thread's CPU time in /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> ServerCpu:
        self.started, self.before = time.perf_counter(), self._threads()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.started
        self.used = {tid: cpu - self.before.get(tid, 0.0) for tid, cpu in self._threads().items()}

    def report(self, requests: float) -> dict:
        loop = self.used.get(self.pid, 0.0)
        total = sum(self.used.values())
        return {
            "cores": round(total / self.seconds, 3),
            "event_loop_cores": round(loop / self.seconds, 3),
            "other_threads_cores": round((total - loop) / self.seconds, 3),
            "cpu_ms_per_request": round(1000 * total / max(requests, 1), 3),
            "event_loop_cpu_ms_per_request": round(1000 * loop / max(requests, 1), 3),
        }

    def _threads(self) -> dict[int, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        seconds = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                stat = Path(f"/proc/{self.pid}/task/{tid}/stat").read_text()
            except FileNotFoundError:  # the thread ended between the listing and the reading
                continue
            user, system = stat.rsplit(")", 1)[1].split()[11:13]  # fields 14 and 15 of proc(5), after the name
            seconds[int(tid)] = (int(user) + int(system)) / ticks
        return seconds


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy since boot (every process, ours and others')."""
    user, nice, system, _idle, _iowait, *rest = map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:])
    return (user + nice + system + sum(rest)) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children (the server, wrk)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and backend options of the benchmarks that load the model as `load_model` does."""
    parser.add_argument("--model", help="default: the built-in model")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision")
    parser.add_argument("--model-batch-size", type=int, default=8)


def server_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`model_arguments` and how the server prepares the model (this one, serve_warm_up.py, serve_trace.py)."""
    model_arguments(parser)
    parser.add_argument("--warm-up-length", type=int, default=WARM_UP_LENGTH, help="the server's --warm-up-length")
    parser.add_argument("--pad-to-multiple-of", type=int, help="the server's --pad-to-multiple-of (default: its own)")


def load_model(args):
    """The model the benchmarks' own in-process steps load, as `model_arguments` name it."""
    from fastsentiment import Classifier

    return Classifier.load(
        args.model, backend=args.backend, precision=args.precision, batch_size=args.model_batch_size, workload="serve"
    )


def read_sentences(path: Path) -> list[str]:
    """The `sentence` column of a GLUE-style TSV (SST-2's train, dev or test)."""
    with open(path, encoding="utf-8", newline="") as stream:
        return [row["sentence"] for row in csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    server_model_arguments(parser)
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="the server's --max-wait-ms")
    parser.add_argument("--max-batch-tokens", type=int, help="the server's --max-batch-tokens (default: its own)")
    parser.add_argument("--connections", default="1,16,64", help="closed-loop levels; the last is the saturation")
    parser.add_argument("--fractions", default="0.25,0.5,0.75", help="open-loop rates, of the saturation rate")
    parser.add_argument("--per-request", default="1,8", help="sentences per request body")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="run the server at this niceness, so that the load generator beside it sends on time, as clients on "
        "other machines would (0: same priority)",
    )
    parser.add_argument(
        "--no-http", action=argparse.BooleanOptionalAction, default=True, help="also measure without HTTP (step 4)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="sessions in all: the first measures every level, the rest the targets"
    )
    parser.add_argument("--data", type=Path, default=SST2_TEST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    sentences = read_sentences(args.data)
    started, busy, own = time.monotonic(), busy_cpu_seconds(), own_cpu_seconds()
    results = {
        "model": args.model or "built-in",
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_flags": cpu_flags(),
        **session(args, sentences, args.per_request, args.connections, args.fractions),
        # The targets' measurements again, each with its own offline reference and server: on two shared cores one
        # session's ratios vary by several points, so the targets are read as medians over all sessions.
        "repeats": [session(args, sentences, "1", "64", "0.5") for _ in range(args.repeat - 1)],
    }
    # Other processes on the machine make every figure of the run worse; say how much CPU they took.
    foreign = (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)
    results["other_processes_cores"] = max(0.0, foreign) / (time.monotonic() - started)
    report(results, args.out)


def cpu_flags() -> list[str]:
    """The CPU's AVX-512 and AMX flags, written beside every figure."""
    return sorted(set(re.findall(r"\b(avx512\w*|amx\w*)", Path("/proc/cpuinfo").read_text())))


def report(results: dict, out: Path | None) -> None:
    """The results as JSON on stdout, and in `out` when given."""
    text = json.dumps(results, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
