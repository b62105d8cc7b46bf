"""`ane`: our Neural-Engine layout of the model (see models/ane) run by PyTorch.

On Linux this is a correctness reference for the layout that CoreML compiles for the Neural Engine:
the same weights, converted, must give the Hugging Face model's logits. At fp16 it computes with the
numbers CoreML uses on the Neural Engine (on the CPU too: slowly, but it checks them where no Mac is).
"""

from __future__ import annotations

import numpy as np

from fastsentiment.backends.base import BackendSpec, inference_threads
from fastsentiment.backends.registry import register
from fastsentiment.models import ModelDir
from fastsentiment.models.architectures import ane_layout_problem


@register
class AneBackend:
    spec = BackendSpec(
        name="ane",
        description="Apple Neural-Engine layout (channels-first, 1x1 convs) under PyTorch",
        extra="torch",
        modules=("torch",),
        devices=("cpu", "cuda", "mps"),
        precisions=("fp32", "fp16"),
        default_precision="fp32",
        tunable=False,
    )

    def __init__(self, network, device: str, precision: str) -> None:
        self._network = network
        self.device = device
        self.precision = precision

    @classmethod
    def model_problem(cls, model: ModelDir) -> str | None:
        return ane_layout_problem(model.model_type, model.config)

    @classmethod
    def auto_device(cls) -> str:
        """Where `--device auto` loads it: the GPU where there is one."""
        from fastsentiment.backends.torch_backend import best_device

        return best_device()

    @classmethod
    def device_problem(cls, device: str) -> str | None:
        from fastsentiment.backends.torch_backend import TorchBackend

        return TorchBackend.device_problem(device)

    @classmethod
    def load(cls, model: ModelDir, device: str, precision: str | None, threads: int | None = None) -> AneBackend:
        import torch

        from fastsentiment.models.ane import ane_model_from_dir

        torch.set_num_threads(inference_threads(threads))
        device = cls.auto_device() if device == "auto" else device
        precision = precision or cls.spec.default_precision
        network = ane_model_from_dir(model).to(device)
        if precision == "fp16":
            network = network.to(torch.float16)
        return cls(network, device, precision)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        ids = torch.from_numpy(input_ids).to(self.device)
        with torch.inference_mode():
            out = self._network(ids, torch.from_numpy(attention_mask).to(self.device))
        return out.float().cpu().numpy()

    def explain(self) -> dict:
        from fastsentiment.backends.torch_backend import explain_torch_module

        return explain_torch_module(self._network, self.device, self.precision)
