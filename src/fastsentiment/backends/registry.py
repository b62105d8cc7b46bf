"""Which backends exist, which can run here, and loading one by name.

Backend modules register their class with `@register`; the registry imports those modules
lazily (they import their runtimes only inside `load`), so listing backends is cheap and the
CLI never imports a backend directly. Third-party backends register through the
`fastsentiment.backends` entry-point group.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from fastsentiment.backends.base import Backend
from fastsentiment.errors import BackendError, missing_extra
from fastsentiment.models import ModelDir

# Order is preference: "auto" takes the first backend that can run the model here.
BUILTIN_MODULES = (
    "fastsentiment.backends.onnx_backend",
    "fastsentiment.backends.torch_backend",
    "fastsentiment.backends.openvino_backend",
    "fastsentiment.backends.ane_backend",
    "fastsentiment.backends.coreml_backend",
)
_REGISTRY: dict[str, type[Backend]] = {}
_loaded = False


def register(backend: type[Backend]) -> type[Backend]:
    _REGISTRY[backend.spec.name] = backend
    return backend


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
    for entry in entry_points(group="fastsentiment.backends"):
        register(entry.load())


def backend_names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    _load_all()
    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {name!r}; available: {', '.join(_REGISTRY)} (see `fastsentiment backends`)"
        )
    return _REGISTRY[name]


@dataclass(frozen=True)
class Availability:
    name: str
    runnable: bool
    reason: str


def availability(name: str, device: str = "auto") -> Availability:
    """Whether backend `name` can run on `device` here, and if not, why."""
    backend = get_backend(name)
    missing = backend.spec.missing_module()
    if missing:
        return Availability(
            name, False, f"'{missing}' not installed: pip install 'fastsentiment[{backend.spec.extra}]'"
        )
    problem = backend.device_problem(device)
    if problem:
        return Availability(name, False, problem)
    return Availability(name, True, "ready")


def load_backend(model: ModelDir, name: str = "auto", device: str = "auto", precision: str | None = None) -> Backend:
    """Load `model` on the named backend, or on the first one that runs here for "auto"."""
    if name == "auto":
        name = _first_runnable(device)
    backend = get_backend(name)
    spec = backend.spec
    missing = spec.missing_module()
    if missing:
        raise missing_extra(missing, spec.extra, f"the {spec.name} backend")
    if precision is not None and precision not in spec.precisions:
        raise BackendError(
            f"backend {spec.name} has no precision {precision!r}; choose one of {', '.join(spec.precisions)}"
        )
    if device != "auto" and device.split(":")[0] not in spec.devices:
        raise BackendError(f"backend {spec.name} does not run on {device!r}; its devices: {', '.join(spec.devices)}")
    problem = backend.device_problem(device)
    if problem:
        raise BackendError(f"backend {spec.name}: {problem}")
    # precision None lets the backend choose its default for the device (e.g. int8 on cpu, fp16 on cuda).
    return backend.load(model, device, precision)


def _first_runnable(device: str) -> str:
    reasons = []
    for name in backend_names():
        status = availability(name, device)
        if status.runnable:
            return name
        reasons.append(f"{name}: {status.reason}")
    raise BackendError("no backend can run here (" + "; ".join(reasons) + ")")
