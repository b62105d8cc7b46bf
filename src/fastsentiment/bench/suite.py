"""`fastsentiment bench`: every configuration prepared, measured in its own process, repeated and compared."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

from fastsentiment.backends import availability, backend_names
from fastsentiment.backends.registry import check_device
from fastsentiment.bench.data import SST2_FOLDER, load_bench_data
from fastsentiment.bench.measure import PEER_PREFIX, PIPELINE, Spec
from fastsentiment.bench.peers import peer_configs
from fastsentiment.bench.report import machine
from fastsentiment.bench.run import (
    REFERENCE,
    add_agreement,
    check_config,
    default_configs,
    prepare_config,
    run_config,
    summarise,
)
from fastsentiment.errors import InputError, first_line
from fastsentiment.models import resolve_model

QUICK = {"speed_limit": 128, "labelled_limit": 100, "latency_samples": 30}
BATCH_SIZES, QUICK_BATCH_SIZES = "1,8,32,128", "1,32"  # where --batch-sizes is not given


@dataclass(frozen=True)
class BenchRequest:
    """What to measure: a model, configurations (None: every one that runs here), data and repeats."""

    model: str | None = None
    configs: list[str] | None = None
    data: str = SST2_FOLDER
    text_column: str | None = None  # None: 'sentence', else 'text'
    label_column: str | None = None  # None: 'label' where there is one
    batch_sizes: str | None = None  # None: BATCH_SIZES, or QUICK_BATCH_SIZES with `quick`; given, kept in both
    repeat: int = 1
    quick: bool = False
    timeout: float = 1800
    command: str = ""
    peers_python: str | None = None  # an interpreter with the peers installed (scripts/build_peers_venv.sh)
    device: str = "auto"  # where every row runs, the pipeline rows too


def run_bench(request: BenchRequest, progress: Callable[[str, int], None] = lambda message, done: None) -> dict:
    """Measure every configuration of `request`; `progress(message, runs_done)` follows along. Returns the report."""
    model_dir = resolve_model(request.model)
    request = replace(request, device=check_device(request.device))
    if not any(availability(name, request.device).runnable for name in backend_names()):
        raise InputError(
            f"--device {request.device}: no backend runs there on this machine "
            f"(see `fastsentiment backends --device {request.device}`)"
        )
    configs = resolved_configs(request)
    for config in configs:
        check_config(config, request.device)
    if not request.peers_python and any(c.startswith(PEER_PREFIX) for c in configs):
        raise InputError("peer rows run in the peers' environment: add --peers PYTHON (scripts/build_peers_venv.sh)")
    if request.peers_python and not shutil.which(request.peers_python):
        raise InputError(f"--peers {request.peers_python}: no such interpreter (build it: scripts/build_peers_venv.sh)")
    asked = request.batch_sizes
    if asked is None:
        asked = QUICK_BATCH_SIZES if request.quick else BATCH_SIZES
    try:
        sizes = sorted({int(size) for size in asked.split(",")})
    except ValueError:
        raise InputError(f"--batch-sizes takes comma-separated integers, got {asked!r}") from None
    if sizes[0] < 1:
        raise InputError(f"--batch-sizes must be at least 1, got {asked!r}")
    bench_data = load_bench_data(  # fails before any run
        request.data, request.text_column, request.label_column, model_dir.labels
    )
    spec = dict(
        model=str(model_dir.path),
        data=request.data,
        text_column=request.text_column,
        label_column=request.label_column,
        labels=model_dir.labels,
        batch_sizes=sizes,
        device=request.device,
    )
    if request.quick:
        spec.update(QUICK)
    rows, done = [], 0
    for config in configs:
        runs = []
        progress(f"{config}: preparing (exports are cached, not timed)", done)
        try:
            prepare_config(config, model_dir, request.device)
        except Exception as error:  # reported in its row, like any other failure of this configuration
            # first_line: an error that says nothing (a bare assert in an exporter) is named by its type
            rows.append({"config": config, "failed": f"prepare: {first_line(error)}"})
            done += request.repeat
            continue
        for attempt in range(request.repeat):
            progress(f"{config} (run {attempt + 1}/{request.repeat})", done)
            python = request.peers_python if config.startswith(PEER_PREFIX) else sys.executable
            runs.append(run_config(Spec(config=config, **spec), request.timeout, python))
            done += 1
        rows.append(summarise(runs))
    progress("done", done)
    add_agreement(rows)
    labelled = bench_data.labelled.texts if bench_data.labelled else []
    return {
        "model": str(model_dir.path),
        "model_name": model_dir.path.name,
        "model_hash": model_dir.content_hash,
        "data": request.data,
        "labelled_sentences": min(len(labelled), spec.get("labelled_limit") or len(labelled)),
        "speed_sentences": min(len(bench_data.speed.texts), spec.get("speed_limit") or len(bench_data.speed.texts)),
        "repeats": request.repeat,
        "command": request.command,
        "device": request.device,
        "machine": machine(),
        "rows": rows,
    }


def resolved_configs(request: BenchRequest) -> list[str]:
    """The configurations `run_bench` measures: those asked for, or every one that runs here with the reference."""
    if request.configs is not None:
        if not request.configs:
            raise InputError("--backends names no configuration; leave it out for every one that runs here")
        configs = list(request.configs)
        if request.peers_python and not any(c.startswith(PEER_PREFIX) for c in configs):
            configs += peer_configs()
        return configs
    configs = default_configs(request.device) + (peer_configs() if request.peers_python else [])
    if request.quick:  # one pipeline row, at 32: the batch the others' sent/s @32 and x pipeline compare at
        configs = [c for c in configs if c != PIPELINE] if f"{PIPELINE}:32" in configs else configs
    return configs if REFERENCE in configs else [REFERENCE, *configs]


def run_count(request: BenchRequest) -> int:
    """How many measured runs `run_bench` will make, for a progress bar."""
    return len(resolved_configs(request)) * request.repeat
