"""A file output written chunk by chunk, so that an interrupted run can resume without losing or repeating a row.

Beside `OUT` lives `OUT.partial/`: one part file per finished chunk and `manifest.json`, which
names the parts and the input position after the last one. Both are written to a temporary name
and renamed, so a run killed at any instant leaves either the previous state or the next one.
`finish` joins the parts into `OUT` (again by rename) and removes the folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fastsentiment.errors import InputError
from fastsentiment.jobs.sinks import OutputColumns, PartWriter, output_format, part_writer

MANIFEST_VERSION = 2  # 2: input columns renamed by their own name alone (sinks.output_column)


def journal_folder(out: Path) -> Path:
    """Where the parts and manifest of a run writing `out` live until it finishes."""
    return out.with_name(out.name + ".partial")


def check_resumable(out: Path) -> None:
    """--resume with a finished `out` and nothing left to continue is a mistake: say so rather than redo the job.
    (No `out` and no journal: the job starts afresh, as a script that always passes --resume expects.)"""
    folder = journal_folder(out)
    if out.exists() and not folder.exists():
        raise InputError(
            f"--resume: {out} is complete (no {folder.name}/ to continue); run without --resume to write it again"
        )


class ChunkJournal:
    def __init__(self, out: Path, identity: dict[str, Any], resume: bool, columns: OutputColumns) -> None:
        """`identity` says what is being computed (input file, its size and mtime, column, model);
        a resumed run must match it, or its parts would be mixed with a different job's. `columns`: what the
        output's columns are before any row."""
        self.out = out
        self.format = output_format(out)
        self.folder = journal_folder(out)
        self.identity = identity
        self.parts: list[str] = []
        self.position: dict[str, int] | None = None
        self.rows = 0
        self.failed = 0
        if self.folder.exists():
            if not resume:
                how = (
                    "delete the folder (stdin cannot be read again to continue it)"
                    if identity.get("input") == "stdin"
                    else "delete the folder, or continue it with --resume (a --file run)"
                )
                raise InputError(f"{self.folder} holds an interrupted run: {how}")
            self._load()
        else:
            if resume:
                check_resumable(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            self.folder.mkdir()
            self._save()
        first = self.folder / self.parts[0] if self.parts else None
        self.writer: PartWriter = part_writer(self.format, columns, first)

    @property
    def resumed(self) -> bool:
        return self.position is not None

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
        self.writer.write(records, scratch, first=not self.parts)
        _durable_replace(scratch, self.folder / name)
        self.parts.append(name)
        self.position = position
        self.rows += len(records)
        self.failed += failed
        self._save()

    def finish(self) -> None:
        """Join the parts into the output file and drop the journal."""
        scratch = self.out.with_name(f".{self.out.name}.tmp")
        self.writer.merge([self.folder / name for name in self.parts], scratch)  # no parts: an empty, valid file
        _durable_replace(scratch, self.out)
        shutil.rmtree(self.folder)

    def discard(self) -> None:
        """Drop the journal of a run that can never be resumed (its output cannot be written)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _save(self) -> None:
        manifest = {
            "version": MANIFEST_VERSION,
            "identity": self.identity,
            "format": self.format,
            "parts": self.parts,
            "position": self.position,
            "rows": self.rows,
            "failed": self.failed,
        }
        scratch = self.folder / ".manifest.json.tmp"
        scratch.write_text(json.dumps(manifest, indent=1))
        _durable_replace(scratch, self.folder / "manifest.json")

    def _load(self) -> None:
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
        # Parts written after the last manifest (a kill between the two renames) are not counted: drop them.
        for leftover in self.folder.iterdir():
            if leftover.name != "manifest.json" and leftover.name not in self.parts:
                leftover.unlink()


def _durable_replace(source: Path, target: Path) -> None:
    with open(source, "rb+") as stream:
        os.fsync(stream.fileno())
    os.replace(source, target)
