"""`torch`: the Hugging Face model under PyTorch (CPU, CUDA, MPS) in fp32, bf16, fp16 (GPUs) or dynamic int8 (CPU).

This is the reference every other backend is measured against (fp32 on CPU).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import numpy as np

from fastsentiment.backends.base import BackendSpec, inference_threads, log
from fastsentiment.backends.registry import device_index, device_kind, register
from fastsentiment.errors import BackendError
from fastsentiment.models import ModelDir


@register
class TorchBackend:
    spec = BackendSpec(
        name="torch",
        description="Hugging Face transformers on PyTorch",
        extra="torch",
        modules=("torch", "transformers"),
        devices=("cpu", "cuda", "mps"),
        precisions=("fp32", "bf16", "fp16", "int8"),
        default_precision="fp32",
        accelerator_only=("fp16",),
        cpu_only=("int8",),
    )

    def __init__(self, model, device: str, precision: str, token_types: bool) -> None:
        self._model = model
        self._token_types = token_types
        self.device = device
        self.precision = precision
        self._token_budget: int | None = None  # padded tokens per call that fit, once a call ran out of memory

    @classmethod
    def auto_device(cls) -> str:
        """Where `--device auto` loads it: the GPU where there is one."""
        return best_device()

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        kind = device.split(":")[0]
        if kind in ("auto", "cpu"):
            return None
        import torch

        if kind == "cuda" and not torch.cuda.is_available():
            return "no CUDA device visible to torch"
        index = device_index(device)
        if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
            return f"no CUDA device {index} (torch sees {torch.cuda.device_count()})"
        if kind == "mps" and not torch.backends.mps.is_available():
            return "MPS (Apple GPU) is not available"
        return None

    @classmethod
    def load(cls, model: ModelDir, device: str, precision: str | None, threads: int | None = None) -> TorchBackend:
        import torch
        import transformers

        from fastsentiment.models.network import load_network

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        # One setting per process in PyTorch: the torch model loaded last sets the threads of every torch model in
        # the process (ONNX Runtime and OpenVINO keep theirs per session).
        torch.set_num_threads(inference_threads(threads))
        device = cls.auto_device() if device == "auto" else device
        precision = precision or cls.spec.default_precision
        if problem := cls.spec.precision_problem(precision, device_kind(device)):
            raise BackendError(problem)
        # Weights may be stored in fp16 (the built-in model is); compute in fp32 unless asked otherwise.
        network = load_network(model, dtype=torch.float32)
        network.eval()
        if precision in ("bf16", "fp16"):
            network = network.to(torch.bfloat16 if precision == "bf16" else torch.float16)
        elif precision == "int8":
            network = _quantise_dynamic_int8(network)
        network.to(device)
        return cls(network, device, precision, model.uses_token_type_ids)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """A batch the GPU has no memory for runs in halves; later calls keep under the padded tokens that fit
        (a default batch of 256 meets 512-token windows of a big model on a small GPU)."""
        import torch

        rows, length = input_ids.shape
        per_call = rows if self._token_budget is None else max(1, self._token_budget // max(length, 1))
        if rows > per_call:
            return np.concatenate(
                [
                    self.logits(input_ids[i : i + per_call], attention_mask[i : i + per_call])
                    for i in range(0, rows, per_call)
                ]
            )
        try:
            return self._forward(input_ids, attention_mask)
        except torch.OutOfMemoryError:
            if rows == 1:
                raise BackendError(
                    f"torch on {self.device} ran out of memory for one text of {length} tokens; "
                    "a smaller --max-length or precision (bf16, fp16) needs less"
                ) from None
        if device_kind(self.device) == "cuda":
            torch.cuda.empty_cache()
        self._token_budget = (rows // 2) * length
        log.warning(
            "torch on %s ran out of memory at %d texts of %d tokens; calls now hold at most %d tokens",
            self.device,
            rows,
            length,
            self._token_budget,
        )
        return self.logits(input_ids, attention_mask)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        ids = torch.from_numpy(input_ids).to(self.device)
        inputs = torch_inputs(ids, torch.from_numpy(attention_mask).to(self.device), self._token_types)
        with torch.inference_mode(), attention_kernels(self.device):
            return self._model(**inputs).logits.float().cpu().numpy()

    def explain(self) -> dict:
        return explain_torch_module(self._model, self.device, self.precision)


def torch_inputs(input_ids, attention_mask, token_types: bool) -> dict:
    """Keyword inputs of a Hugging Face model: ids, mask, and all-zero token types (one segment) if it takes them."""
    import torch

    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_types:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    return inputs


def attention_kernels(device: str):
    """Where attention runs on CUDA: flash, memory-efficient or plain attention, not cuDNN's.

    PyTorch 2.11 sends a half-precision attention with a padding mask to cuDNN first on recent GPUs, and cuDNN builds
    an execution plan for every (batch, length) it has not seen. Measured on an H200 (docs/benchmarks.md, GPU):
    length-sorted batches of 32, each of a new length, ran 751 sentences/s in bf16 against 12,017 in fp32, while
    fixed 128-token batches ran bf16 faster than fp32 (19,798 against 11,249). The same cost is reported for
    fine-tuning (modelscope/FunASR#3704). Elsewhere (CPU, MPS) nothing changes.
    """
    if device_kind(device) != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def best_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def explain_torch_module(network, device: str, precision: str) -> dict:
    """PyTorch runs every operation on one device; report it with the parameters' dtypes."""
    from collections import Counter

    import torch

    dtypes = Counter(str(p.dtype).removeprefix("torch.") for p in network.parameters())
    # A dynamically quantised Linear holds its weights in a packed-parameters child module: count the layers.
    quantised = sum(
        1 for m in network.modules() if "quantized" in type(m).__module__ and not type(m).__name__.endswith("Params")
    )
    return {
        "runtime": f"torch {torch.__version__}",
        "device": device,
        "precision": precision,
        "parameter dtypes": dict(dtypes),
        "dynamically quantised modules": quantised,
        "threads": torch.get_num_threads(),
    }


def _quantise_dynamic_int8(network):
    """Dynamic int8 for the Linear layers, per-channel weight scales, FFN down-projections kept fp32.

    Measured on SST-2 dev against fp32 (MiniLM-L6): per-tensor weights agreed on 94.6% of labels,
    per-channel on 97.3%, per-channel without the FFN down-projections (their inputs are GELU
    outputs with large outliers, badly served by one activation scale per tensor) on 98.0%, still
    1.7x faster than fp32.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig

    names = [
        name
        for name, module in network.named_modules()
        if isinstance(module, torch.nn.Linear) and not _is_ffn_down_projection(name)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(
            network, dict.fromkeys(names, per_channel_dynamic_qconfig), dtype=torch.qint8
        )


def _is_ffn_down_projection(name: str) -> bool:
    # BERT: encoder.layer.N.output.dense; DistilBERT: transformer.layer.N.ffn.lin2
    return (name.endswith("output.dense") and ".attention." not in name) or name.endswith("ffn.lin2")
