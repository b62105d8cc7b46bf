"""Where derived artefacts (ONNX exports) live: a per-user cache keyed by model content."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastsentiment.errors import FastSentimentError


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
    scratch = scratch_beside(path)
    try:
        built = scratch / path.name
        build(built)
        os.replace(built, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def scratch_beside(destination: Path) -> Path:
    """A new temporary folder beside `destination` (in its parent, made if needed) to build it in, so that one rename
    puts it in place. A cache that cannot be written is said in one line naming the setting that moves it."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".building-", dir=destination.parent))
    except OSError as error:
        raise FastSentimentError(
            f"cannot write to the cache folder {destination.parent}: {error.strerror}; "
            "set FASTSENTIMENT_CACHE to a writable folder"
        ) from None
