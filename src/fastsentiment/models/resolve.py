"""Turn whatever a user typed as a model (built-in name, local directory, hub id) into a ModelDir."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from fastsentiment.errors import ModelError
from fastsentiment.models.builtin import BUILTIN_MODELS, DEFAULT_MODEL
from fastsentiment.models.modeldir import HUB_FILES, PYTORCH_HUB_FILES, WEIGHT_FILES, ModelDir, load_model_dir

log = logging.getLogger("fastsentiment")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(reference: str | os.PathLike | bytes | None = None, *, require_head: bool = True) -> ModelDir:
    """Resolve a model reference: None (the default built-in), a built-in name, a path or a hub id."""
    if reference is None:
        reference = DEFAULT_MODEL
    if isinstance(reference, (bytes, os.PathLike)):
        reference = os.fsdecode(reference)
    if not isinstance(reference, str):
        raise ModelError(f"a model is a built-in name, a folder or a hub id, got {type(reference).__name__}")
    if not reference.strip():  # Path("") is the current folder: an unset variable would load whatever is here
        raise ModelError("the model is an empty name; give a built-in name, a folder or a hub id")
    text = reference
    if text in BUILTIN_MODELS:
        if Path(text).is_dir():  # a folder of that name here: which one is meant is not clear, so say which is used
            log.warning("%r is the built-in model; for the folder of that name here, pass ./%s", text, text)
        builtin = BUILTIN_MODELS[text]
        if not builtin.path.is_dir():
            raise ModelError(f"built-in model {text!r} is missing from this installation ({builtin.path})")
        return load_model_dir(builtin.path, require_head=require_head)
    path = Path(text).expanduser()
    if path.exists() or not _HUB_ID.match(text):
        return load_model_dir(path, require_head=require_head)
    return load_model_dir(_download_from_hub(text), require_head=require_head)


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - tokenizers depends on huggingface_hub
        raise ModelError(f"{repo_id!r} is not a local directory and huggingface_hub is not installed") from None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
        if not any((folder / name).is_file() for name in WEIGHT_FILES):  # a checkpoint saved before safetensors
            folder = Path(snapshot_download(repo_id, allow_patterns=[*HUB_FILES, *PYTORCH_HUB_FILES]))
        return folder
    except Exception as error:  # the hub client raises many types for offline / missing repos
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(
            f"{repo_id!r} is not a local directory or built-in model, and downloading it from the "
            f"Hugging Face hub failed ({reason}); when offline, pass a local model directory"
        ) from None
