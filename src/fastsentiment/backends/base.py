"""The one protocol every backend implements, and the description each backend declares.

A backend turns padded token ids into float32 logits for one model on one device at one
precision. Tokenization, batching, label mapping and scoring live above it (in `Classifier`), so
a new runtime is one file with one class.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from fastsentiment.models import ModelDir

log = logging.getLogger("fastsentiment")


# What a load is for, which `auto` picks a path for: batched texts, one text at a time, a one-off call, and a server
# (one text at a time until its queue fills, then batches).
WORKLOADS = ("throughput", "latency", "start", "serve")
# The workloads whose callers keep several calls in flight, for which a backend may run calls side by side.
BATCHED_WORKLOADS = ("throughput", "serve")


def usable_cpus() -> int:
    """CPUs this process may use, which is what runtimes should size thread pools by: the CPUs it may run on (its
    affinity), or fewer where its container's CPU quota allows less time than that (rounded up).

    Runtimes' own defaults count physical cores and can leave hyper-threads or container-granted CPUs idle. A quota
    (`docker run --cpus 2`, a Kubernetes CPU limit) leaves the affinity at every CPU of the host: thread pools sized
    by it would run many threads in the time of a few and be throttled by the kernel in every quota period.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity API
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU time this process's cgroups allow it, in CPUs: the tightest quota of its cgroup and the ancestors it
    can see (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`); None where none is set or none
    can be read (not Linux, no cgroup file system)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2, mounted at the root (on hybrid systems it holds no CPU controller)
            mount, read = root, _cpu_max
        elif "cpu" in controllers.split(","):  # cgroup v1: mounted as e.g. "cpu" or "cpu,cpuacct"
            mount, read = root / controllers, _cfs_quota
        else:
            continue
        quotas += [quota for directory in _visible_cgroups(mount, path) if (quota := read(directory)) is not None]
    return min(quotas, default=None)


def _visible_cgroups(mount: Path, path: str) -> list[Path]:
    """The process's cgroup directory under `mount` and its ancestors up to the mount. In a container the mount is
    often the container's own cgroup while /proc/self/cgroup names its path on the host: then the mount alone."""
    directory = mount / path.lstrip("/")
    if not directory.is_dir():
        return [mount]
    return [directory, *(parent for parent in directory.parents if parent.is_relative_to(mount))]


def _cpu_max(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _cfs_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read. Read once a process: a
    model load asks several times (the `auto` decision's file name and key, the int8 recipe)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# Where the NVIDIA driver lists the GPUs it drives, one folder each (its `information` file names the model).
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def visible_gpus() -> dict[str, Any] | None:
    """The NVIDIA GPUs a process here may compute on, read as cheaply as a start allows (no CUDA runtime loaded): the
    models the driver lists and CUDA_VISIBLE_DEVICES, which narrows them; None where the driver lists none (no GPU,
    or no NVIDIA driver)."""
    try:
        folders = sorted(NVIDIA_GPUS.iterdir())
    except OSError:
        return None
    models = []
    for folder in folders:
        try:
            information = (folder / "information").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = dict(line.partition(":")[::2] for line in information.splitlines())
        models.append(fields.get("Model", "").strip() or "unknown")
    if not models:
        return None
    return {"models": models, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX-512 bf16 or AMX). Without it bf16 is emulated: PyTorch's bf16
    autocast trained MPNet-base 37x slower than fp32 on an AVX2-only AMD EPYC (113 s against 3.1 s a step)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_computes_int8() -> bool:
    """Whether this CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX int8); any CPU that is
    not x86 is taken to (ARM's SDOT and its kin). Without one, x86 int8 kernels multiply with VPMADDUBSW: ONNX
    Runtime's block-wise int8 ran the built-in model at 172 sentences/s against fp32's 248 on an AVX2-only EPYC."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def inference_threads(requested: int | None = None) -> int:
    """Threads a backend computes with: `requested` (Classifier.load(threads=...), --threads), else the user's
    default $FASTSENTIMENT_THREADS, else usable_cpus()."""
    default = os.environ.get("FASTSENTIMENT_THREADS", "").strip()
    wanted = requested or (int(default) if default.isdigit() and int(default) > 0 else None)
    if not requested and default and wanted is None:
        _say_setting_ignored(default)
    cpus = usable_cpus()
    if wanted is None:
        return cpus
    if wanted > cpus:
        # More compute threads than CPUs only take turns on them (and spin waiting for each other).
        _say_threads_capped(wanted, cpus)
        return cpus
    return wanted


@functools.cache
def _say_setting_ignored(value: str) -> None:
    log.warning("FASTSENTIMENT_THREADS=%r is not a whole number of at least 1: ignored (every usable CPU)", value)


@functools.cache
def _say_threads_capped(wanted: int, cpus: int) -> None:
    log.warning("%d threads asked for, but this process may use %d CPUs: computing with %d", wanted, cpus, cpus)


def graph_feeds(input_names, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs an exported graph asks for: ids, mask, and all-zero token types (one segment) where it has them."""
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(input_ids)
    return feeds


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is and needs, readable without importing its runtime."""

    name: str
    description: str
    extra: str
    modules: tuple[str, ...]
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    default_precision: str
    # Whether `auto` measures it (not layouts meant for other hardware), and precisions it runs only on accelerators
    # or only on the CPU.
    tunable: bool = True
    accelerator_only: tuple[str, ...] = ()
    cpu_only: tuple[str, ...] = ()
    # Whether load() takes `workload` (one of WORKLOADS) and, for BATCHED_WORKLOADS, may return a backend whose
    # `parallel_calls` logits calls run at once, each on its own share of the threads.
    parallel: bool = False
    # Whether the runtime prepares its kernels for each input shape it meets, so that the first call at a new
    # (texts, tokens) shape costs more than its repeats (OpenVINO on the CPU: 4 to 8 ms more for the built-in model,
    # on each of its streams); a server pads its calls to fewer shapes and runs every one of them before it is ready
    # (serve/app.py `load_and_warm`).
    prepares_per_shape: bool = False

    def precision_runs_on(self, precision: str, device_kind: str) -> bool:
        """Whether `precision` is one of this backend's on a device of this kind (registry.kind_on says which kind
        "auto" is for a backend; taken here as the CPU)."""
        on_cpu = device_kind in ("auto", "cpu")
        excluded = self.accelerator_only if on_cpu else self.cpu_only
        return precision in self.precisions and precision not in excluded

    def precision_problem(self, precision: str, device_kind: str) -> str | None:
        """Why one of this backend's precisions does not run on a device of this kind, naming where it runs and
        what runs here instead; None where it runs (a precision the backend lacks is another check's)."""
        if precision not in self.precisions or self.precision_runs_on(precision, device_kind):
            return None
        where = [device for device in self.devices if self.precision_runs_on(precision, device)]
        instead = [other for other in self.precisions if self.precision_runs_on(other, device_kind)]
        problem = f"{self.name} {precision} runs on {_either(where) if where else 'none of its devices'}"
        return problem + (f"; on {device_kind} use {_either(instead)}" if instead else "")

    def missing_module(self) -> str | None:
        """The first runtime module that is not installed, if any (checked without importing it)."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                return module
        return None


@runtime_checkable
class Backend(Protocol):
    """A model loaded on one runtime, device and precision."""

    spec: ClassVar[BackendSpec]
    device: str
    precision: str

    @classmethod
    def load(cls, model: ModelDir, device: str, precision: str | None, threads: int | None = None) -> Backend:
        """Load `model` for `device` ("auto" picks the best present) at `precision` (None: the default),
        computing with `threads` threads (None: `inference_threads()`)."""
        ...

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        """Why `device` cannot be used on this machine, or None when it can."""
        ...

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Float32 logits [batch, labels] for int64 token ids and attention masks [batch, length]."""
        ...

    # Optional: `parallel_calls`, how many `logits` calls may run at once from different threads (default 1;
    # backends whose spec says `parallel`). Callers with several batches in hand run that many together.
    # Optional: `prepare(model, device, precision)`, a classmethod that builds cached artefacts
    # (exports) so that load() measures loading alone; benchmarks call it before timing.

    def explain(self) -> dict[str, Any]:
        """Where the model's operations actually run (devices, providers, precision), for `explain`."""
        ...


def parallel_calls(backend: Backend) -> int:
    """How many `logits` calls `backend` runs at once (1 unless it says otherwise)."""
    return max(1, int(getattr(backend, "parallel_calls", 1)))


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
