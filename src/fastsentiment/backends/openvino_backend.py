"""`openvino`: Intel OpenVINO on the CPU, from the plain ONNX export, in fp32 or bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastsentiment.backends.base import BackendSpec, inference_threads
from fastsentiment.backends.registry import register
from fastsentiment.cache import cache_root
from fastsentiment.errors import BackendError
from fastsentiment.models import ModelDir

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# int8: weights stored as 8-bit blocks (MatMulNBits), which OpenVINO runs as compressed fully-connected
# layers; everything else computes in bf16 where the CPU has it. On a 2-core EPYC without AMX (built-in
# model, `fastsentiment bench`) it cut batch-1 p50 latency from 4.5 to 3.3 ms but not batch-32 throughput
# (590 vs 623 sentences/s); agreement with fp32 on SST-2 dev stays >= 99% (tests/test_builtin_model.py).
WEIGHT_FILES = {"fp32": "plain", "bf16": "plain", "int8": "plain-int8"}


def compiled_model_cache() -> Path:
    """Where OpenVINO keeps compiled models, so that a second load skips compilation."""
    return cache_root() / "openvino-compiled"


@register
class OpenvinoBackend:
    spec = BackendSpec(
        name="openvino",
        description="OpenVINO on the CPU (bf16 where the CPU has AVX-512 bf16 or AMX)",
        extra="openvino",
        modules=("openvino",),
        devices=("cpu",),
        precisions=("bf16", "fp32", "int8"),
        default_precision="bf16",
    )

    def __init__(self, compiled, feeds: list[str], precision: str) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._feeds = feeds
        self.device = "cpu"
        self.precision = precision

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        return None if device in ("auto", "cpu") else f"openvino runs on cpu here, not {device!r}"

    @classmethod
    def prepare(cls, model: ModelDir, device: str, precision: str | None) -> None:
        """Export the ONNX graph OpenVINO reads into the cache now, so that load() measures loading alone."""
        from fastsentiment.backends.onnx_backend import onnx_file

        onnx_file(model, WEIGHT_FILES[precision or "bf16"])

    @classmethod
    def load(cls, model: ModelDir, device: str, precision: str | None) -> OpenvinoBackend:
        import openvino as ov

        from fastsentiment.backends.onnx_backend import onnx_file

        core = ov.Core()
        has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        precision = precision or ("bf16" if has_bf16 else "fp32")
        if precision == "bf16" and not has_bf16:
            raise BackendError("this CPU has no bf16 support (AVX-512 bf16 or AMX); use --precision fp32")
        # The plain export: OpenVINO's ONNX reader does not take every fused ONNX Runtime contrib op.
        network = core.read_model(str(onnx_file(model, WEIGHT_FILES[precision])))
        compute = precision if precision != "int8" else ("bf16" if has_bf16 else "fp32")
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[compute],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": str(inference_threads()),
            # OpenVINO keys its blobs by graph, config and runtime version, so one folder serves all models.
            "CACHE_DIR": str(compiled_model_cache()),
        }
        compiled = core.compile_model(network, "CPU", config)
        return cls(compiled, [port.get_any_name() for port in compiled.inputs], precision)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._feeds:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        result = self._request.infer(feeds)
        return np.asarray(result[self._compiled.output("logits")], dtype=np.float32)

    def explain(self) -> dict:
        """The execution device and the precision OpenVINO actually runs each operation in."""
        from collections import Counter

        import openvino as ov

        # Constants and reshapes carry no arithmetic; count the operations that compute.
        runtime_precisions: Counter = Counter()
        for op in self._compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "runtimePrecision" in info and info["layerType"].astype(str) not in ("Const", "Parameter", "Result"):
                runtime_precisions[f"{info['layerType'].astype(str)} {info['runtimePrecision'].astype(str)}"] += 1
        return {
            "runtime": f"openvino {ov.get_version()}",
            "execution devices": ", ".join(self._compiled.get_property("EXECUTION_DEVICES")),
            "inference precision hint": str(self._compiled.get_property("INFERENCE_PRECISION_HINT")),
            "operations (type, runtime precision)": dict(sorted(runtime_precisions.items())),
        }
