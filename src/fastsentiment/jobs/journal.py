"""A file output written chunk by chunk, so that an interrupted run can resume without losing or repeating a row.

Beside `OUT` lives `OUT.partial/`: one part file per finished chunk and `manifest.json`, which
names the parts and the input position after the last one. Both are written to a temporary name
and renamed, so a run killed at any instant leaves either the previous state or the next one.
`finish` joins the parts into `OUT` (again by rename) and removes the folder. Text parts are joined
in place, each appended to the first and then dropped, so finishing needs room for one part more,
not a second copy of the output; the manifest records how far the joining got, so a run killed
while joining leaves parts that --resume joins on from, never a half-written `OUT`. A run holds a lock on the folder
(its `.lock` file) for as long as it writes there, so that two runs never write one output.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastsentiment.cache import abandoned
from fastsentiment.errors import InputError
from fastsentiment.jobs.sinks import OutputColumns, PartWriter, output_format, part_writer
from fastsentiment.outputs import through_link

# The identity's "input" of a run that read stdin or a pipe (`rows.stream_name`): such a run cannot be resumed.
STREAM_INPUTS = ("stdin", "a pipe")

MANIFEST_VERSION = 2  # 2: input columns renamed by their own name alone (sinks.output_column)
LOCK_FILE = ".lock"
_STAGING_SUFFIX = re.compile(r"-\d+-[0-9a-f]{8}")  # after ".<journal folder's name>": the pid and a random part


def journal_folder(out: Path) -> Path:
    """Where the parts and manifest of a run writing `out` live until it finishes."""
    written = through_link(out)
    return written.with_name(written.name + ".partial")


def recorded_path(out: Path) -> tuple[str, str] | None:
    """The backend and precision an interrupted run writing `out` recorded (None: no readable record). A resumed
    `auto` takes them: measuring again could pick another path, which the resume would then refuse."""
    try:
        identity = json.loads((journal_folder(out) / "manifest.json").read_text())["identity"]
        backend, precision = identity["backend"], identity["precision"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (backend, precision) if isinstance(backend, str) and isinstance(precision, str) else None


def check_resumable(out: Path) -> None:
    """--resume with a finished `out` and nothing left to continue is a mistake: say so rather than redo the job.
    (No `out` and no journal: the job starts afresh, as a script that always passes --resume expects.)"""
    folder = journal_folder(out)
    if out.exists() and not folder.exists():
        raise InputError(
            f"--resume: {out} is complete (no {folder.name}/ to continue); run without --resume to write it again"
        )


def interrupted_run(folder: Path, stream: str | None) -> InputError:
    """The refusal of a run without --resume on an output an interrupted run left (`stream`: "stdin" or "a pipe" where
    this run reads one, which cannot be read again to continue it)."""
    how = (
        f"delete the folder ({stream} cannot be read again to continue it)"
        if stream
        else "delete the folder, or continue it with --resume (a --file run)"
    )
    return InputError(f"{folder} holds an interrupted run: {how}")


def check_no_interrupted_run(out: Path, stream: str | None) -> None:
    """Without --resume, before the model loads (a first load may export and measure for minutes): an interrupted
    run's folder beside `out` that no run holds is refused as the journal would refuse it after the load."""
    folder = journal_folder(out)
    if folder.is_dir() and abandoned(folder, LOCK_FILE):
        raise interrupted_run(folder, stream)


class ChunkJournal:
    def __init__(self, out: Path, identity: dict[str, Any], resume: bool, columns: OutputColumns) -> None:
        """`identity` says what is being computed (input file, its size and mtime, column, model);
        a resumed run must match it, or its parts would be mixed with a different job's. `columns`: what the
        output's columns are before any row."""
        self.format = output_format(out)  # by the name given, which a link's target may not share
        self.out = through_link(out)
        self.folder = journal_folder(self.out)
        self.identity = identity
        self.parts: list[str] = []
        self.position: dict[str, int] | None = None
        self.rows = 0
        self.failed = 0
        # Joining in place: the parts after the first already appended to it, and its size then.
        self.joined = 0
        self.joined_size: int | None = None
        written: list[str] | None = None  # an interrupted run's output columns
        fresh = not self.folder.exists()
        self._lock = None if fresh else self._locked(self.folder)
        try:
            if not fresh:
                if not resume:
                    source = identity.get("input")
                    raise interrupted_run(self.folder, source if source in STREAM_INPUTS else None)
                written = self._load()
            elif resume:
                check_resumable(out)
            first = self.folder / self.parts[0] if self.parts else None
            self.writer: PartWriter = part_writer(self.format, columns, first, written)
            if fresh:
                self._create()
        except BaseException:
            self.release()
            raise

    def _create(self) -> None:
        """Make the journal folder whole, its lock taken and its manifest written, under a name of its own and then
        renamed into place: a second run that finds the folder finds it locked and described, never a folder made a
        moment ago that it would call an interrupted run or a broken one."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for left_over in self.folder.parent.glob(f".{glob.escape(self.folder.name)}-*-*"):
            if _STAGING_SUFFIX.fullmatch(left_over.name.removeprefix(f".{self.folder.name}")) and abandoned(
                left_over, LOCK_FILE
            ):  # a run killed between making its folder and renaming it
                shutil.rmtree(left_over, ignore_errors=True)
        staging = self.folder.with_name(f".{self.folder.name}-{os.getpid()}-{secrets.token_hex(4)}")
        staging.mkdir()  # as the folder itself was made: the umask's permissions (mkdtemp's are the owner's alone)
        try:
            self._lock = self._locked(staging)
            self._save(staging)
            os.rename(staging, self.folder)  # a non-empty folder there (another run's) is not replaced
        except OSError as error:
            self.release()
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise self._busy() from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed

    def _locked(self, folder: Path):
        """The journal's lock, held while this run writes it: a second run on the same output (a --resume started
        while the first still runs, a scheduler's retry, the Python API twice in one process) would write the same
        parts and drop the other's files. flock, not lockf: a lock of the open file, which a second open in the same
        process does not share."""
        try:
            lock = open(folder / LOCK_FILE, "a+b")
        except FileNotFoundError:  # a run that was writing it finished and removed the folder meanwhile
            raise self._just_finished() from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            lock.close()
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise self._busy() from None
        if os.fstat(lock.fileno()).st_nlink == 0:  # locked as the run holding it removed the finished folder
            lock.close()
            raise self._just_finished()
        return lock

    def release(self) -> None:
        """Let another run take the output (this run stops writing: finished, failed or interrupted)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _busy(self) -> InputError:
        return InputError(
            f"another run is writing {self.out} ({self.folder.name}/ is locked): wait for it to end, or stop it"
        )

    def _just_finished(self) -> InputError:
        return InputError(f"another run has just finished writing {self.out}; run again to write it anew")

    @property
    def resumed(self) -> bool:
        return self.position is not None

    @property
    def resumable(self) -> bool:
        """Whether --resume can continue this run: one of a file (stdin, a pipe and texts given as arguments cannot
        be read again)."""
        return self.identity.get("input") not in (None, *STREAM_INPUTS)

    @property
    def saved_rows(self) -> int:
        """The rows the manifest on disk counts: what --resume continues after (an interrupt may land between a
        part's rename and the manifest's)."""
        try:
            return int(json.loads((self.folder / "manifest.json").read_text())["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def commit(self, records: list[dict[str, Any]], position: dict[str, int], failed: int) -> None:
        """Make one chunk durable: its part file first, then the manifest that counts it."""
        name = f"part-{len(self.parts):06d}{self.writer.suffix}"
        scratch = self.folder / f".{name}.tmp"
        try:
            self.writer.write(records, scratch, first=not self.parts)
            _durable_replace(scratch, self.folder / name)
        except BaseException as error:
            scratch.unlink(missing_ok=True)  # a half-written part only takes room (and --resume would drop it)
            if isinstance(error, OSError) and self.parts and self.resumable:
                raise OSError(
                    error.errno,
                    f"could not write the rows after the first {self.rows:,} ({error.strerror or error}): the classified "
                    f"rows are kept in {self.folder.name}/, and the same command with --resume continues from there "
                    "once there is room",
                    str(self.out),
                ) from None
            if isinstance(error, OSError):  # the first rows, or a run that cannot be resumed: the output named
                raise OSError(error.errno, f"could not write it ({error.strerror or error})", str(self.out)) from None
            raise
        self.parts.append(name)
        self.position = position
        self.rows += len(records)
        self.failed += failed
        self._save()

    def finish(self) -> None:
        """Join the parts into the output file and drop the journal. Where that fails (a full disk), no scratch file
        is left, and the error says that the parts are kept for --resume and how much room finishing needs."""
        first = self.folder / self.parts[0] if self.parts else None
        if first is not None and not first.exists() and self.out.exists():
            shutil.rmtree(self.folder)  # killed after the joined first part became OUT: only the folder was left
            self.release()
            return
        try:
            if first is not None and self.writer.concatenates:
                joined = self._join_in_place(first)
            else:
                joined = self.out.with_name(f".{self.out.name}.tmp")
                try:
                    self.writer.merge([self.folder / name for name in self.parts], joined)  # none: empty, valid
                except BaseException:
                    joined.unlink(missing_ok=True)
                    raise
            _durable_replace(joined, self.out)
        except OSError as error:
            raise self._unfinished(error) from None
        shutil.rmtree(self.folder)
        self.release()

    def _join_in_place(self, first: Path) -> Path:
        """Append every later part to the first, each dropped once the manifest counts it as joined; return the first.
        A run killed meanwhile leaves the first part longer than the manifest says: it is cut back, and joined on."""
        for name in self.parts[1 : self.joined + 1]:
            (self.folder / name).unlink(missing_ok=True)  # joined, but killed before it was dropped
        with open(first, "r+b") as target:
            if self.joined_size is None:  # recorded before anything is appended, to cut back to after a kill
                self.joined_size = target.seek(0, os.SEEK_END)
                self._save()
            target.truncate(self.joined_size)
            target.seek(self.joined_size)
            for index in range(self.joined + 1, len(self.parts)):
                part = self.folder / self.parts[index]
                try:
                    with open(part, "rb") as source:
                        shutil.copyfileobj(source, target, 1 << 20)
                    target.flush()
                    os.fsync(target.fileno())
                except OSError:
                    target.truncate(self.joined_size)  # give back the room the part's copy took
                    raise
                self.joined, self.joined_size = index, target.tell()
                self._save()
                part.unlink()
        return first

    def _unfinished(self, error: OSError) -> OSError:
        """The one-line error of an output that could not be joined. A --file run keeps its parts for --resume; any
        other is dropped, as it cannot be resumed."""
        left = [self.folder / name for name in self.parts[self.joined + 1 :] if (self.folder / name).exists()]
        if self.writer.concatenates:  # in place: room for the largest part still to append
            needed = max((part.stat().st_size for part in left), default=0)
        else:  # a second copy of every part
            needed = sum(part.stat().st_size for part in [self.folder / self.parts[0], *left] if part.exists())
        reason = error.strerror or str(error)
        if error.errno == errno.ENOSPC:
            free = shutil.disk_usage(self.folder).free
            reason += (
                f"; joining the parts needs about {_in_bytes(needed)} free on that disk, which has {_in_bytes(free)}"
            )
        if not self.resumable:
            self.discard()
            return OSError(error.errno, f"could not write it ({reason})", str(self.out))
        return OSError(
            error.errno,
            f"could not finish it ({reason}): the classified rows are kept in {self.folder.name}/, and the same "
            "command with --resume finishes the job once there is room",
            str(self.out),
        )

    def discard(self) -> None:
        """Drop the journal of a run that can never be resumed (its output cannot be written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def _save(self, folder: Path | None = None) -> None:
        """Write the manifest in the journal folder (or `folder`, where it is made)."""
        folder = folder or self.folder
        manifest = {
            "version": MANIFEST_VERSION,
            "identity": self.identity,
            "format": self.format,
            "parts": self.parts,
            "position": self.position,
            "rows": self.rows,
            "failed": self.failed,
            "columns": self.writer.columns,
            "joined": self.joined,
            "joined_size": self.joined_size,
        }
        scratch = folder / ".manifest.json.tmp"
        scratch.write_text(json.dumps(manifest, indent=1))
        _durable_replace(scratch, folder / "manifest.json")

    def _load(self) -> list[str] | None:
        """Take an interrupted run's state from its manifest; return the output columns it recorded."""
        try:
            manifest = json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError):
            raise InputError(f"{self.folder}: no readable manifest.json; delete the folder to start again") from None
        if manifest.get("version") != MANIFEST_VERSION or manifest.get("format") != self.format:
            raise InputError(f"{self.folder} was written by a different run; delete the folder to start again")
        differences = [
            key
            for key in sorted(set(manifest["identity"]) | set(self.identity))
            if manifest["identity"].get(key) != self.identity.get(key)
        ]
        if differences:
            raise InputError(
                f"cannot resume {self.folder}: {', '.join(differences)} changed since the interrupted run; "
                "delete the folder to start again"
            )
        self.parts = manifest["parts"]
        self.position = manifest["position"]
        self.rows = manifest["rows"]
        self.failed = manifest["failed"]
        self.joined = manifest.get("joined", 0)
        self.joined_size = manifest.get("joined_size")
        # Parts written after the last manifest (a kill between the two renames) are not counted: drop them.
        for leftover in self.folder.iterdir():
            if leftover.name not in ("manifest.json", LOCK_FILE) and leftover.name not in self.parts:
                leftover.unlink()
        return manifest.get("columns")


def _in_bytes(size: int) -> str:
    """A size as people read it: 512 KB, 3.4 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{max(1, round(size / 1e3))} KB"


def _durable_replace(source: Path, target: Path) -> None:
    with open(source, "rb+") as stream:
        os.fsync(stream.fileno())
    os.replace(source, target)
