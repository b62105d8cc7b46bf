"""Which backends exist, which can run here, and loading one by name.

Backend modules register their class with `@register`; the registry imports those modules
lazily (they import their runtimes only inside `load`), so listing backends is cheap and the
CLI never imports a backend directly. Third-party backends register through the
`fastsentiment.backends` entry-point group.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastsentiment.backends.base import Backend, BackendSpec
from fastsentiment.errors import BackendError, missing_extra
from fastsentiment.models import ModelDir

if TYPE_CHECKING:
    from fastsentiment.backends.auto import Choice

# Order is preference: "auto" takes the first backend that can run the model here.
BUILTIN_MODULES = (
    "fastsentiment.backends.onnx_backend",
    "fastsentiment.backends.torch_backend",
    "fastsentiment.backends.openvino_backend",
    "fastsentiment.backends.ane_backend",
    "fastsentiment.backends.coreml_backend",
)
_REGISTRY: dict[str, type[Backend]] = {}
_loaded: set[str] = set()
# The first thread to need the built-in backends imports them; another waits until the list is whole instead of
# reading a part of it ("unknown backend 'onnx'" for a web app's second loading thread). The import runs outside
# any lock of ours (a lock held across an import can deadlock with Python's own import locks).
_builtins_whole = threading.Event()
_builtins_claim = threading.Lock()
_builtins_loader: list[int] = []  # the thread importing them, which may list backends meanwhile


def register(backend: type[Backend]) -> type[Backend]:
    _REGISTRY[backend.spec.name] = backend
    return backend


def _load_builtins() -> None:
    if _builtins_whole.is_set():
        return
    with _builtins_claim:
        first = not _builtins_loader
        if first:
            _builtins_loader.append(threading.get_ident())
    if first:
        try:
            for module in BUILTIN_MODULES:
                importlib.import_module(module)
        finally:
            _builtins_whole.set()
    elif _builtins_loader[0] != threading.get_ident():
        _builtins_whole.wait()


def _load_plugins() -> None:
    # Reading installed distributions' metadata costs tens of milliseconds at start-up, so it
    # happens only when a name is not built in or when every backend is listed.
    if "plugins" in _loaded:
        return
    _loaded.add("plugins")
    from importlib.metadata import entry_points

    for entry in entry_points(group="fastsentiment.backends"):
        register(entry.load())


def _in_preference_order() -> list[str]:
    """Built-in backends in BUILTIN_MODULES' order, whichever was imported first (`train` imports torch's before the
    list is made, and torch then came first for `auto`), then plugins as they registered."""
    builtin = {module: place for place, module in enumerate(BUILTIN_MODULES)}
    return sorted(_REGISTRY, key=lambda name: builtin.get(_REGISTRY[name].__module__, len(builtin)))


def backend_names() -> list[str]:
    _load_builtins()
    _load_plugins()
    return _in_preference_order()


def device_kind(device: str) -> str:
    """ "cuda:1" is a device of kind cuda."""
    return device.split(":")[0]


def default_batch_size(device: str, serving: bool = False) -> int:
    """Texts per model call where the caller names none.

    On a CPU 32, where bigger batches gain nothing (the built-in model's torch fp32 on length-sorted batches: 264
    sentences/s at 32, 251 at 128); 8 for `serving`, the calls a server's gathered batch runs as (requests arrive in
    random length order, and bigger calls would mostly compute padding). On a CUDA GPU 256 for both: at 32 it waits
    on the CPU launching its kernels (an H200, torch fp32: 8,058 sentences/s at 32, 26,438 at 128, 40,044 at 512;
    fp16 96,341 at 512; docs/benchmarks.md, GPU), and 256 rather than 512 leaves room for 512-token windows of
    bigger models on smaller GPUs. Elsewhere (MPS, Core ML's devices) not measured: as on a CPU.
    """
    if device_kind(device) == "cuda":
        return 256
    return 8 if serving else 32


def device_index(device: str) -> int | None:
    """ "cuda:1" is the device numbered 1 of its kind; "cuda" names none (the runtime's default, its first)."""
    kind, separator, index = device.partition(":")
    if not separator:
        return None
    if not (index.isascii() and index.isdigit()):
        example = "cpu:0" if kind == "cpu" else f"{kind}:1"  # the CPU is one device
        raise BackendError(f"device {device!r}: after {kind}: comes the device's number, as in {example}")
    return int(index)


def _runs_on(spec: BackendSpec, device: str) -> bool:
    """Whether `device` ("auto" included) is one of the backend's kinds of device."""
    return device == "auto" or device_kind(device) in spec.devices


def kind_on(backend: type[Backend], device: str) -> str:
    """The kind of device `backend` runs on when asked for `device`: "auto" is the CPU, unless the backend picks its
    own (`auto_device()`: torch takes the GPU where there is one). Call it once the backend is known to run."""
    if device != "auto":
        return device_kind(device)
    pick = getattr(backend, "auto_device", None)
    return device_kind(pick()) if pick is not None else "cpu"


def check_device(device: str) -> str:
    """`device` as the rest of the tool names it, after refusing one no backend knows (a typo would otherwise read
    as "backend X does not run on it"). The CPU is one device: "cpu:0" is "cpu" (under its own name it missed the
    decisions `tune` measured for the CPU and took the first backend that runs), and "cpu:1" names none."""
    _load_builtins()
    known = {"auto"} | {d for backend in _REGISTRY.values() for d in backend.spec.devices}
    if device_kind(device) not in known:  # a plugin's device, perhaps: only then is their metadata read
        known |= {d for name in backend_names() for d in get_backend(name).spec.devices}
    if device_kind(device) not in known:
        raise BackendError(f"unknown device {device!r}; choose {', '.join(sorted(known))}")
    index = device_index(device)  # "cuda:first" is refused here, whatever its kind
    if device_kind(device) == "cpu" and index not in (None, 0):
        raise BackendError(f"device {device!r}: the CPU is one device, cpu (all of its cores)")
    return canonical_device(device)


def canonical_device(device: str) -> str:
    """The name decisions are kept under: "cpu:0" is "cpu" (under its own name it missed the decisions `tune`
    measured for the CPU, and took the first backend that runs)."""
    return "cpu" if device == "cpu:0" else device


def get_backend(name: str) -> type[Backend]:
    _load_builtins()
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {name!r}; available: {', '.join(_in_preference_order())} (see `fastsentiment backends`)"
        )
    return _REGISTRY[name]


@dataclass(frozen=True)
class Availability:
    name: str
    runnable: bool
    reason: str


def availability(name: str, device: str = "auto", model: ModelDir | None = None) -> Availability:
    """Whether backend `name` can run on `device` here (and run `model`, when given), and if not, why."""
    backend = get_backend(name)
    missing = backend.spec.missing_module()
    if missing:
        return Availability(
            name, False, f"'{missing}' not installed: pip install 'fastsentiment[{backend.spec.extra}]'"
        )
    if not _runs_on(backend.spec, device):
        return Availability(name, False, f"runs on {', '.join(backend.spec.devices)}, not {device!r}")
    problem = backend.device_problem(device) or (model_problem(name, model) if model is not None else None)
    if problem:
        return Availability(name, False, problem)
    return Availability(name, True, "ready")


def model_problem(name: str, model: ModelDir) -> str | None:
    """Why backend `name` cannot run `model`'s architecture, or None when it can.

    The architecture's description names backends it cannot run on; a backend tied to one layout
    (the Neural-Engine ones) may also declare `model_problem(model)` itself.
    """
    backend = get_backend(name)
    own_check = getattr(backend, "model_problem", None)
    problem = own_check(model) if own_check is not None else None
    return problem or model.architecture.unsupported_backends.get(name)


def load_backend(
    model: ModelDir,
    name: str = "auto",
    device: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    workload: str = "throughput",
    measure: bool = False,
) -> Backend:
    """Load `model` on the named backend; "auto" resolves by `workload` (see backends.auto), measuring if asked."""
    name, precision = named_precision(name, precision)
    device = check_device(device)
    if name == "auto":
        name, precision = auto_choice(model, device, precision, workload, measure, threads).path
    # precision None lets the backend choose its default for the device (e.g. int8 on cpu, fp16 on cuda).
    backend = checked_backend(name, device, precision, model)
    if backend.spec.parallel:
        return backend.load(model, device, precision, threads, workload=workload)
    return backend.load(model, device, precision, threads)


def auto_choice(
    model: ModelDir,
    device: str,
    precision: str | None,
    workload: str = "throughput",
    measure: bool = False,
    threads: int | None = None,
) -> Choice:
    """What "auto" stands for and why: with a precision given, the fastest faithful backend measured with it (the
    cached decision's table, measured first if `measure` and none is cached), else the unmeasured choice where it
    has that precision, else the first backend `auto` chooses from that has it and was not measured below the
    fidelity bar; an error where every path measured with it was; without a precision, `auto.choose`'s."""
    from fastsentiment.backends.auto import below_the_bar, cached_decision, choose, measured_with_precision

    device = canonical_device(device)
    if precision is None:
        return choose(model, device, workload, measure, threads)
    measured = measured_with_precision(model, device, precision, workload, threads)
    if measured is None and measure and workload != "start":
        choose(model, device, workload, measure=True, threads=threads)  # the table of every path, cached
        measured = measured_with_precision(model, device, precision, workload, threads)
    if measured is not None:
        return measured
    decision = cached_decision(model, device, threads=threads) or {}
    refusal = below_the_bar(decision, precision, device, model) if decision else None
    if refusal:
        raise BackendError(refusal)
    unmeasured = choose(model, device, workload, threads=threads)
    if unmeasured.precision == precision:  # the interim choice has it: "auto:bf16" is then plain auto
        return unmeasured
    return first_with_precision(device, precision, model, decision)


def first_with_precision(
    device: str, precision: str, model: ModelDir | None = None, decision: dict | None = None
) -> Choice:
    """The first backend `auto` chooses from that runs `precision` on `device` and that `decision` (a cached `tune`
    table) did not measure below the fidelity bar, as a `Choice`; an error naming what does run, where none does."""
    from fastsentiment.backends.auto import Choice, candidates, measured_configs, rejected_configs

    decision = decision or {}
    rejected, measured_here = rejected_configs(decision), measured_configs(decision, precision)
    # The paths `tune` measures, where any runs on the device: a backend it leaves out (ane: 16x slower than torch on
    # a CPU) is loaded by naming it, not by `auto`; Core ML's ane device has only such backends.
    tunable_here = bool(candidates(device, model))
    offered, named_only = set(), []
    for name in backend_names():
        backend = get_backend(name)
        if not availability(name, device, model).runnable:
            continue
        kind = kind_on(backend, device)
        if tunable_here and not backend.spec.tunable:
            if backend.spec.precision_runs_on(precision, kind):
                named_only.append(name)
            continue
        offered |= {other for other in backend.spec.precisions if backend.spec.precision_runs_on(other, kind)}
        config = f"{name}:{precision}"
        if not backend.spec.precision_runs_on(precision, kind) or config in rejected:
            continue
        if config in measured_here:  # a one-off call, which takes no measured path by speed
            why = f"the first backend with {precision}, measured faithful {decision['measured_at']}"
        elif measured_here:
            why = f"the first backend with {precision}; not measured with it here"
        else:
            why = f"the first backend with {precision}; none measured with it: fastsentiment tune"
        return Choice(name, precision, why)
    where = "here" if device == "auto" else f"on {device}"
    others = sorted(offered - {precision})
    message = f"no backend `auto` chooses from runs {precision} {where}"
    if others:
        message += f"; use {others[0] if len(others) == 1 else ', '.join(others[:-1]) + ' or ' + others[-1]}"
    if named_only:
        message += f"{', or' if others else ';'} name one that does: -b {' or -b '.join(named_only)}"
    elif not others:
        message += f" (see `fastsentiment backends --device {device}`)"
    raise BackendError(message)


def named_precision(name: str | None, precision: str | None) -> tuple[str, str | None]:
    """A backend named with its precision, "onnx:int8", as `bench`, `compare` and `tune` write them, split in two; a
    precision given beside it must be the same. None is "auto", as None is the default device and precision."""
    if name is None:
        return "auto", precision
    if not isinstance(name, str):
        raise BackendError(f"backend must be a name such as 'auto' or 'onnx:int8', got {name!r}")
    name, colon, named = name.partition(":")
    if not colon:
        return name, precision
    if not named:
        raise BackendError(f"backend {name!r}: no precision after the colon (e.g. {name}:fp32)")
    if precision is not None and precision != named:
        raise BackendError(f"backend {name}:{named} and precision {precision!r} disagree; give the precision once")
    return name, named


def checked_backend(
    name: str = "auto", device: str = "auto", precision: str | None = None, model: ModelDir | None = None
) -> type[Backend]:
    """The backend class that `load_backend` would use, after every check that can fail before loading."""
    name, precision = named_precision(name, precision)
    if name == "auto":  # with a precision, a backend that has it (serve -p bf16 is openvino's, not onnx's)
        name = first_with_precision(device, precision, model).backend if precision else first_runnable(device, model)
    backend = get_backend(name)
    spec = backend.spec
    missing = spec.missing_module()
    if missing:
        raise missing_extra(missing, spec.extra, f"the {spec.name} backend")
    if precision is not None and precision not in spec.precisions:
        raise BackendError(
            f"backend {spec.name} has no precision {precision!r}; choose one of {', '.join(spec.precisions)}"
        )
    if not _runs_on(spec, device):
        raise BackendError(f"backend {spec.name} does not run on {device!r}; its devices: {', '.join(spec.devices)}")
    problem = backend.device_problem(device)
    if problem:
        raise BackendError(f"backend {spec.name}: {problem}")
    # before an export of minutes for a precision the device cannot run (bench prepared onnx fp16 on a CPU)
    if precision is not None and (problem := spec.precision_problem(precision, kind_on(backend, device))):
        raise BackendError(problem)
    if model is not None and (problem := model_problem(name, model)):
        raise BackendError(f"backend {spec.name} cannot run {model.path.name}: {problem}")
    return backend


def first_runnable(device: str, model: ModelDir | None = None) -> str:
    """The first backend, in preference order, that runs here; plugins are consulted only if no built-in does."""
    _load_builtins()
    reasons: dict[str, str] = {}
    for candidates in (_in_preference_order(), backend_names()):
        for name in candidates:
            if name in reasons:
                continue
            status = availability(name, device, model)
            if status.runnable:
                return name
            reasons[name] = status.reason
    raise BackendError("no backend can run here (" + "; ".join(f"{n}: {r}" for n, r in reasons.items()) + ")")


def prepare_backend(model: ModelDir, name: str = "auto", device: str = "auto", precision: str | None = None) -> None:
    """Build what the backend caches (exports) now, so that loading it later measures loading alone."""
    name, precision = named_precision(name, precision)
    if name == "auto":
        name, precision = auto_choice(model, device, precision).path
    prepare = getattr(checked_backend(name, device, precision, model), "prepare", None)
    if prepare is not None:
        prepare(model, device, precision)
