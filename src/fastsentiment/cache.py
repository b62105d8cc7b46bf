"""Where derived artefacts (ONNX exports) live: a per-user cache keyed by model content."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """$FASTSENTIMENT_CACHE, else $XDG_CACHE_HOME/fastsentiment, else ~/.cache/fastsentiment."""
    explicit = os.environ.get("FASTSENTIMENT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastsentiment"


def cached_file(path: Path, build: Callable[[Path], None]) -> Path:
    """Return `path`, first building it with `build(temporary_path)` if it does not exist.

    The file is built in a temporary directory beside its destination and moved into place with
    one rename, so an interrupted build never leaves a file that a later run would load.
    """
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=path.parent))
    try:
        built = scratch / path.name
        build(built)
        os.replace(built, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path
