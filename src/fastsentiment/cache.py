"""Where derived artefacts (ONNX exports) live: a per-user cache keyed by model content."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastsentiment.errors import FastSentimentError, first_line

log = logging.getLogger("fastsentiment")
Opened = TypeVar("Opened")


def cache_root() -> Path:
    """$FASTSENTIMENT_CACHE, else $XDG_CACHE_HOME/fastsentiment, else ~/.cache/fastsentiment."""
    explicit = os.environ.get("FASTSENTIMENT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # no HOME and no passwd entry (a container's arbitrary user)
            raise FastSentimentError(
                "no home folder to keep the cache in: set FASTSENTIMENT_CACHE to a writable folder"
            ) from None
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
        build(scratch / path.name)
        for destination in artefact_files(path):  # the named file last: it is there only with its companion
            built = scratch / destination.name
            if not built.exists():
                continue
            try:
                os.replace(built, destination)
            except OSError as error:  # a folder (or other kind of file) where it goes: name it, not the scratch copy
                raise FastSentimentError(
                    f"cannot put {destination.name} in the cache at {destination}: {error.strerror}; remove it, or "
                    "set FASTSENTIMENT_CACHE to another folder"
                ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def artefact_files(path: Path) -> list[Path]:
    """The files an artefact named `path` is made of, its companion first: an OpenVINO IR keeps its weights in a
    .bin beside its .xml, an ONNX file too large to hold its weights in `<name>.data` (`export.onnx.weights_file`);
    files of other kinds have none. A companion may not exist (an ONNX file of small weights)."""
    from fastsentiment.export.onnx import weights_file

    return [path.with_suffix(".bin") if path.suffix == ".xml" else weights_file(path), path]


BUILDING = ".building-"  # a scratch folder's prefix, then "<pid>@<host>-" and mkdtemp's letters (no "-" in them)
ABANDONED_AFTER_S = 24 * 3600  # a scratch folder untouched this long is left over, whoever made it


def scratch_beside(destination: Path) -> Path:
    """A new temporary folder beside `destination` (in its parent, made if needed) to build it in, so that one rename
    puts it in place. A cache that cannot be written is said in one line naming the setting that moves it. Scratch
    folders that killed builds left there are removed first (a SIGKILL skips the clean-up; one per kill piled up)."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        for scratch in destination.parent.glob(BUILDING + "*"):
            if _abandoned(scratch):
                shutil.rmtree(scratch, ignore_errors=True)
        prefix = f"{BUILDING}{os.getpid()}@{socket.gethostname()}-"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=destination.parent))
    except OSError as error:
        raise FastSentimentError(
            f"cannot write to the cache folder {destination.parent}: {error.strerror}; "
            "set FASTSENTIMENT_CACHE to a writable folder"
        ) from None


def open_or_rebuild(path: Path, open_: Callable[[Path], Opened], build: Callable[[], Path]) -> Opened:
    """`open_(path)`, where `path` is an artefact of the cache that `build()` makes (and returns). One that exists
    but does not open (damaged on disk since it was built: truncated, emptied) is removed, built again once and
    opened, with a warning, instead of failing every later run. A file outside the cache is opened as it is."""
    try:
        return open_(path)
    except Exception as error:
        if not path.resolve().is_relative_to(cache_root().resolve()):
            raise
        log.warning("the cached %s does not load (%s); building it again", path, first_line(error))
    for damaged in artefact_files(path):
        damaged.unlink(missing_ok=True)
    rebuilt = build()
    try:
        return open_(rebuilt)
    except Exception as error:
        raise FastSentimentError(f"{rebuilt}: built again, it still does not load ({first_line(error)})") from None


def _abandoned(scratch: Path) -> bool:
    """Whether a scratch folder's build is over: its process, of this machine, runs no more (a cache shared between
    machines keeps the others' until they are a day old), or the folder has not changed for a day."""
    try:
        if time.time() - scratch.stat().st_mtime > ABANDONED_AFTER_S:
            return True
    except OSError:  # gone already
        return False
    owner, _, _ = scratch.name.removeprefix(BUILDING).rpartition("-")
    pid, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        pass
    return False
