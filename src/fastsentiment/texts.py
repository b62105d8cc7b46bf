"""The rules a text must meet before it is classified: one home, so every surface words them alike.

Bytes reach us decoded with `surrogateescape` (files, stdin, HTTP bodies), so an undecodable
byte survives as a lone surrogate in U+DC80..U+DCFF and is reported, instead of being silently
replaced or stopping a whole file. JSON escapes can make lone surrogates too ("\\ud83d" alone): no
tokenizer or UTF-8 file takes them, so they count as undecodable as well.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# Lone surrogates: undecodable bytes kept by `surrogateescape`, or JSON escapes such as "\\ud83d".
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_undecodable(text: str) -> bool:
    """Whether `text` holds bytes that were not valid UTF-8 (kept as surrogate escapes) or other lone surrogates."""
    if text.isascii():  # the common case, answered without a scan (the server's hot path)
        return False
    return _SURROGATE.search(text) is not None


def replace_undecodable(text: str) -> str:
    """`text` with undecodable bytes and lone surrogates as U+FFFD, so that it can be written as UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no byte escapes to
        return _SURROGATE.sub("\ufffd", text)


# How every message about a text with nothing to classify begins (`text_problem`).
EMPTY_TEXT = "empty text"
# The longest text classified. The tokenizer holds every token of a text, even to count what truncation drops (and
# --long-text chunk needs them all): about 130 bytes per character in memory, so this one limit keeps a runaway text
# (a file's missing line end, an unclosed quote; a whole corpus passed to the Python API as one string) from taking
# gigabytes. A million characters is a long novel.
MAX_TEXT_CHARS = 1_000_000


def text_problem(value: Any) -> str | None:
    """Why `value` cannot be classified ("empty text", "not valid UTF-8", ...), or None when it can."""
    if value is None:
        return EMPTY_TEXT
    if not isinstance(value, str):
        if isinstance(value, float) and value != value:  # NaN: how pandas and numpy mark a missing value
            return "a missing value (NaN), not text"
        return f"{type(value).__name__}, not text"
    if len(value) > MAX_TEXT_CHARS:
        return f"a text of {len(value):,} characters, over the limit of {MAX_TEXT_CHARS:,} (split it up)"
    if has_undecodable(value):
        return "not valid UTF-8"
    stripped = value.strip()
    if not stripped:
        return EMPTY_TEXT
    # Zero-width spaces, byte-order marks, direction marks and control characters alone leave the model nothing
    # but [CLS] [SEP] to score. isprintable() is True for ordinary text, so only unusual texts pay for the scan.
    if not stripped.isprintable() and all(unicodedata.category(char)[0] in "CZ" for char in stripped):
        return f"{EMPTY_TEXT} (only invisible characters)"
    return None


def input_name(number: int) -> str:
    """What a message calls the `number`th (1-based) text of a call, where the texts have no names of their own
    (file jobs name theirs by line)."""
    return f"input {number}"
