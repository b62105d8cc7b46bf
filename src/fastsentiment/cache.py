"""Where derived artefacts (ONNX exports) live: a per-user cache keyed by model content."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
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


def remembered(stamp: str, compute: Callable[[], str]) -> str:
    """`compute()`, kept in the cache under `stamp` (what the inputs are: files by path, size, inode and change
    times, which any rewrite moves) so that a later process takes it instead of computing it again: hashing the
    built-in model's 45 MB of weights cost a one-off `classify` 37 ms of its half second. A cache that cannot be
    read or written computes every time, without a word."""
    memo = cache_root() / "remembered" / hashlib.sha256(stamp.encode()).hexdigest()[:32]
    try:
        known = memo.read_text().strip()
    except (OSError, FastSentimentError):
        known = ""
    if known:
        return known
    value = compute()
    with contextlib.suppress(OSError, FastSentimentError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        scratch = memo.with_name(f".{memo.name}-{os.getpid()}")
        scratch.write_text(value)
        os.replace(scratch, memo)
    return value


def file_stamp(path: Path) -> str:
    """What identifies `path`'s content without reading it: any write moves its size or its change time (ctime, which
    no tool sets back), a replacement its inode."""
    status = path.stat()
    return (
        f"{path.resolve()}|{status.st_dev}|{status.st_ino}|{status.st_size}|{status.st_mtime_ns}|{status.st_ctime_ns}"
    )


def cached_file(path: Path, build: Callable[[Path], None]) -> Path:
    """Return `path`, first building it with `build(temporary_path)` if it does not exist.

    The file is built in a temporary directory beside its destination and moved into place with
    one rename, so an interrupted build never leaves a file that a later run would load.
    """
    if path.is_file():
        return path
    with building_beside(path) as scratch:
        try:
            build(scratch / path.name)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # Said of the cache: the export's writer names no file, and the output's own disk may have room.
            raise FastSentimentError(
                f"cannot write {path.name} in the cache at {path.parent}: {error.strerror}; free space there, or set "
                "FASTSENTIMENT_CACHE to a folder with room"
            ) from None
        if not (scratch / path.name).is_file():
            raise FastSentimentError(f"building {path.name} for the cache made no such file")
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
    return path


def artefact_files(path: Path) -> list[Path]:
    """The files an artefact named `path` is made of, its companion first: an OpenVINO IR keeps its weights in a
    .bin beside its .xml, an ONNX file too large to hold its weights in `<name>.data` (`export.onnx.weights_file`);
    files of other kinds have none. A companion may not exist (an ONNX file of small weights)."""
    from fastsentiment.export.onnx import weights_file

    return [path.with_suffix(".bin") if path.suffix == ".xml" else weights_file(path), path]


BUILDING = ".building-"  # a scratch folder's prefix
HELD = ".held"  # the file in a scratch folder its build holds a lock on while it runs
ABANDONED_AFTER_S = 24 * 3600  # a scratch folder untouched this long is left over, whoever made it


@contextlib.contextmanager
def building_beside(destination: Path) -> Iterator[Path]:
    """A new temporary folder beside `destination` (in its parent, made if needed) to build it in, so that one rename
    puts it in place; removed afterwards if still there. A cache that cannot be written is said in one line naming
    the setting that moves it. While the build runs it holds a lock on a file in the folder, so that a later build
    can tell a folder that a killed build left (a SIGKILL skips the clean-up; one per kill piled up) from a live one
    of any process, container or user, and remove it. A folder renamed into place takes the file along unless the
    build removes it first (`release_scratch`)."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        for scratch in destination.parent.glob(BUILDING + "*"):
            if abandoned(scratch, HELD):
                shutil.rmtree(scratch, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=BUILDING, dir=destination.parent))
        held = open(scratch / HELD, "w")  # open until the build ends: its lock says the build runs
    except OSError as error:
        raise FastSentimentError(
            f"cannot write to the cache folder {destination.parent}: {error.strerror}; "
            "set FASTSENTIMENT_CACHE to a writable folder"
        ) from None
    try:
        lock_file(held, wait=False)
        yield scratch
    finally:
        held.close()
        shutil.rmtree(scratch, ignore_errors=True)


def release_scratch(scratch: Path) -> None:
    """Take the held file out of a scratch folder about to be renamed into place (its lock ends with the build)."""
    (scratch / HELD).unlink(missing_ok=True)


def lock_file(stream, wait: bool) -> bool:
    """An exclusive lock on an open file; False where another process holds it (and `wait` is False). Where the
    system or the file system has no file locks (Windows; some network file systems), True: nothing to wait for."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(stream, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK and kin: the file system keeps no locks
        return True
    return True


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


def abandoned(scratch: Path, lock_name: str) -> bool:
    """Whether the process that made a scratch folder is done with it: no one holds the lock on its `lock_name` file
    any more, or (where that cannot be told: a folder without that file, a system without file locks) it has not
    changed for a day."""
    try:
        with open(scratch / lock_name) as held:
            import fcntl

            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a build runs there
            return True
    except (ImportError, OSError):  # no held file, or no file locks here: judged by age
        pass
    try:
        return time.time() - scratch.stat().st_mtime > ABANDONED_AFTER_S
    except OSError:  # gone already
        return False
