"""Whole long documents: token windows that overlap, and one verdict from the windows' scores.

A text longer than the model accepts is cut on token boundaries into windows of at most `max_length` tokens,
each wrapped in the model's own special tokens ([CLS] ... [SEP], <s> ... </s>), consecutive windows sharing
`stride` tokens so that no sentence is seen only cut in half. The windows of every text then run through the
same length-sorted batches as short texts; `aggregate` folds each text's window scores back into one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsentiment.errors import InputError
from fastsentiment.texts import input_name

LONG_TEXT_MODES = ("truncate", "chunk", "error")
AGGREGATES = ("mean", "max", "logit-mean")
# Measured on the long-document set (docs/benchmarks.md, "Long documents", windows of 256 tokens): logit-mean was
# best or tied at either stride; an overlap of 32 tokens (about one SST-2 sentence) gained 3 points over none. A
# window keeps at least three quarters of its room for new tokens (`check_options`).
DEFAULT_STRIDE = 32
DEFAULT_AGGREGATE = "logit-mean"


@dataclass(frozen=True)
class LongText:
    """How texts longer than the model are read: the `long_text`, `stride` and `aggregate` arguments of
    `Classifier.predict`, as one value that file jobs and the server pass along."""

    long_text: str = "truncate"
    stride: int | None = None
    aggregate: str | None = None

    @property
    def reports_lengths(self) -> bool:
        """Whether results carry each text's tokens and windows (they matter once texts may be chunked)."""
        return self.long_text == "chunk"


@dataclass(frozen=True)
class Window:
    """One window of one text: its token ids (special tokens included) and the characters it covers."""

    text: int  # index of the text among those classified together
    ids: list[int]
    tokens: int  # the text's own tokens in this window (special tokens not counted)
    start: int  # character span in the text
    end: int
    shared: int = 0  # of `tokens`, how many the neighbouring windows also hold (the overlap on either side)

    @property
    def weight(self) -> float:
        """The window's share of its text when scores are averaged: its own tokens, each token held by two windows
        counted half in each, so that every token of the text weighs the same and the weights sum to its tokens."""
        return self.tokens - self.shared / 2


@dataclass(frozen=True)
class Document:
    """A text as windows: how many tokens it has (special tokens included) and which windows are its."""

    tokens: int
    windows: list[Window]


def truncation_flag(truncation: Any) -> bool | None:
    """transformers' `truncation` argument for one text at a time: True where it cuts (True and the strategies
    "longest_first", "only_first"), False where it does not ("do_not_truncate"), None where not given."""
    if truncation is None or isinstance(truncation, bool):
        return truncation
    if truncation in ("longest_first", "only_first"):
        return True
    if truncation == "do_not_truncate":
        return False
    raise InputError(
        f"truncation is True, 'longest_first' or 'only_first' (cut), False or 'do_not_truncate' (refuse), got "
        f"{truncation!r} (texts here come alone, without a second one to cut)"
    )


def with_truncation(long_text: str, truncation: Any) -> str:
    """`long_text` as transformers' `truncation` argument sets it, where given: cut or refuse (`truncation_flag`),
    beside long_text "truncate" (the default) or the same choice ("error" with a refusing truncation); windows
    ("chunk") are asked for alone."""
    flag = truncation_flag(truncation)
    if flag is None or long_text not in LONG_TEXT_MODES:  # an unknown mode: check_options names it
        return long_text
    asked = "truncate" if flag else "error"
    if long_text in ("truncate", asked):  # the default, or the same choice twice
        return asked
    if long_text == "chunk":
        raise InputError("truncation cuts or refuses long texts; for windows give long_text 'chunk' alone")
    raise InputError(f"truncation {truncation!r} cuts long texts and long_text 'error' refuses them; give one of them")


def check_options(
    long_text: str, stride: int | None, aggregate: str | None, max_length: int | None, special_tokens: int = 2
) -> tuple[int | None, str]:
    """Refuse unknown modes, a stride or aggregate without windows to shape, and strides that leave no room to
    advance in windows of `max_length` (None: not known yet, as before a model loads) of which the tokenizer's
    `special_tokens` take their part; returns (stride, aggregate) filled in."""
    if long_text not in LONG_TEXT_MODES:
        raise InputError(f"unknown long_text (--long-text) {long_text!r}; expected one of {', '.join(LONG_TEXT_MODES)}")
    if long_text != "chunk" and (stride is not None or aggregate is not None):
        raise InputError("stride and aggregate (--stride, --aggregate) shape the windows of long_text 'chunk'")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 0):
        raise InputError(f"stride must be a whole number of tokens, 0 or more; got {stride!r}")
    aggregate = DEFAULT_AGGREGATE if aggregate is None else aggregate
    if aggregate not in AGGREGATES:
        raise InputError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
    if max_length is None or long_text != "chunk":
        return stride, aggregate
    room = max_length - special_tokens  # the text's tokens in a window
    stride = min(DEFAULT_STRIDE, room // 4) if stride is None else int(stride)
    if not 0 <= stride < room:
        raise InputError(f"stride must be between 0 and {room - 1} tokens for windows of {max_length} tokens")
    return stride, aggregate


def cut(encoding, index: int, max_length: int, stride: int) -> Document:
    """The windows of one text's tokenizer encoding: as many as needed to cover every token."""
    ids, specials, offsets = encoding.ids, encoding.special_tokens_mask, encoding.offsets
    if len(ids) <= max_length:
        spans = [offsets[i] for i in range(len(ids)) if not specials[i]]
        start, end = (spans[0][0], spans[-1][1]) if spans else (0, 0)
        return Document(len(ids), [Window(index, list(ids), len(spans), start, end)])
    head, tail = _text_span(encoding)
    prefix, suffix = list(ids[:head]), list(ids[tail:])
    room = max_length - len(prefix) - len(suffix)
    windows, first = [], head
    while True:
        last = min(first + room, tail)
        shared = (stride if windows else 0) + (stride if last < tail else 0)
        span = offsets[first][0], offsets[last - 1][1]
        windows.append(Window(index, [*prefix, *ids[first:last], *suffix], last - first, *span, shared))
        if last == tail:
            return Document(len(ids), windows)
        first = last - stride


def truncation_window(encoding, index: int, max_length: int, ids: list[int]) -> Window:
    """The one window truncation leaves of a text (`ids`: `tokenization.truncated`, the first tokens and the closing
    special tokens), with the count and character span of the text's own tokens in it."""
    head, tail = _text_span(encoding)
    if len(encoding.ids) > max_length:
        tail = min(tail, max_length - (len(encoding.ids) - tail))
    if tail <= head:
        return Window(index, ids, 0, 0, 0)
    return Window(index, ids, tail - head, encoding.offsets[head][0], encoding.offsets[tail - 1][1])


def window_count(encoding, max_length: int, stride: int) -> int:
    """How many windows `cut` makes of this encoding, without making them."""
    if len(encoding.ids) <= max_length:
        return 1
    head, tail = _text_span(encoding)
    room = max_length - (len(encoding.ids) - (tail - head))
    return 1 + max(0, math.ceil((tail - head - room) / (room - stride)))  # each window after the first: room - stride


def _text_span(encoding) -> tuple[int, int]:
    """Where the text's own tokens start and end, between the special tokens that wrap them."""
    ids, specials = encoding.ids, encoding.special_tokens_mask
    head = 0
    while head < len(ids) and specials[head]:
        head += 1
    tail = len(ids)
    while tail > head and specials[tail - 1]:
        tail -= 1
    return head, tail


def aggregate_logits(
    window_logits: np.ndarray, weights: np.ndarray, how: str, sigmoid: bool, confidence: str = "softmax"
) -> np.ndarray:
    """One text's logits from its windows': a token-weighted mean of probabilities ("mean", given back as the
    logits that reproduce it), the most confident window ("max"), or a token-weighted mean of logits; `weights`
    are the windows' `Window.weight`, so that the tokens two windows share do not count twice.

    A window's confidence under `confidence`: "softmax" (or sigmoid over several labels), its top probability;
    "sigmoid" over one output, how far it is from undecided (0.01 is as sure as 0.99; a multi-label window is not,
    since nearly every window is sure some label is absent); "none" (a regression's outputs, which have no
    confidence), its largest output."""
    if len(window_logits) == 1:
        return window_logits[0]
    weights = weights / weights.sum()
    if how == "logit-mean":
        return weights @ window_logits
    if how == "max":
        if confidence == "none":
            sureness = window_logits.max(axis=1)
        elif confidence == "sigmoid" and window_logits.shape[1] == 1:
            sureness = np.abs(window_logits[:, 0])  # the distance from 0.5 in order, without saturating
        else:
            sureness = _probabilities(window_logits, confidence == "sigmoid").max(axis=1)
        return window_logits[int(sureness.argmax())]
    mean = np.clip(weights @ _probabilities(window_logits, sigmoid), 1e-7, 1 - 1e-7)
    return np.log(mean / (1 - mean)) if sigmoid else np.log(mean)


def _probabilities(logits: np.ndarray, sigmoid: bool) -> np.ndarray:
    if sigmoid:
        return 1 / (1 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def too_long(
    tokens: Sequence[int], max_length: int, names: Sequence[str] | None = None, limit_name: str = "the model's limit"
) -> InputError | None:
    """The error for long_text="error": the first text over the limit, by its name (default "input N", 1-based);
    `limit_name` says whose limit it is (the model's, or a max_length asked for)."""
    for index, count in enumerate(tokens):
        if count > max_length:
            return InputError(
                f"{names[index] if names else input_name(index + 1)} has {count} tokens, over {limit_name} of "
                f"{max_length}; "
                "long_text (--long-text) 'chunk' classifies it whole, 'truncate' cuts it"
            )
    return None
