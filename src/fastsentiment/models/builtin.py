"""Models that ship inside the package, addressable by name wherever a model is accepted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BUILTIN_ROOT = Path(__file__).resolve().parent / "builtin"
DEFAULT_MODEL = "sst2-minilm-l6"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str

    @property
    def path(self) -> Path:
        return BUILTIN_ROOT / self.name


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.name: model
    for model in [
        BuiltinModel(
            name="sst2-minilm-l6",
            description="all-MiniLM-L6-v2 distilled by fastsentiment from an MPNet teacher fine-tuned on SST-2 (English sentiment)",
        ),
    ]
}
