"""Model directories: validation, the built-in models, and resolving what a user names."""

from fastsentiment.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from fastsentiment.models.modeldir import ModelDir, load_model_dir
from fastsentiment.models.resolve import resolve_model

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "ModelDir", "load_model_dir", "resolve_model"]
