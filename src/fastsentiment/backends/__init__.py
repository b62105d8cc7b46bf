"""Runtimes that execute a model: one module per backend, all behind `Backend`."""

from fastsentiment.backends.base import Backend, BackendSpec
from fastsentiment.backends.registry import availability, backend_names, get_backend, load_backend, register

__all__ = ["Backend", "BackendSpec", "availability", "backend_names", "get_backend", "load_backend", "register"]
