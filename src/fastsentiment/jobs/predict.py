"""The one classify step both engines run on a chunk of rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

from fastsentiment.classifier import Classifier, Prediction
from fastsentiment.errors import InputError
from fastsentiment.jobs.rows import Row
from fastsentiment.tokenization import NOTHING_TO_READ, TextEncoder, Truncations
from fastsentiment.windows import LongText

log = logging.getLogger("fastsentiment")


def predict_rows(
    clf: Classifier, rows: Sequence[Row], long_text: LongText = LongText(), truncations: Truncations | None = None
) -> list[Prediction | None]:
    """A prediction per row, in row order; None for a row that carries an error (it is never sent to the model).
    Under long_text="error" a row over the model's limit becomes such a row, so that it fails alone instead of
    stopping the job. `truncations`: the job's count of truncated rows (default: this chunk's own)."""
    if long_text.long_text == "error":
        _refuse_long_rows(clf, rows)
    try:
        predictions = _predict(clf, rows, long_text, truncations)
    except InputError:  # a text its tokenizer reduces to nothing (rare: found only then), which fails alone
        for row, encoding in _encoded(clf, rows):
            if clf.encoder.reads_nothing(len(encoding.ids)):
                row.error = NOTHING_TO_READ
        predictions = _predict(clf, rows, long_text, truncations)
    return [None if row.error is not None else next(predictions) for row in rows]


def _predict(clf: Classifier, rows: Sequence[Row], long_text: LongText, truncations: Truncations | None) -> Iterator:
    good = [row for row in rows if row.error is None]
    names = [row.name for row in good]  # what a truncation warning calls a row: its line in the file
    texts = [row.text for row in good]
    return iter(clf.predict(texts, names=names, truncations=truncations, **asdict(long_text)) if good else [])


def _refuse_long_rows(clf: Classifier, rows: Sequence[Row]) -> None:
    limit, limit_name = clf.encoder.max_length, clf.encoder.limit_name
    for row, encoding in _encoded(clf, rows):
        if (count := len(encoding.ids)) > limit:
            row.error = f"{count} tokens, over {limit_name} of {limit} (--long-text chunk classifies it whole)"


def _encoded(clf: Classifier, rows: Sequence[Row]) -> Iterator[tuple[Row, Any]]:
    """The rows without an error, each with its tokenizer encoding."""
    good = [row for row in rows if row.error is None]
    return zip(good, clf.encoder.encodings([row.text for row in good]), strict=True)


def warn_truncated_rows(count: int, encoder: TextEncoder) -> None:
    """A job's closing count of the rows cut to the encoder's limit (both engines say it the same way)."""
    log.warning(
        "%s rows were truncated to %s of %d tokens in all (--long-text chunk classifies whole texts)",
        f"{count:,}",
        encoder.limit_name,
        encoder.max_length,
    )
