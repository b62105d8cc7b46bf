"""Run every configuration in its own subprocess, repeat, and compare each against the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fastsentiment.backends import availability
from fastsentiment.backends.registry import checked_backend, prepare_backend
from fastsentiment.bench.measure import PEER_PREFIX, PIPELINE, Spec, percentile
from fastsentiment.errors import BackendError, FastSentimentError

REFERENCE = "torch:fp32"  # Hugging Face fp32: what every other configuration is compared with


def default_configs(device: str = "auto") -> list[str]:
    """What `auto` resolves to, every backend that runs on `device` at its default precision, the reference, the
    pipelines."""
    from fastsentiment.backends import backend_names

    configs = ["auto", *(name for name in backend_names() if availability(name, device).runnable)]
    if availability("torch", device).runnable:
        configs = [REFERENCE, *(c for c in configs if c != "torch"), f"{PIPELINE}", f"{PIPELINE}:32"]
    return configs


def check_config(config: str, device: str = "auto") -> None:
    """Fail before anything runs: unknown backend, unknown precision, a backend that does not run on `device`,
    runtime not installed. (A precision the device lacks, onnx:fp16 on a CPU, fails in its row, saying why.)"""
    name, _, precision = config.partition(":")
    if config.startswith(PEER_PREFIX):
        from fastsentiment.bench.peers import peer_class

        peer_class(config)
        return
    if name == PIPELINE:
        if precision and not (precision.isascii() and precision.isdigit() and int(precision) >= 1):
            raise BackendError(f"{config}: write pipeline or pipeline:BATCH_SIZE (1 or more)")
        if not availability("torch").runnable:
            raise BackendError(f"{config}: the pipeline reference needs the torch extra")
        return
    try:
        checked_backend(name, device, precision or None)
    except FastSentimentError as error:
        raise BackendError(f"{config}: {error}") from None


def prepare_config(config: str, model, device: str = "auto") -> None:
    """Build what a backend caches (exports) before it is timed; backends without a cache need nothing."""
    name, _, precision = config.partition(":")
    if config.startswith(PEER_PREFIX):  # converted inside the peers' own environment, before timing
        return
    if name == "auto" and not precision:
        from fastsentiment.backends.registry import auto_choice

        # A benchmark is worth measuring for: the auto row then runs the decisions it measures, the throughput one
        # on batches and the latency one on single texts.
        name, precision = auto_choice(model, device, None, "throughput", measure=True).path
        quickest, quickest_precision = auto_choice(model, device, None, "latency", measure=True).path
        prepare_backend(model, quickest, device, quickest_precision)
    if name != PIPELINE:
        prepare_backend(model, name, device, precision or None)


def run_config(spec: Spec, timeout: float | None = None, python: str = sys.executable) -> dict:
    """Measure one configuration in a fresh `python` interpreter; a failure becomes a row with its reason."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        try:
            result = subprocess.run(
                [python, "-m", "fastsentiment.bench.measure", json.dumps(asdict(spec)), str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "true"},
            )
        except subprocess.TimeoutExpired:
            return {"config": spec.config, "failed": f"timed out after {timeout:g} s"}  # not "0 s" for 0.001
        if result.returncode != 0 or not out.is_file():
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            return {"config": spec.config, "failed": lines[-1] if lines else f"exit code {result.returncode}"}
        return json.loads(out.read_text())


def summarise(runs: list[dict]) -> dict:
    """Median (and min-max spread) over repeats of one configuration."""
    ok = [run for run in runs if "failed" not in run]
    if not ok:
        return {"config": runs[0]["config"], "failed": runs[0]["failed"]}
    first = ok[0]
    keys = ("config", "backend", "precision", "latency_config", "device", "speed_sentences", "rss_source")
    summary = {key: first[key] for key in keys if key in first}
    for key in ("load_s", "tokenize_s", "peak_rss_mb", "import_and_data_s", "peak_gpu_mb"):
        if key not in first:
            continue
        values = [run[key] for run in ok]
        summary[key] = float(np.median(values))
        summary[f"{key}_spread"] = [float(min(values)), float(max(values))]
    latencies = [value for run in ok for value in run["latency_ms"]]
    summary["latency_ms"] = {q: percentile(latencies, q) for q in (50, 90, 99)}
    summary["latency_samples"] = latencies
    summary["throughput"] = {
        key: float(np.median([run["throughput"][key] for run in ok])) for key in first["throughput"]
    }
    summary["throughput_spread"] = {
        key: [float(min(run["throughput"][key] for run in ok)), float(max(run["throughput"][key] for run in ok))]
        for key in first["throughput"]
    }
    if "accuracy" in first:
        summary["accuracy"] = first["accuracy"]
    summary["labelled_logits"] = first["labelled_logits"]
    summary["repeats"] = len(ok)
    if failed := [run["failed"] for run in runs if "failed" in run]:  # the row is of fewer runs than asked: said
        summary["failed_runs"] = failed
    return summary


def add_agreement(rows: list[dict]) -> None:
    """Label agreement and max |Δlogit| of every row against the reference row of the same run."""
    # `torch` alone is torch at its default precision, fp32: the reference too
    reference = next((r for r in rows if r.get("config") in (REFERENCE, "torch") and "failed" not in r), None)
    if reference is None or not reference["labelled_logits"]:
        return
    expected = np.asarray(reference["labelled_logits"])
    for row in rows:
        if "failed" in row or not row.get("labelled_logits"):
            continue
        logits = np.asarray(row["labelled_logits"])
        row["agreement"] = float((logits.argmax(1) == expected.argmax(1)).mean())
        row["max_abs_logit_delta"] = float(np.abs(logits - expected).max())
