"""`onnx`: ONNX Runtime, the default on CPU (dynamic int8) and an fp16/fp32 path on CUDA.

The inference path needs only onnxruntime, tokenizers and numpy. torch is imported once per model
and precision, to export into the cache; after that, loading a model is opening a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastsentiment.backends.base import BackendSpec, graph_feeds, inference_threads
from fastsentiment.backends.registry import device_index, device_kind, register
from fastsentiment.cache import open_or_rebuild
from fastsentiment.errors import BackendError
from fastsentiment.models import ModelDir

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session_options(threads: int | None = None):
    """The ONNX Runtime settings of every session we open: full graph optimisation, our thread count, quiet logs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = inference_threads(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


@register
class OnnxBackend:
    spec = BackendSpec(
        name="onnx",
        description="ONNX Runtime (int8 on CPU by default; fp16 on CUDA)",
        extra="onnx",
        modules=("onnxruntime",),
        devices=("cpu", "cuda"),
        precisions=("int8", "int8-dynamic", "fp32", "fp16"),
        default_precision="int8",
        accelerator_only=("fp16",),
        cpu_only=("int8", "int8-dynamic"),
    )

    def __init__(self, session, device: str, precision: str, path: Path) -> None:
        self._session = session
        self._feeds = [node.name for node in session.get_inputs()]
        self.device = device
        self.precision = precision
        self.path = path

    @classmethod
    def model_problem(cls, model: ModelDir) -> str | None:
        return export_problem(model, ("int8", "fp16"))  # the CPU's default, or the GPU's

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        kind = device.split(":")[0]
        if kind in ("auto", "cpu"):
            return None
        import onnxruntime

        if kind == "cuda" and PROVIDERS["cuda"] not in onnxruntime.get_available_providers():
            return "CUDAExecutionProvider is not available (install onnxruntime-gpu and CUDA)"
        return None

    @classmethod
    def prepare(cls, model: ModelDir, device: str, precision: str | None) -> None:
        """Export into the cache now, so that a later load() measures loading alone."""
        device = "cpu" if device == "auto" else device.split(":")[0]
        onnx_file(model, precision or ("fp16" if device == "cuda" else "int8"))

    @classmethod
    def load(cls, model: ModelDir, device: str, precision: str | None, threads: int | None = None) -> OnnxBackend:
        device = "cpu" if device == "auto" else device
        kind = device_kind(device)
        precision = precision or ("fp16" if kind == "cuda" else "int8")
        if problem := cls.spec.precision_problem(precision, kind):
            raise BackendError(problem)
        return open_or_rebuild(
            onnx_file(model, precision),
            lambda path: cls.open(path, device, precision, threads),
            lambda: onnx_file(model, precision),
        )

    @classmethod
    def open(
        cls, path: Path, device: str = "cpu", precision: str = "custom", threads: int | None = None
    ) -> OnnxBackend:
        """A session on an ONNX file with the settings every onnx load uses (benchmarks open variants with it)."""
        import onnxruntime

        options = session_options(threads)
        index = device_index(device)
        provider = PROVIDERS[device_kind(device)]
        providers = [provider if index is None else (provider, {"device_id": index})]
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        return cls(session, device, precision, Path(path))

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self._session.run(["logits"], graph_feeds(self._feeds, input_ids, attention_mask))
        return logits.astype(np.float32, copy=False)

    def explain(self) -> dict:
        """Nodes per execution provider, read from ONNX Runtime's own profile of one inference."""
        import json
        import tempfile
        from collections import Counter

        import onnxruntime

        options = session_options()
        options.enable_profiling = True
        with tempfile.TemporaryDirectory() as scratch:
            options.profile_file_prefix = str(Path(scratch) / "profile")
            # With each provider's options: the names alone would profile a load on cuda:1 on GPU 0.
            provider_options = self._session.get_provider_options()
            providers = [(name, provider_options.get(name, {})) for name in self._session.get_providers()]
            session = onnxruntime.InferenceSession(str(self.path), options, providers=providers)
            # Token 0 is in every vocabulary, however small; two positions, in every model, however few it has.
            ids = np.zeros((1, 2), dtype=np.int64)
            session.run(["logits"], graph_feeds(self._feeds, ids, np.ones_like(ids)))
            events = json.loads(Path(session.end_profiling()).read_text())
        nodes = {}
        for event in events:
            args = event.get("args", {})
            if event.get("cat") == "Node" and "provider" in args:
                nodes[event["name"].removesuffix("_kernel_time")] = (args["provider"], args.get("op_name", "?"))
        providers = Counter(provider for provider, _ in nodes.values())
        operators = Counter(f"{op} @ {provider}" for provider, op in nodes.values())
        return {
            "runtime": f"onnxruntime {onnxruntime.__version__}",
            "file": str(self.path),
            "precision": self.precision,
            "nodes per execution provider": dict(providers),
            "operators": dict(sorted(operators.items())),
        }


def onnx_file(model: ModelDir, precision: str) -> Path:
    """The cached export of `model` at `precision`, exporting it first if needed."""
    from fastsentiment.cache import cached_file
    from fastsentiment.export.onnx import int8_dynamic_variant

    variant = int8_dynamic_variant() if precision == "int8-dynamic" else precision
    target = export_folder(model) / f"model-{variant}.onnx"
    if target.is_file():
        return target
    from fastsentiment.export import EXPORTING
    from fastsentiment.export.onnx import export_onnx

    with EXPORTING:  # a thread that waited for another's export of this file finds it made
        return cached_file(target, lambda scratch: export_onnx(model, scratch, variant))


def export_folder(model: ModelDir) -> Path:
    """Where the cache keeps `model`'s ONNX exports (keyed by its content and the exporter's revision)."""
    from fastsentiment.cache import cache_root
    from fastsentiment.export.onnx import export_revision

    return cache_root() / "onnx" / f"{model.content_hash[:32]}-r{export_revision(model)}"


def export_problem(model: ModelDir, variants: tuple[str, ...]) -> str | None:
    """Why this install cannot run `model` on a backend that reads its ONNX export at its default precision: none of
    `variants` is cached, and making one needs torch, transformers and onnx (the export extra), which an `[onnx]`
    install lacks. Checked without importing."""
    import importlib.util

    from fastsentiment.export.onnx import EXPORT_MODULES

    missing = next((module for module in EXPORT_MODULES if importlib.util.find_spec(module) is None), None)
    if missing is None:
        return None
    if any((export_folder(model) / f"model-{variant}.onnx").is_file() for variant in variants):
        return None
    return f"its first run exports the model to ONNX, which needs '{missing}': pip install 'fastsentiment[export]'"
