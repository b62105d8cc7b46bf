"""`coreml`: the ANE layout compiled by CoreML, on the Apple Neural Engine, GPU or CPU (macOS only)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fastsentiment.backends.base import BackendSpec
from fastsentiment.backends.registry import register
from fastsentiment.errors import BackendError
from fastsentiment.models import ModelDir
from fastsentiment.models.architectures import ane_layout_problem

COMPUTE_UNITS = {"auto": "ALL", "ane": "CPU_AND_NE", "gpu": "CPU_AND_GPU", "cpu": "CPU_ONLY"}


@register
class CoremlBackend:
    spec = BackendSpec(
        name="coreml",
        description="CoreML ML program of the ANE layout (Neural Engine; predicts on macOS only)",
        extra="coreml",
        modules=("coremltools", "torch"),
        devices=("ane", "gpu", "cpu"),
        precisions=("fp16",),
        default_precision="fp16",
        tunable=False,
    )

    def __init__(self, mlmodel, lengths: list[int], path: Path, device: str) -> None:
        self._model = mlmodel
        self._lengths = lengths
        self.path = path
        self.device = device
        self.precision = "fp16"

    @classmethod
    def model_problem(cls, model: ModelDir) -> str | None:
        return ane_layout_problem(model.model_type, model.config)

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        if sys.platform != "darwin":
            return (
                f"CoreML predicts on macOS only (this is {sys.platform}); "
                "export here with `fastsentiment export coreml` and run it on a Mac"
            )
        return None

    @classmethod
    def load(cls, model: ModelDir, device: str, precision: str | None, threads: int | None = None) -> CoremlBackend:
        problem = cls.device_problem(device)
        if problem:
            raise BackendError(problem)
        from fastsentiment.cache import cached_file
        from fastsentiment.export import EXPORTING
        from fastsentiment.export.coreml import DEFAULT_LENGTH, export_coreml, import_coremltools

        ct = import_coremltools()

        lengths = package_lengths(model, DEFAULT_LENGTH)
        target = cached_package(model)
        if not target.exists():
            with EXPORTING:  # torch's tracer is one per process
                if not target.exists():
                    cached_file(target, lambda scratch: export_coreml(model, scratch, lengths))
        units = getattr(ct.ComputeUnit, COMPUTE_UNITS[device])
        return cls(ct.models.MLModel(str(target), compute_units=units), lengths, target, device)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        # The package has enumerated lengths: pad each batch to the smallest one that holds it, or else that holds its
        # texts (padding a caller added, `pad_to_multiple_of`, may overshoot the longest length).
        used = int(attention_mask.sum(axis=1).max())
        width = next((n for n in self._lengths if n >= input_ids.shape[1]), None)
        width = width or next((n for n in self._lengths if n >= used), None)
        if width is None:
            raise BackendError(f"the CoreML model takes at most {self._lengths[-1]} tokens")
        ids = np.zeros((input_ids.shape[0], width), dtype=np.int32)
        mask = np.zeros_like(ids)
        ids[:, :used] = input_ids[:, :used]
        mask[:, :used] = attention_mask[:, :used]
        rows = [{"input_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1]} for i in range(len(ids))]
        outputs = self._model.predict(rows)  # a list of inputs is one batched prediction
        return np.concatenate([np.asarray(out["logits"], dtype=np.float32).reshape(1, -1) for out in outputs])

    def explain(self) -> dict:
        """Per-operation compute devices from CoreML's compute plan (Neural Engine / GPU / CPU)."""
        from collections import Counter

        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan

        plan = MLComputePlan.load_from_path(
            self._model.get_compiled_model_path(), getattr(ct.ComputeUnit, COMPUTE_UNITS[self.device])
        )
        devices: Counter = Counter()
        for operation in plan.model_structure.program.functions["main"].block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
            if usage is not None:
                devices[
                    type(usage.preferred_compute_device).__name__.removeprefix("ML").removesuffix("ComputeDevice")
                ] += 1
        return {
            "runtime": f"coremltools {ct.__version__}",
            "file": str(self.path),
            "operations per compute device": dict(devices),
        }


def package_lengths(model: ModelDir, longest: int) -> list[int]:
    """The sequence lengths of the package this backend exports: 32, 64 and `longest` (each within what the model
    takes), or the longest alone for an architecture whose package holds one length."""
    lengths = sorted({min(length, model.max_length) for length in (32, 64, longest)})
    return lengths[-1:] if model.architecture.coreml_one_length else lengths


def cached_package(model: ModelDir) -> Path:
    """Where the cache keeps `model`'s CoreML package: by its content and its architecture's ANE-layout revision
    (packages of the first revision kept the name they had before there were revisions)."""
    from fastsentiment.cache import cache_root

    revision = model.architecture.ane_revision
    folder = model.content_hash[:32] + ("" if revision == 1 else f"-a{revision}")
    return cache_root() / "coreml" / folder / "model.mlpackage"
