"""What `--backend auto` resolves to: the fastest backend x precision measured for this model on this machine.

A decision is a short measurement (`tune`): every candidate that runs here is loaded, checked against the model's
fp32 reference on a calibration sample (the fidelity bar: >= 99.5% label agreement, and <= 0.3 points of accuracy
where the sample has labels), and timed on the same sample, length-sorted at batch 32 (throughput) and one text at a
time (latency). Throughput is timed separately on the shorter and the longer half of the sample and scored by the
geometric mean of the two rates, because which path wins can depend on length (on a base-size model with AMX, static
int8 led on sentences and bf16 on passages), and a sample's tokens are mostly in its long texts; scores within
THROUGHPUT_TIE of the best are one score to the measurement's precision, and the path closest to the fp32 reference
takes that tie, then the quicker one text at a time. Latency is scored alike, the geometric mean of each half's
median (p50) of single-text calls on its typical texts. Candidates within RUNOFF_MARGIN of the leader are timed in
RUNOFF_ROUNDS more rounds, each in the opposite order of the one before, and each figure is the median of a row's
rounds: a close decision should not rest on one noisy pass, nor favour the rows that were timed more often (the
better of two rounds did). Latency takes the throughput decision unless another candidate is more than
LATENCY_TOLERANCE quicker one text at a time: within that, the two are equal to the precision of the measurement,
and one model then serves every workload (one load, one compiled graph in memory). A server sends one text at a time
until its queue fills and batches after: it takes the throughput decision unless a path within
SERVE_THROUGHPUT_TOLERANCE of the best score answers a lone text, as a server runs it, more than LATENCY_TOLERANCE
sooner (derived when read, from the same table: `decision_for`). It is cached per model content, device, compute
threads, CPU flags, runtime versions and calibration sample, written atomically; a stale or unreadable cache is
measured again. A run capped to fewer threads than the machine has (`--threads`, $FASTSENTIMENT_THREADS, Ray actors
of one thread) gets a decision measured with that cap: the fastest path on two threads need not be the fastest on
one.

Without a decision, `auto` does not measure behind a user's back: it takes an interim choice by CPU flags.
Commands whose workload pays for a measurement (a file job, the server, bench, `tune`) measure first.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import json
import logging
import math
import os
import platform
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsentiment.backends.base import (
    BATCHED_WORKLOADS,
    WORKLOADS,
    cpu_computes_bf16,
    cpu_computes_int8,
    cpu_flags,
    inference_threads,
    parallel_calls,
    usable_cpus,
    visible_gpus,
)
from fastsentiment.backends.registry import (
    availability,
    backend_names,
    canonical_device,
    first_runnable,
    get_backend,
    kind_on,
)
from fastsentiment.cache import cache_root
from fastsentiment.errors import BackendError, InputError, ModelError
from fastsentiment.models import ModelDir
from fastsentiment.outputs import as_umask_allows, check_output_place

log = logging.getLogger("fastsentiment")

MIN_AGREEMENT = 0.995
# A text whose fp32 reference puts its top two classes this close in logits (51.25% against 48.75% for two) has no
# label to agree with: any rounding flips it. On an AMX Xeon, the built-in model's three bf16 "disagreements" on the
# built-in sample were texts the reference scored 50.0%/50.0% (logit gaps 0.001-0.027), and they made auto take fp32
# at 0.30x bf16's speed while bf16 agreed with fp32 on 99.77% of SST-2 dev.
UNDECIDED_MARGIN = 0.05
MAX_ACCURACY_DROP = 0.003
# fp32 paths that match Hugging Face fp32 to 1e-4 (tests); the first that runs here is the reference every
# candidate is judged against (ONNX Runtime first: no torch import; torch last: a [torch]-only install, or CUDA).
REFERENCES = (("onnx", "fp32"), ("openvino", "fp32"), ("torch", "fp32"))
SAMPLE_SIZE = 256
# Fewer texts than this leave a half of the sample too small to time (a rate of 0, a latency of NaN, cached).
MIN_CALIBRATION = 32
BATCH = 32
TIMED_SECONDS = 0.4  # per candidate and half of the sample: enough passes over it to fill this
MIN_PASSES = 2  # over a half in each timed run, back to back
LATENCY_TEXTS = 12  # per half of the sample, around the half's median length
RUNOFF_MARGIN = 0.25  # contenders this close to the leader (in score or latency) are timed in more rounds
RUNOFF_ROUNDS = 2  # more rounds for each contender: a median of three
LATENCY_TOLERANCE = 0.10  # the throughput decision serves latency too unless another path is this much quicker
THROUGHPUT_TIE = 0.03  # throughput scores this close are one score to a tune's precision: fidelity, then latency, win
# A server gives up at most this much of the best batch-32 score for a quicker lone text. A server's capacity is
# not that score: on the AVX2 EPYC, openvino fp32 scored 10-14% above onnx fp32 and a server on either answered
# 64 closed-loop clients alike (medians 188 and 182 requests/s, notes 29 and 30), at batch 8, beside its HTTP work.
SERVE_THROUGHPUT_TOLERANCE = 0.15
STORED_WORKLOADS = ("throughput", "latency")  # what a decision file holds; a server's is read from them (decision_for)
DECIDED_WORKLOADS = (*STORED_WORKLOADS, "serve")  # what `tune` reports
HALVES = "(geometric mean over the sample's two halves)"
CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "data" / "calibration.txt"
# 5: latency is a real p50; threads keyed as computed with ($FASTSENTIMENT_THREADS); 6: exporters; 7: throughput ties;
# 8: contenders' figures are medians of three interleaved rounds; latency is the geometric mean of the halves' p50s
DECISION_VERSION = 8


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str | None
    reason: str

    @property
    def config(self) -> str:
        return f"{self.backend}:{self.precision}" if self.precision else self.backend

    @property
    def path(self) -> tuple[str, str | None]:
        """(backend, precision), as `load_backend` takes them."""
        return self.backend, self.precision


@dataclass
class Measurement:
    """One candidate's row of the table a decision is made from."""

    config: str
    load_s: float | None = None
    sentences_per_s: float | None = None  # the throughput score: geometric mean of the two rates below
    short_sentences_per_s: float | None = None  # the shorter half of the sample, length-sorted at batch 32
    long_sentences_per_s: float | None = None  # the longer half
    latency_ms: float | None = None
    rounds: int = 0
    agreement: float | None = None
    accuracy: float | None = None
    faithful: bool = False
    failed: str | None = None
    # One text on one of the streams of a backend that runs calls side by side (None for others): what a server's
    # lone texts take below saturation, where it keeps its streams for the requests that overlap.
    stream_latency_ms: float | None = None
    # Each round's figures, in the order timed; the figures above are their medians (load: the quickest).
    short_rounds: list[float] = field(default_factory=list)
    long_rounds: list[float] = field(default_factory=list)
    latency_rounds: list[float] = field(default_factory=list)
    stream_latency_rounds: list[float] = field(default_factory=list)

    def record(
        self, load_s: float, short_rate: float, long_rate: float, latency_ms: float, stream_latency_ms: float | None
    ) -> None:
        """Add one round of timings and set the row's figures to the medians of its rounds."""
        self.load_s = load_s if self.load_s is None else min(self.load_s, load_s)
        self.short_rounds.append(short_rate)
        self.long_rounds.append(long_rate)
        self.latency_rounds.append(latency_ms)
        if stream_latency_ms is not None:
            self.stream_latency_rounds.append(stream_latency_ms)
        self.short_sentences_per_s = float(np.median(self.short_rounds))
        self.long_sentences_per_s = float(np.median(self.long_rounds))
        self.sentences_per_s = float(np.sqrt(self.short_sentences_per_s * self.long_sentences_per_s))
        self.latency_ms = float(np.median(self.latency_rounds))
        if self.stream_latency_rounds:
            self.stream_latency_ms = float(np.median(self.stream_latency_rounds))
        self.rounds = len(self.short_rounds)


@dataclass(frozen=True)
class Calibration:
    texts: list[str]
    labels: list[int] | None
    identity: str
    drawn_from: int | None = None  # the rows of the user's file the sample was taken from, where it had more

    @classmethod
    def builtin(cls) -> Calibration:
        """Sentences the project wrote, and passages of 2-12 of them, each text once, so lengths run from a few tokens
        to ~250."""
        sentences = [line.strip() for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = list(sentences)
        for i in range(SAMPLE_SIZE - len(texts)):  # every length at each start in turn: no passage twice
            start, span = (i // 6) % len(sentences), 2 + 2 * (i % 6)
            texts.append(" ".join(sentences[(start + j) % len(sentences)] for j in range(span)))
        return cls(texts, None, "builtin-v2")

    @classmethod
    def from_file(cls, path: str | os.PathLike, labels: Sequence[str], text_column: str | None = None) -> Calibration:
        """Up to SAMPLE_SIZE rows of a user's file (a sample of their own data), evenly spaced over all of it, with
        labels when it has them; the text in `text_column` (default: a column named 'sentence' or 'text')."""
        from fastsentiment.bench.data import load_bench_data

        path = Path(path).expanduser()  # once: every check below and the loader see the same file
        if path.is_dir():  # a folder of splits serves bench; a sample is one file
            raise InputError(f"--calibration {path} is a folder; give one file of your texts")
        data = load_bench_data(str(path), text_column, label_names=list(labels), option="--calibration")
        split = data.labelled or data.speed
        if len(split.texts) < MIN_CALIBRATION:
            raise InputError(
                f"--calibration {path}: {len(split.texts)} texts; at least {MIN_CALIBRATION} are needed to time and "
                "compare the candidates"
            )
        # Spread over the whole file: its first rows alone were one class where the file was sorted by label.
        rows = len(split.texts)
        chosen = [i * rows // SAMPLE_SIZE for i in range(SAMPLE_SIZE)] if rows > SAMPLE_SIZE else range(rows)
        texts = [split.texts[i] for i in chosen]
        truth = [split.labels[i] for i in chosen] if split.labels is not None else None
        # Named by the sample itself: glue/sst2 is no file whose bytes could name it.
        digest = hashlib.sha256(json.dumps([texts, truth]).encode()).hexdigest()[:16]
        return cls(texts, truth, f"file-{digest}", rows if rows > SAMPLE_SIZE else None)


# ---- the interim choice ----------------------------------------------------------------------
def interim_choice(
    device: str, workload: str, model: ModelDir | None = None, unmeasured: str = "not yet measured"
) -> Choice:
    """`auto` before anything was measured: a choice by CPU flags, from the measurements in docs/benchmarks.md
    (`unmeasured`: why no measured decision holds, as its reason says).

    OpenVINO bf16 had the highest batched throughput on both CPUs measured there (AVX-512 bf16 with and without
    AMX); ONNX Runtime int8 starts fastest and had the lowest batch-1 latency without AMX, except on a CPU without
    an int8 dot-product instruction, where ONNX Runtime fp32 ran faster batched and one text at a time (AVX2 EPYC).
    """
    if device not in ("auto", "cpu"):
        return Choice(
            first_runnable(device, model), None, "no measurement for this device; the first backend that runs"
        )
    if workload in BATCHED_WORKLOADS and cpu_computes_bf16() and _runs("openvino", device, model):
        return Choice(
            "openvino", "bf16", f"interim: this CPU computes bf16 natively ({unmeasured}: fastsentiment tune)"
        )
    if _runs("onnx", device, model):
        if workload != "start" and not cpu_computes_int8():
            return Choice(
                "onnx",
                "fp32",
                f"interim: this CPU has no int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX), where ONNX "
                f"Runtime int8 is slower than fp32 ({unmeasured}: fastsentiment tune)",
            )
        return Choice("onnx", "int8", f"interim: fastest start and batch-1 latency ({unmeasured}: fastsentiment tune)")
    return Choice(first_runnable(device, model), None, "interim: the first backend that runs here")


def _runs(name: str, device: str, model: ModelDir | None) -> bool:
    try:
        get_backend(name)  # a built-in name is found without reading installed plugins' metadata (~30 ms a start)
    except BackendError:
        return False
    return availability(name, device, model).runnable


# ---- decisions --------------------------------------------------------------------------------
def choose(
    model: ModelDir,
    device: str = "auto",
    workload: str = "throughput",
    measure: bool = False,
    threads: int | None = None,
) -> Choice:
    """What `auto` is for `workload` (with `threads` compute threads; None: as `inference_threads` says): the cached
    measured decision, a fresh one if `measure`, else the interim."""
    if workload not in WORKLOADS:
        raise BackendError(f"unknown workload {workload!r}; expected one of {', '.join(WORKLOADS)}")
    device = canonical_device(device)
    if workload == "start":  # never measured (start-up dominates a one-off call): no advice to tune
        interim = interim_choice(device, "start", model)
        # The stored file is read as it is first, and checked whole (runtime versions: tens of milliseconds of a
        # one-off call) only where it rejects the quick path.
        decision = (
            cached_decision(model, device, threads=threads) if _rejects(model, device, threads, interim) else None
        )
        if decision is not None and interim.config in rejected_configs(decision):
            # Quick to start is no excuse for labels `tune` found wrong. Its runtime in fp32, where tune measured it
            # (faithful: the reference's own arithmetic; its export cached), starts about as quickly: on the AVX-512
            # EPYC, `classify "I like cheese"` took 0.455 s on onnx:fp32 against 0.50 s on the latency choice,
            # openvino:int8 (medians of five). Else the latency choice, one text at a time too.
            full = Choice(interim.backend, "fp32", "")
            if full.config in faithful_configs(decision) and _computes_here(full, device, model):
                return Choice(
                    full.backend,
                    full.precision,
                    f"a one-off call: {interim.config}, the quickest to start, was measured below the fidelity bar; "
                    f"{full.config}, faithful and as quick to start",
                )
            latency = choose(model, device, "latency", threads=threads)
            return Choice(
                latency.backend,
                latency.precision,
                f"a one-off call: {interim.config}, the quickest to start, was measured below the fidelity bar; "
                f"the latency choice, {latency.reason}",
            )
        return Choice(interim.backend, interim.precision, "a one-off call: the quickest to start, not measured")
    decision = cached_decision(model, device, threads=threads)
    if decision is None and measure:
        with measuring_alone(model, device, threads):
            decision = cached_decision(model, device, threads=threads)  # measured by the process this one waited for
            if decision is None:
                log.warning("auto: measuring the backends for this model on this CPU (once; cached for later runs)")
                decision = tune(model, device, threads=threads)
    if decision is None:
        return interim_choice(device, workload, model, _unmeasured(model, device, threads))
    chosen = decision_for(decision, workload)
    if chosen is None:
        return interim_choice(device, workload, model, f"not measured for {workload}")
    pick: Choice | None = Choice(
        chosen["backend"], chosen["precision"], f"measured {decision['measured_at']}: {chosen['why']}"
    )
    # Its runtime went away since (a cache shared between images), or its precision does not run where the backend
    # now goes (a decision measured with a GPU in view, read with none: torch fp16 failed every run).
    if not _computes_here(pick, device, model):
        pick = _best_measured(decision, workload, device, model, passed_over={pick.config})
    return pick or interim_choice(device, workload, model, "no path it measured runs here")


def _computes_here(choice: Choice, device: str, model: ModelDir) -> bool:
    """Whether `choice`'s backend runs here, in its precision on the device it takes for `device`."""
    if not _runs(choice.backend, device, model):
        return False
    backend = get_backend(choice.backend)
    return choice.precision is None or backend.spec.precision_runs_on(choice.precision, kind_on(backend, device))


def measured_with_precision(
    model: ModelDir, device: str, precision: str, workload: str = "throughput", threads: int | None = None
) -> Choice | None:
    """`auto` with a precision given: among the faithful rows of the cached decision's table with that precision
    that still run here, the one `_by_the_rule` picks for `workload`; None for "start" (a one-off call takes no
    measured path, as `choose` says), without a decision or without such a row (the caller then takes the first
    backend that has the precision)."""
    if workload == "start":
        return None
    decision = cached_decision(model, device, threads=threads)
    return None if decision is None else _best_measured(decision, workload, device, model, precision)


def _rejects(model: ModelDir, device: str, threads: int | None, choice: Choice) -> bool:
    """Whether the stored decision file, unchecked, names `choice` among the paths `tune` rejected."""
    for path in _decisions_of_any_software(model, device, threads):  # most often one; checked whole where it rejects
        try:
            if choice.config in rejected_configs(json.loads(path.read_text())):
                return True
        except (OSError, ValueError):
            continue
    return False


def table_rows(decision: dict) -> list[dict]:
    """The rows of `decision`'s table that can be read: a file edited or written by hand may hold anything there."""
    table = decision.get("table") if isinstance(decision, dict) else None
    return [row for row in table if isinstance(row, dict)] if isinstance(table, list) else []


def rejected_configs(decision: dict) -> set[str]:
    """The backend:precision rows of `decision`'s table that `tune` measured and did not find faithful (below the
    fidelity bar, or failed to run)."""
    return {str(row.get("config")) for row in table_rows(decision) if not row.get("faithful")}


def faithful_configs(decision: dict) -> set[str]:
    """The backend:precision rows of `decision`'s table that `tune` measured faithful."""
    return {str(row.get("config")) for row in table_rows(decision) if row.get("faithful")}


def measured_configs(decision: dict, precision: str | None = None) -> set[str]:
    """The backend:precision rows of `decision`'s table (of `precision`, if given), faithful or not."""
    configs = {str(row.get("config")) for row in table_rows(decision)}
    return {config for config in configs if precision in (None, config.partition(":")[2])}


def below_the_bar(decision: dict, precision: str, device: str, model: ModelDir) -> str | None:
    """Why `auto` with `precision` has no path, where `decision` measured that precision on backends that run here
    and found none of them faithful; None where it found one, or measured none."""
    table = table_rows(decision)
    rows = [
        row
        for row in table
        if str(row.get("config", "")).partition(":")[2] == precision
        and _runs(str(row["config"]).partition(":")[0], device, model)
    ]
    if not rows or any(row.get("faithful") for row in rows):
        return None
    ran = [row for row in rows if not row.get("failed") and _is_number(row.get("agreement"))]
    if not ran:
        why = "; ".join(f"{row['config']}: {row.get('failed')}" for row in rows)
        return f"-p {precision}: every {precision} path failed when measured ({why}); choose another precision"
    best = max(ran, key=lambda row: (row["agreement"], row.get("accuracy") or 0.0))
    if best["agreement"] < MIN_AGREEMENT:
        why = f"{best['agreement']:.2%} label agreement with fp32, under {MIN_AGREEMENT:.1%}"
    else:
        reference = next((row for row in table if row.get("config") == decision.get("reference")), {})
        why = f"accuracy {best['accuracy']:.2%}" if _is_number(best.get("accuracy")) else "accuracy"
        if _is_number(reference.get("accuracy")):
            why += f" against fp32's {reference['accuracy']:.2%}"
        why += f": more than {MAX_ACCURACY_DROP * 100:.1f} points lost on the texts fp32 decides"
    return (
        f"-p {precision}: tune measured every {precision} path here below the fidelity bar (the best, "
        f"{best['config']}: {why}); choose another precision, or name a backend to take it anyway "
        f"(-b {best['config'].partition(':')[0]} -p {precision})"
    )


def _best_measured(
    decision: dict,
    workload: str,
    device: str,
    model: ModelDir,
    precision: str | None = None,
    passed_over: Container[str] = (),
) -> Choice | None:
    """Among the faithful rows of `decision`'s table (of `precision`, if given; not those `passed_over`) that
    compute here (`_computes_here`), the one `_decide`'s rule picks for `workload`; None without such a row. Each
    pick is checked in turn, not every row: where torch goes is known only by importing it."""
    passed = set(passed_over)
    while (pick := _by_the_rule(decision, workload, device, model, precision, passed)) is not None:
        if _computes_here(pick, device, model):
            return pick
        passed.add(pick.config)
    return None


def _by_the_rule(
    decision: dict, workload: str, device: str, model: ModelDir, precision: str | None, passed_over: Container[str]
) -> Choice | None:
    """Among the faithful rows of `decision`'s table (of `precision`, if given; not those `passed_over`) whose
    backend runs here, the one the rules of `_decide` and `decision_for` pick for `workload` (the fastest by
    throughput score, a tie within THROUGHPUT_TIE going to the closest to fp32, then the quicker one text at a time;
    for latency that one unless another is more than LATENCY_TOLERANCE quicker; for a server `_serve_pick`); None
    without such a row."""
    rows = []
    for row in _rankable(decision):
        if row.get("config") in passed_over:
            continue
        name, _, measured = str(row.get("config", "")).partition(":")
        if not _precision_known(name, measured):
            continue
        if precision in (None, measured) and _runs(name, device, model):
            rows.append(row)
    if not rows:
        return None
    best = _fastest(rows, dict.get)
    why = f"{best['sentences_per_s']:,.0f} sentences/s (score) at batch {BATCH}"
    if workload == "latency":
        quickest = min(rows, key=lambda row: row["latency_ms"])
        if not _throughput_serves_latency(best["latency_ms"], quickest["latency_ms"]):
            best = quickest
        why = f"{best['latency_ms']:.2f} ms p50 at batch 1, {best['sentences_per_s']:,.0f} sentences/s at batch {BATCH}"
    elif workload == "serve":
        best = _serve_pick(rows, best)
        why = f"{_served_ms(best):.2f} ms a lone text, {best['sentences_per_s']:,.0f} sentences/s at batch {BATCH}"
    backend, _, chosen_precision = best["config"].partition(":")
    what = f"the fastest {precision} path" if precision else "the fastest path that runs here"
    return Choice(backend, chosen_precision, f"measured {decision['measured_at']}: {what}, {why}")


def _rankable(decision: dict) -> list[dict]:
    """The rows of `decision`'s table the rules may pick from: faithful, with both figures they rank by."""
    return [
        row
        for row in table_rows(decision)
        if row.get("faithful")
        and not row.get("failed")
        and all(_is_number(row.get(figure)) for figure in ("sentences_per_s", "latency_ms"))
    ]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def thread_cap(threads: int | None) -> int | None:
    """The thread count a decision is keyed by: the one the backends compute with (`inference_threads`: `threads`,
    else $FASTSENTIMENT_THREADS, else every usable CPU), None where that is every usable CPU. Keyed by `threads`
    alone, a decision measured on one thread was reused by an all-core process (and the other way round)."""
    effective = inference_threads(threads)
    return None if effective >= usable_cpus() else effective


def decision_key(
    model: ModelDir, device: str, calibration_identity: str, threads: int | None = None, software: dict | None = None
) -> dict:
    """Everything a measured decision depends on; a change in any of it means measuring again. `software`: what
    `_software()` gives, where the caller read it already."""
    gpus = visible_gpus()
    return {
        "version": DECISION_VERSION,
        "model": model.content_hash,
        # The graphs measured are this tool's exports: a new revision of its exporter for the architecture is a new
        # graph, as a new version of the libraries that export it is.
        "export_revision": model.architecture.export_revision,
        "device": device,
        "machine": platform.machine(),
        "cpu_flags": _flags_digest(),
        "cpus": usable_cpus(),
        "threads": thread_cap(threads),
        **(software or _software()),
        "calibration": calibration_identity,
        # A GPU that came into view (the same CPU, a cache shared with a GPU machine) is a reason to measure again.
        **({"gpus": gpus} if gpus else {}),
    }


def _software() -> dict:
    """The runtimes' and exporters' versions and this tool's, as a decision's key holds them (tens of milliseconds to
    read)."""
    from importlib.metadata import PackageNotFoundError, version

    from fastsentiment import __version__

    runtimes = {}
    for package in ("onnxruntime", "openvino", "torch", "nncf", "transformers", "onnx", "onnxruntime-gpu"):
        try:
            runtimes[package] = version(package)
        except PackageNotFoundError:
            runtimes[package] = None
    if runtimes["onnxruntime-gpu"] is None:  # named only where installed: CPU machines' decisions stay as they were
        del runtimes["onnxruntime-gpu"]
    return {"runtimes": runtimes, "fastsentiment": __version__}


def decision_path(model: ModelDir, device: str, threads: int | None = None, software: dict | None = None) -> Path:
    """One file per model, device, thread cap, machine (CPU flags and usable CPUs) and software (runtimes and this
    tool's version): machines, and installs of other versions on one machine (two images during a rolling upgrade),
    that share a cache keep their decisions side by side instead of overwriting each other's, which each then found
    stale and measured again on every start."""
    digest = hashlib.sha256(json.dumps(software or _software(), sort_keys=True).encode()).hexdigest()[:8]
    base = _decisions_base(model, device, threads)
    return base.with_name(f"{base.name}-{digest}.json")


def _decisions_base(model: ModelDir, device: str, threads: int | None = None) -> Path:
    """What the names of the decisions for `model` on this machine begin with, whatever the software: the lock
    measuring for them takes (installs on one machine measure one at a time) and the files a one-off call and the
    account of a stale decision read without the runtimes' versions."""
    cap = thread_cap(threads)
    gpus = visible_gpus()
    machine = f"{platform.machine()} {_flags_digest()} {usable_cpus()}" + (f" {json.dumps(gpus)}" if gpus else "")
    machine = hashlib.sha256(machine.encode()).hexdigest()[:8]
    threads_part = "" if cap is None else f"-{cap}threads"
    return cache_root() / "tune" / f"{model.content_hash[:24]}-{device}-{machine}{threads_part}"


def decision_lock(model: ModelDir, device: str, threads: int | None = None) -> Path:
    """The lock file of those measuring for `model` on `device` here: one for every install on the machine."""
    return _decisions_base(model, device, threads).with_suffix(".lock")


def _decisions_of_any_software(model: ModelDir, device: str, threads: int | None) -> list[Path]:
    """The decision files for `model` on this machine, of whatever runtimes and version (the one of files named
    before the software was, too), the latest first."""
    base = _decisions_base(model, device, threads)
    files = [*base.parent.glob(f"{glob.escape(base.name)}-{'[0-9a-f]' * 8}.json"), base.with_suffix(".json")]

    def modified(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return float("-inf")

    return sorted((path for path in files if modified(path) > float("-inf")), key=modified, reverse=True)


def _flags_digest() -> str:
    return hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]


def cached_decision(
    model: ModelDir, device: str, calibration_identity: str = "builtin-v1", threads: int | None = None
) -> dict | None:
    """The stored decision if it was made for exactly this model, machine, runtimes and thread cap; None otherwise."""
    if not _decisions_of_any_software(model, device, threads):  # none: said without reading the runtimes' versions
        return None
    software = _software()
    path = decision_path(model, device, threads, software)
    if not path.is_file():  # a file named before the software was: used where its key still holds
        path = _decisions_base(model, device, threads).with_suffix(".json")
        if not path.is_file():
            return None
    try:
        decision = json.loads(path.read_text())
        stored_key = decision["key"]
        if not isinstance(stored_key, dict):
            raise TypeError("key")
        for workload in STORED_WORKLOADS:  # what `choose` reads of each decision it holds
            if workload in decision and not _is_path(decision[workload]):
                raise TypeError(workload)
        if not isinstance(decision["measured_at"], str):
            raise TypeError("measured_at")
        if not isinstance(decision.get("table", []), list):  # what `tune` shows and `auto` with a precision reads
            raise TypeError("table")
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable tuning cache %s; it will be measured again", path)
        return None
    if stored_key != decision_key(
        model, device, stored_key.get("calibration", calibration_identity), threads, software
    ):
        return None  # another CPU, runtime version or model: stale
    return decision


def _unmeasured(model: ModelDir, device: str, threads: int | None) -> str:
    """Why no measured decision holds, in words: none was measured, or what changed since the stored one was (after
    an upgrade, production otherwise fell back to the interim choice saying it was never measured)."""
    try:
        # this software's file, else the latest of another's (the one before an upgrade)
        stored_files = _decisions_of_any_software(model, device, threads)
        if not stored_files:
            return "not yet measured"
        own = decision_path(model, device, threads)
        stored = json.loads((own if own in stored_files else stored_files[0]).read_text())
        stored_key, measured_at = dict(stored["key"]), str(stored["measured_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return "not yet measured"
    now = decision_key(model, device, str(stored_key.get("calibration", "builtin-v1")), threads)
    if stored_key.get("version") != now["version"]:  # its fields are not this format's: none to compare
        return f"the decision measured {measured_at} is stale, another decision format"
    then_runtimes = stored_key.get("runtimes") if isinstance(stored_key.get("runtimes"), dict) else {}
    changes = [
        f"{package} {then_runtimes.get(package) or 'absent'} then, {now['runtimes'].get(package) or 'absent'} now"
        for package in dict.fromkeys([*now["runtimes"], *then_runtimes])
        if then_runtimes.get(package) != now["runtimes"].get(package)
    ]
    fields = ("fastsentiment", "cpus", "export_revision")
    changes += [
        f"{field} {stored_key.get(field)} then, {now[field]} now"
        for field in fields
        if stored_key.get(field) != now[field]
    ]
    if not changes and stored_key != now:
        changes = ["another decision format"]
    return f"the decision measured {measured_at} is stale, {'; '.join(changes)}" if changes else "not yet measured"


def _is_path(chosen: object) -> bool:
    """Whether a decision's choice could name a path: a backend and a precision (`_precision_known`)."""
    return (
        isinstance(chosen, dict)
        and all(isinstance(chosen.get(field), str) for field in ("backend", "precision", "why"))
        and _precision_known(chosen["backend"], chosen["precision"])
    )


def _precision_known(backend: str, precision: str) -> bool:
    """Whether `backend` has `precision` where it is registered here (an edited file's `openvino:int4` failed every
    later run until the file was deleted). A backend not registered here (a plugin another image sharing the cache
    has) is a path that does not run here: `choose` then takes the best measured one that does."""
    try:
        spec = get_backend(backend).spec  # plugins are looked up only for a name not built in: they cost start-up
    except BackendError:
        return True
    return precision in spec.precisions


def _save(path: Path, decision: dict) -> None:
    """Write by rename, so a reader sees the old decision or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=".tune-", suffix=".json", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(decision, stream, indent=1)
    as_umask_allows(Path(scratch))  # a cache on a volume shared by images that run as other users
    os.replace(scratch, path)


# ---- measuring ------------------------------------------------------------------------------
def candidates(device: str, model: ModelDir | None = None) -> list[tuple[str, str]]:
    """Every tunable backend x precision that may run `model` on `device`; torch last (its threads linger after it)."""
    found = []
    for name in backend_names():
        backend = get_backend(name)
        spec = backend.spec
        if not spec.tunable or not availability(name, device, model).runnable:
            continue
        kind = kind_on(backend, device)
        found += [(name, precision) for precision in spec.precisions if spec.precision_runs_on(precision, kind)]
    return sorted(found, key=lambda pair: pair[0] == "torch")


_held = threading.local()  # the locks this thread holds (`measuring_alone` is re-entrant per thread)


@contextlib.contextmanager
def measuring_alone(model: ModelDir, device: str, threads: int | None) -> Iterator[None]:
    """One process (and one thread) at a time measures for a decision (a lock file beside it): two at once measured
    each other's load (torch fp32 at 86 against 0.9 ms), and each overwrote the other's decision. Devices that share
    a decision (`same_placement`: auto and cpu without a GPU) share the lock. And one measurement at a time on the
    machine, whatever its model or thread cap (a second lock, per host): two tunes side by side timed each other
    (torch int8 at 162 against 4,743 sentences/s alone) and both kept what they measured. Where a lock cannot be had
    (a read-only cache, a system or file system without file locks), no waiting."""
    placement = min([device, *same_placement(device, model)])
    path = decision_lock(model, placement, threads)
    with _exclusive(path, "auto: another process is measuring the backends for this model; waiting for it"):
        machine = path.with_name(f".measuring-{socket.gethostname()}.lock")
        with _exclusive(machine, "auto: another process is measuring backends on this machine; waiting for it to end"):
            yield


@contextlib.contextmanager
def _exclusive(path: Path, waiting: str) -> Iterator[None]:
    """Hold the lock of the file `path` (made if missing), saying `waiting` where another process holds it first."""
    from fastsentiment.cache import lock_file

    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # a lock needs no write access to its file
    except OSError:
        yield
        return
    with os.fdopen(descriptor) as lock:
        if not lock_file(lock, wait=False):
            log.warning(waiting)
            lock_file(lock, wait=True)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)


def tune(
    model: ModelDir,
    device: str = "auto",
    calibration: Calibration | None = None,
    only: Sequence[tuple[str, str]] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    threads: int | None = None,
) -> dict:
    """Measure every candidate on the calibration sample (each loaded with `threads` compute threads; None:
    $FASTSENTIMENT_THREADS, else every usable CPU), decide, cache the decision and return it; after any other process measuring for it has finished."""
    from fastsentiment.backends.registry import check_device, load_backend, prepare_backend
    from fastsentiment.classifier import Classifier
    from fastsentiment.tokenization import TextEncoder, Truncations

    device = check_device(device)
    _check_a_reference_runs(device, model)  # before the lock, whose file a refused device would leave behind
    calibration = calibration or Calibration.builtin()
    with measuring_alone(model, device, threads):
        encoder = TextEncoder.from_model_dir(model)
        sequences = encoder.encode(calibration.texts, Truncations(named=0))  # the sample's, not the user's, texts
        halves = _length_halves(sequences)

        def measure_one(
            name: str, precision: str, row: Measurement | None = None
        ) -> tuple[Measurement, np.ndarray | None]:
            """Load and time one candidate; with `row`, one more round of it (`Measurement.record`)."""
            row = row or Measurement(f"{name}:{precision}")
            try:
                progress(f"{row.config}: preparing")
                prepare_backend(model, name, device, precision)
                progress(f"{row.config}: measuring" + (" again" if row.rounds else ""))
                # The runtime is imported before the clock starts: the first candidate of a runtime would otherwise
                # be charged seconds (torch, OpenVINO) its siblings are not, and load times would not compare.
                for module in get_backend(name).spec.modules:
                    importlib.import_module(module)
                started = time.perf_counter()
                clf = Classifier(
                    model, load_backend(model, name, device, precision, threads), encoder, batch_size=BATCH
                )
                load_s = time.perf_counter() - started
                logits = clf.logits_for_ids(sequences)  # also the warm-up
                short, long = (_throughput(clf, half) for half in halves)
                stream_latency = None
                if parallel_calls(clf.backend) > 1:  # its batches ran side by side; one text gets every thread
                    stream_latency = _latency_ms(clf, halves)
                    latency_model = load_backend(model, name, device, precision, threads, workload="latency")
                    clf = Classifier(model, latency_model, encoder)
                latency = _latency_ms(clf, halves)
            except Exception as error:  # a candidate that cannot run here is a row, not a failed tune
                if not row.rounds:
                    row.failed = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                return row, None
            row.record(load_s, short, long, latency, stream_latency)
            return row, logits

        reference_pair, reference_row, reference = _reference(model, device, measure_one)
        rows = []
        for name, precision in only or candidates(device, model):
            same = (name, precision) == reference_pair
            row, logits = (reference_row, reference) if same else measure_one(name, precision)
            if logits is not None:
                _judge(row, logits, reference, calibration.labels)
            rows.append(row)
        contenders = _contenders([row for row in rows if row.faithful])
        for round_number in range(RUNOFF_ROUNDS):  # reversed, forward, ...: no row always follows the same one
            for row in reversed(contenders) if round_number % 2 == 0 else contenders:
                measure_one(*row.config.split(":"), row=row)
        decision = {
            "key": decision_key(model, device, calibration.identity, threads),
            "measured_at": time.strftime("%Y-%m-%d %H:%M"),
            "sample": len(sequences),
            "reference": ":".join(reference_pair),
            "table": [asdict(row) for row in rows],
        }
        decision.update(_decide([row for row in rows if row.faithful]))
        path = decision_path(model, device, threads)
        try:
            _save(path, decision)
            for alias in same_placement(device, model):
                _save(decision_path(model, alias, threads), {**decision, "key": {**decision["key"], "device": alias}})
        except OSError as error:  # the measurement still serves this run: a read-only image's cache, a full disk
            log.warning(
                "auto: cannot keep the decision in %s (%s): the next run measures again; "
                "set FASTSENTIMENT_CACHE to a writable folder",
                path.parent,
                error.strerror or error,
            )
        return decision


def check_decision_can_be_kept(model: ModelDir, device: str, threads: int | None = None) -> None:
    """Refuse, before minutes of measuring, a `tune` whose decision could not be written (its whole purpose)."""
    try:
        check_output_place(decision_path(model, device, threads), name="the tuning cache")
    except InputError as error:
        raise InputError(f"{error}; set FASTSENTIMENT_CACHE to a writable folder") from None


def same_placement(device: str, model: ModelDir) -> list[str]:
    """The other name of `device` that loads every backend in the same place: "cpu" for "auto" (and "auto" for
    "cpu") where no backend takes a GPU for "auto", so that `tune --device cpu` serves a `classify` left at auto,
    and the other way round. Known at tune time, where torch (which says whether there is a GPU) is imported."""
    if device not in ("auto", "cpu"):
        return []
    runnable = [get_backend(name) for name in backend_names() if availability(name, "auto", model).runnable]
    if any(kind_on(backend, "auto") != "cpu" for backend in runnable):
        return []
    return ["cpu" if device == "auto" else "auto"]


def _check_a_reference_runs(device: str, model: ModelDir) -> None:
    """Refuse a `tune` with no fp32 reference on `device`: no candidate could be judged."""
    if any(_runs(name, device, model) for name, _ in REFERENCES):
        return
    if any(not get_backend(name).spec.missing_module() for name, _ in REFERENCES if name in backend_names()):
        # installed, but not for this device: installing again would not help
        raise BackendError(
            f"tune: no backend runs on {device!r} on this machine (see `fastsentiment backends --device {device}`)"
        )
    raise BackendError(
        "tune: no fp32 reference to judge the candidates against (none of onnx, openvino or torch runs here); "
        "install one: pip install 'fastsentiment[onnx]'"
    )


def _reference(model: ModelDir, device: str, measure_one) -> tuple[tuple[str, str], Measurement, np.ndarray]:
    """The first of REFERENCES that runs here and measures: its pair, its row and its logits."""
    failures = []
    for pair in REFERENCES:
        if not _runs(pair[0], device, model):
            continue
        row, logits = measure_one(*pair)
        if logits is not None:
            return pair, row, logits
        failures.append((row.config, row.failed))
    if len({reason for _, reason in failures}) == 1:  # every runtime says the same of the model: the model's fault
        raise ModelError(failures[0][1])
    tried = "; ".join(f"{config}: {reason}" for config, reason in failures)
    raise BackendError(f"tune: no fp32 reference to judge the candidates against ({tried})")


def _decide(faithful: list[Measurement]) -> dict:
    """The throughput and latency decisions from the faithful rows (none when no row is faithful)."""
    if not faithful:
        return {}
    fastest = _fastest(faithful, getattr)
    quickest = min(faithful, key=lambda row: row.latency_ms)
    leader = max(faithful, key=lambda row: row.sentences_per_s)
    tie = (
        f"; tied within {THROUGHPUT_TIE:.0%} with {leader.config} ({leader.sentences_per_s:,.0f} against "
        f"{fastest.sentences_per_s:,.0f} score), agreeing with fp32 on {fastest.agreement:.2%} against "
        f"{leader.agreement:.2%} and taking {fastest.latency_ms:.2f} against {leader.latency_ms:.2f} ms a text"
        if leader is not fastest
        else ""
    )
    throughput = _chosen(
        fastest,
        f"{fastest.short_sentences_per_s:,.0f} sentences/s on the shorter half of the sample and "
        f"{fastest.long_sentences_per_s:,.0f} on the longer half, at batch {BATCH}{tie}",
    )
    if not _throughput_serves_latency(fastest.latency_ms, quickest.latency_ms):
        return {
            "throughput": throughput,
            "latency": _chosen(quickest, f"{quickest.latency_ms:.2f} ms p50 at batch 1 {HALVES}"),
        }
    why = f"{fastest.latency_ms:.2f} ms p50 at batch 1 {HALVES}"
    if quickest is not fastest:
        why += (
            f", within {LATENCY_TOLERANCE:.0%} of the quickest ({quickest.config}, {quickest.latency_ms:.2f} ms):"
            " the throughput decision serves both"
        )
    return {"throughput": throughput, "latency": _chosen(fastest, why)}


def _fastest(rows: list, figure: Callable[[Any, str], float]):
    """The throughput pick among `rows` (`figure(row, name)` reads a row's "sentences_per_s", "agreement" or
    "latency_ms"): the highest score, except that rows within THROUGHPUT_TIE of it are a tie to the precision of a
    tune, which the one closest to the fp32 reference takes, and among those the quickest one text at a time. On
    the AVX2 EPYC four paths scored within 2% (onnx, openvino and torch fp32, openvino int8); on SST-2 openvino fp32
    ran 269 sentences/s, onnx fp32 248, torch fp32 235 and openvino int8 222 (note 29)."""
    best = max(figure(row, "sentences_per_s") for row in rows)
    tied = [row for row in rows if figure(row, "sentences_per_s") >= (1 - THROUGHPUT_TIE) * best]
    return min(tied, key=lambda row: (-(figure(row, "agreement") or 0.0), figure(row, "latency_ms")))


def _throughput_serves_latency(fastest_ms: float, quickest_ms: float) -> bool:
    """Whether the fastest path also serves latency: its batch-1 latency within LATENCY_TOLERANCE of the quickest's."""
    return fastest_ms <= (1 + LATENCY_TOLERANCE) * quickest_ms


def _latency_serves_throughput(quicker_rate: float, best_rate: float) -> bool:
    """Whether a path quicker one text at a time also serves a server's batches: its throughput score within
    SERVE_THROUGHPUT_TOLERANCE of the best score measured."""
    return quicker_rate >= (1 - SERVE_THROUGHPUT_TOLERANCE) * best_rate


def decision_for(decision: dict, workload: str) -> dict | None:
    """The path `decision` holds for `workload` ({"backend", "precision", "why"}; None where it holds none). The
    throughput and latency decisions are stored (STORED_WORKLOADS); a server's is read from the throughput decision
    and the table (`_serve_pick`)."""
    if workload != "serve":
        return decision.get(workload)
    throughput = decision.get("throughput")
    rows = _rankable(decision)
    fastest = next((row for row in rows if throughput and row.get("config") == _config(throughput)), None)
    if fastest is None:
        return throughput or decision.get("latency")
    pick = _serve_pick(rows, fastest)
    if pick is fastest:
        return throughput
    backend, _, precision = pick["config"].partition(":")
    best = max(row["sentences_per_s"] for row in rows)
    return {
        "backend": backend,
        "precision": precision,
        "why": f"{pick['config']}, {_served_ms(pick):.2f} ms a lone text against {_served_ms(fastest):.2f} for "
        f"{fastest['config']}{' on one of its streams' if _on_a_stream(fastest) else ''}, and "
        f"{pick['sentences_per_s']:,.0f} sentences/s at batch {BATCH}, within {SERVE_THROUGHPUT_TOLERANCE:.0%} of "
        f"the best ({best:,.0f})",
    }


def _serve_pick(rows: list[dict], fastest: dict) -> dict:
    """A server's path among faithful table `rows`, given the throughput pick `fastest`. Below saturation a server's
    calls hold one text, at it batches: `fastest`, unless another row whose score is within
    SERVE_THROUGHPUT_TOLERANCE of the best is more than LATENCY_TOLERANCE quicker on a lone text as a server runs it
    (`_served_ms`). On the AVX2 EPYC openvino fp32 scored 10% above onnx fp32 and answered a lone text as quickly
    with both threads, but a server on it ran its lone texts on one of two streams (12-13 ms) and answered half its
    saturation rate at a median of 16 ms, where onnx fp32 answered in 7.6 (note 30)."""
    best = max(row["sentences_per_s"] for row in rows)
    affordable = [row for row in rows if _latency_serves_throughput(row["sentences_per_s"], best)]
    quickest = min(affordable, key=_served_ms)
    return fastest if _throughput_serves_latency(_served_ms(fastest), _served_ms(quickest)) else quickest


def _on_a_stream(row: dict) -> bool:
    return _is_number(row.get("stream_latency_ms"))


def _served_ms(row: dict) -> float:
    """Milliseconds a server's lone text takes below saturation: on one stream where the backend runs calls side by
    side (the server keeps its streams for the requests that overlap), else one text with every thread."""
    return row["stream_latency_ms"] if _on_a_stream(row) else row["latency_ms"]


def _config(chosen: dict) -> str:
    return f"{chosen['backend']}:{chosen['precision']}"


def _length_halves(sequences: list) -> tuple[list, list]:
    """The sample split at its median token length (shorter half, longer half)."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    middle = len(order) // 2
    return [sequences[i] for i in order[:middle]], [sequences[i] for i in order[middle:]]


def _contenders(faithful: list[Measurement]) -> list[Measurement]:
    """Faithful rows close enough to the leader in throughput or latency that one pass cannot separate them."""
    if len(faithful) < 2:
        return []
    best_score = max(row.sentences_per_s for row in faithful)
    best_latency = min(row.latency_ms for row in faithful)
    return [
        row
        for row in faithful
        if row.sentences_per_s >= (1 - RUNOFF_MARGIN) * best_score
        or row.latency_ms <= (1 + RUNOFF_MARGIN) * best_latency
    ]


def _judge(row: Measurement, logits: np.ndarray, reference: np.ndarray, labels: list[int] | None) -> None:
    """The fidelity bar: label agreement with the fp32 reference on the texts it decides (UNDECIDED_MARGIN), and no
    more than MAX_ACCURACY_DROP of accuracy lost on those texts where labels exist."""
    top_two = np.sort(reference, axis=1)[:, -2:]
    decided = (top_two[:, 1] - top_two[:, 0]) >= UNDECIDED_MARGIN
    if not decided.any():
        decided[:] = True
    row.agreement = float((logits.argmax(1) == reference.argmax(1))[decided].mean())
    row.faithful = row.agreement >= MIN_AGREEMENT
    if labels is not None:
        truth = np.asarray(labels)
        correct = logits.argmax(1) == truth
        row.accuracy = float(correct.mean())  # the figure a user compares with their own: over every text
        # The bar counts the texts agreement counts: an undecided text's label is a coin toss on any runtime, and two
        # of 256 such texts flipping would be 0.8 points "lost" by a path that agrees on every decided text.
        accuracy = float(correct[decided].mean())
        reference_accuracy = float((reference.argmax(1) == truth)[decided].mean())
        row.faithful = row.faithful and accuracy >= reference_accuracy - MAX_ACCURACY_DROP


def _chosen(row: Measurement, why: str) -> dict:
    backend, precision = row.config.split(":")
    return {"backend": backend, "precision": precision, "why": f"{row.config}, {why}"}


def _throughput(clf, sequences) -> float:
    """Sentences per second over length-sorted batches of `sequences` at BATCH, run back to back as a file job runs
    them: passes over the batches in one stream of calls, at least MIN_PASSES in a run, runs until TIMED_SECONDS are
    filled; all the texts over all the time. A backend that runs calls side by side (OpenVINO's streams) leaves a
    stream idle while the last calls of a run finish; a run of one pass, four batches of a half of the sample, paid
    that every pass (on the AVX2 EPYC, about 5% of openvino fp32's rate against ONNX Runtime's, note 30)."""
    from fastsentiment.classifier import length_sorted_batches

    batches = list(length_sorted_batches([len(ids) for ids in sequences], BATCH))

    def run(rows) -> None:
        batch = clf.encoder.pad([sequences[i] for i in rows])
        clf.backend.logits(batch.input_ids, batch.attention_mask)

    texts, spent, passes = 0, 0.0, MIN_PASSES
    while spent < TIMED_SECONDS:
        started = time.perf_counter()
        clf.run_batches(run, batches * passes)
        elapsed = time.perf_counter() - started
        texts, spent = texts + passes * len(sequences), spent + elapsed
        # the rest of the time in one more run, at the pace just measured
        passes = max(MIN_PASSES, math.ceil((TIMED_SECONDS - spent) / (elapsed / passes)))
    return texts / spent


def _latency_ms(clf, halves: tuple[list, list]) -> float:
    """Milliseconds for one text at a time: the geometric mean of the two halves' medians (p50), each over the typical
    texts of its half (each half is sorted by length, so its middle texts are its typical ones). One median over both
    halves at once is the boundary between two clusters of times: on the AVX2 EPYC it read 12.5 ms for onnx fp32 and
    for openvino fp32 alike, while onnx fp32 was quicker on either half (5.0 against 7.5 ms, 18.5 against 20.8)."""
    medians = []
    for half in halves:
        middle = len(half) // 2
        typical = half[max(0, middle - LATENCY_TEXTS // 2) : middle + LATENCY_TEXTS // 2]
        # Warm on these very shapes first: OpenVINO prepares its kernels once per new input shape, and a row timed
        # on shapes it has not met (a second model, loaded for latency) would pay that where the others do not.
        clf.logits_for_ids(typical, batch_size=1)
        times = []
        for ids in typical:
            started = time.perf_counter()
            clf.logits_for_ids([ids], batch_size=1)
            times.append((time.perf_counter() - started) * 1000)
        medians.append(float(np.median(times)))
    return float(np.sqrt(medians[0] * medians[1]))
