"""`openvino`: Intel OpenVINO on the CPU, from the plain ONNX export, in fp32 or bf16."""

from __future__ import annotations

import os
import queue
from pathlib import Path

import numpy as np

from fastsentiment.backends.base import BATCHED_WORKLOADS, BackendSpec, graph_feeds, inference_threads, log
from fastsentiment.backends.registry import device_kind, register
from fastsentiment.cache import cache_root, open_or_rebuild
from fastsentiment.errors import BackendError
from fastsentiment.models import ModelDir

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# int8: weights stored as 8-bit blocks (MatMulNBits), which OpenVINO runs as compressed fully-connected
# layers; everything else computes in bf16 where the CPU has it. On a 2-core EPYC without AMX (built-in
# model, `fastsentiment bench`) it cut batch-1 p50 latency from 4.5 to 3.3 ms but not batch-32 throughput
# (590 vs 623 sentences/s); agreement with fp32 on SST-2 dev stays >= 99% (tests/test_builtin_model.py).
WEIGHT_FILES = {"fp32": "plain", "bf16": "plain", "int8": "plain-int8"}


def model_file(model: ModelDir, precision: str) -> Path:
    """What OpenVINO compiles: the plain ONNX export (its ONNX reader does not take every fused ONNX Runtime
    contrib op), its 8-bit-weight variant, or the statically calibrated int8 IR."""
    if precision == "int8-static":
        from fastsentiment.backends.auto import Calibration
        from fastsentiment.export.openvino import static_int8_ir

        sample = Calibration.builtin()
        return static_int8_ir(model, sample.texts, sample.identity)
    from fastsentiment.backends.onnx_backend import onnx_file

    return onnx_file(model, WEIGHT_FILES[precision])


@register
class OpenvinoBackend:
    spec = BackendSpec(
        name="openvino",
        description="OpenVINO on the CPU (bf16 where the CPU has AVX-512 bf16 or AMX)",
        extra="openvino",
        modules=("openvino",),
        devices=("cpu",),
        precisions=("bf16", "fp32", "int8", "int8-static"),
        default_precision="bf16",
        parallel=True,
        prepares_per_shape=True,
    )

    def __init__(self, compiled, feeds: list[str], precision: str) -> None:
        from openvino import Tensor

        self._tensor = Tensor
        self._compiled = compiled
        # One infer request per stream: a call takes a free one, so `parallel_calls` calls run at once.
        self.parallel_calls = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.parallel_calls):
            self._requests.put(compiled.create_infer_request())
        self._logits_port = compiled.output("logits")
        self._feeds = feeds
        self._feed_types = [port.get_element_type().to_dtype() for port in compiled.inputs]
        self.device = "cpu"
        self.precision = precision
        # OpenVINO's Python binding initialises its numpy bridge on its first call, inside a C++ static guard that
        # waits for the GIL: two threads making their first calls at once can deadlock there (a CI run hung on
        # it; about 1 in 20 fresh processes under load here). One call on the loading thread initialises it first.
        self.logits(np.zeros((1, 2), dtype=np.int64), np.ones((1, 2), dtype=np.int64))

    @classmethod
    def model_problem(cls, model: ModelDir) -> str | None:
        from fastsentiment.backends.onnx_backend import export_problem

        return export_problem(model, (WEIGHT_FILES["bf16"],))  # its default compiles the plain ONNX export

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        # "cpu:0" names the one CPU device as torch and ONNX Runtime take it
        return None if device_kind(device) in ("auto", "cpu") else f"openvino runs on cpu here, not {device!r}"

    @classmethod
    def prepare(cls, model: ModelDir, device: str, precision: str | None) -> None:
        """Export (and for int8-static, quantise) into the cache now, so that load() measures loading alone."""
        model_file(model, precision or "bf16")

    @classmethod
    def load(
        cls,
        model: ModelDir,
        device: str,
        precision: str | None,
        threads: int | None = None,
        workload: str = "latency",
    ) -> OpenvinoBackend:
        """`workload` sets OpenVINO's performance hint: "latency" gives one call all the threads; "throughput" and
        "serve" (`BATCHED_WORKLOADS`) split them into streams that run calls side by side (on 2 cores, two streams of
        one thread: 13% more sentences/s at batch 32 and 38% at batch 1 than one stream of two threads on the AMX
        Xeon, when the caller keeps both busy)."""
        import openvino as ov

        core = ov.Core()
        has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        precision = precision or ("bf16" if has_bf16 else "fp32")
        if precision == "bf16" and not has_bf16:
            raise BackendError("this CPU has no bf16 support (AVX-512 bf16 or AMX); use --precision fp32")
        compute = precision if precision in PRECISION_HINTS else ("bf16" if has_bf16 else "fp32")
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[compute],
            "PERFORMANCE_HINT": "THROUGHPUT" if workload in BATCHED_WORKLOADS else "LATENCY",
            "INFERENCE_NUM_THREADS": str(inference_threads(threads)),
            # OpenVINO's own cache of compiled blobs: a second load imports instead of compiling. One folder per
            # compute precision: OpenVINO 2026.4 gave a bf16 load the blob an fp32 load had cached for the same
            # file, and that blob ran with bf16 settings returned NaN (tests/test_export.py).
            "CACHE_DIR": str(cache_root() / "openvino" / compute),
        }
        source = model_file(model, precision)  # first: a cache that cannot hold the export is an error of its own
        if not _writable_folder(Path(config["CACHE_DIR"])):
            log.warning("cannot write OpenVINO's compiled-model cache %s: compiling on every load", config["CACHE_DIR"])
            del config["CACHE_DIR"]
        # Compiled from its path, so that a cached blob is found without reading the model first.
        compiled = open_or_rebuild(
            source, lambda path: core.compile_model(str(path), "CPU", config), lambda: model_file(model, precision)
        )
        return cls(compiled, [port.get_any_name() for port in compiled.inputs], precision)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = graph_feeds(self._feeds, input_ids, attention_mask)
        # The arrays are lent to OpenVINO, not copied: `infer(dict)` converts and copies them in Python
        # (openvino.utils.data_helpers), which cost the calling thread about as much CPU as a batch-1 call's waiting,
        # and on two cores that CPU comes out of the model's threads.
        tensors = [
            self._tensor(np.ascontiguousarray(feeds[name], dtype=dtype), shared_memory=True)
            for name, dtype in zip(self._feeds, self._feed_types, strict=True)
        ]
        request = self._requests.get()
        try:
            for index, tensor in enumerate(tensors):
                request.set_input_tensor(index, tensor)
            request.infer()
            # A copy: the request's output buffer is reused by the next call that takes it.
            return np.array(request.get_tensor(self._logits_port).data, dtype=np.float32)
        finally:
            self._requests.put(request)

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
            "precision": self.precision,
            "execution devices": ", ".join(self._compiled.get_property("EXECUTION_DEVICES")),
            "inference precision hint": self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "operations (type, runtime precision)": dict(sorted(runtime_precisions.items())),
        }


def _writable_folder(folder: Path) -> bool:
    """Whether `folder` is (or can be made) a folder this process may write in."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)
