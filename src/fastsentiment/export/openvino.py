"""OpenVINO IR with statically calibrated int8 (NNCF post-training quantisation), cached per model.

Static int8 fixes each activation's scale from a calibration sample, so the matmuls run as int8 x int8 without
measuring scales at run time. NNCF's transformer preset keeps the operations that lose most in int8 (softmax,
LayerNorm, the attention's matmul inputs where they hurt) in higher precision.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastsentiment.cache import cache_root
from fastsentiment.errors import missing_extra
from fastsentiment.models import ModelDir


def static_int8_ir(model: ModelDir, texts: Sequence[str], calibration_identity: str) -> Path:
    """The cached int8-static IR (`model.xml` + `model.bin`) of `model`, quantising it first if needed."""
    folder = cache_root() / "openvino-ir" / model.content_hash[:32] / f"int8-static-{calibration_identity}"
    if (folder / "model.xml").is_file():
        return folder / "model.xml"
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        quantise_static(model, texts, scratch / "model.xml")
        try:
            os.replace(scratch, folder)  # the whole folder appears at once, or not at all
        except OSError:  # another process finished first: keep its folder
            pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder / "model.xml"


def quantise_static(model: ModelDir, texts: Sequence[str], target: Path) -> None:
    """Quantise the plain ONNX export with NNCF (transformer preset, mixed symmetric/asymmetric) and save the IR."""
    try:
        import nncf
    except ImportError:
        raise missing_extra("nncf", "openvino", "int8-static") from None
    import openvino as ov

    from fastsentiment.backends.base import graph_feeds
    from fastsentiment.backends.onnx_backend import onnx_file
    from fastsentiment.tokenization import TextEncoder

    network = ov.Core().read_model(str(onnx_file(model, "plain")))
    names = {name for port in network.inputs for name in port.get_names()}
    encoder = TextEncoder.from_model_dir(model)

    def feeds(ids: list[int]) -> dict[str, np.ndarray]:
        batch = encoder.pad([ids])
        return graph_feeds(names, batch.input_ids, batch.attention_mask)

    samples = [feeds(ids) for ids in encoder.encode(list(texts))]
    # NNCF draws progress bars on stdout, which belongs to the command's results (`tune --json`, `classify`).
    with contextlib.redirect_stdout(sys.stderr):
        quantised = _quantize(nncf, network, samples)
    ov.save_model(quantised, str(target), compress_to_fp16=False)


def _quantize(nncf, network, samples):
    return nncf.quantize(
        network,
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(samples),
    )
