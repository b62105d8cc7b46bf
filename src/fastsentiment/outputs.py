"""Where a command writes: one check, for file jobs and exports alike, before any work is done; and JSON as strict
parsers read it."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from fastsentiment.errors import InputError


def check_output_place(path: Path, folder: bool = False, name: str = "--out") -> None:
    """Refuse an output that cannot be written, before any work (`name`: the option or argument that gave it): an
    existing folder where a file goes (or a file where a folder goes), a path through a file, a place nothing can
    be created in. Creates the missing parents, as writing would."""
    if path.is_dir() and not folder:
        raise InputError(f"{name} {path} is a folder; name a file")
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{name} {path} is a file; a folder of files is written there")
    parent = path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{name} {path}: {existing} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise InputError(f"{name} {path}: cannot write in {parent} ({error.strerror or error})") from None


def through_link(path: Path) -> Path:
    """Where an output named by a symbolic link is written: the file the link points at, as `cp` and a shell's `>`
    write (the link stays a link). Written files are moved into place whole, and a move onto a link would replace
    the link instead."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def as_umask_allows(path: Path) -> None:
    """Give a file the permissions a plain `open()` would (0666 less the umask): writers that go through a private
    temporary file (mkstemp; transformers' `save_pretrained`) leave it 0600, which a server or container running as
    another user cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def strict_json(value: Any, **options: Any) -> str:
    """`json.dumps(value, **options)` as strict parsers read it: a NaN or infinity, however deep (an input field of
    a file job, a figure a bench did not measure), is null, as pandas writes them. Python's bare NaN and Infinity are
    refused by jq, browsers and most other JSON parsers."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:  # rare: the value is walked only when it holds one
        return json.dumps(_finite(value), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# Control characters, shown as escapes (\\n, \\x1b): those that end a line for a terminal or str.splitlines would
# break one input over several lines, and the others (an ANSI escape sequence in a review) would act on the terminal.
_CONTROLS = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), "\u2028", "\u2029"]
_ESCAPED = {ord(char): char.encode("unicode_escape").decode() for char in _CONTROLS}


def one_line(text: str) -> str:
    """`text` with its control characters as escapes (\\n, \\t, \\x1b, \\u2028): one line of one column on a
    console, which nothing in it can act on."""
    return text.translate(_ESCAPED)
