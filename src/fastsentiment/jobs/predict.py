"""The one classify step both engines run on a chunk of rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from fastsentiment.classifier import Classifier, Prediction
from fastsentiment.jobs.rows import Row
from fastsentiment.tokenization import Truncations
from fastsentiment.windows import LongText


def predict_rows(
    clf: Classifier, rows: Sequence[Row], long_text: LongText = LongText(), truncations: Truncations | None = None
) -> list[Prediction | None]:
    """A prediction per row, in row order; None for a row that carries an error (it is never sent to the model).
    Under long_text="error" a row over the model's limit becomes such a row, so that it fails alone instead of
    stopping the job. `truncations`: the job's count of truncated rows (default: this chunk's own)."""
    if long_text.long_text == "error":
        _refuse_long_rows(clf, [row for row in rows if row.error is None])
    good = [row for row in rows if row.error is None]
    names = [row.name for row in good]  # what a truncation warning calls a row: its line in the file
    texts = [row.text for row in good]
    predictions = iter(clf.predict(texts, names=names, truncations=truncations, **asdict(long_text)) if good else [])
    return [None if row.error is not None else next(predictions) for row in rows]


def _refuse_long_rows(clf: Classifier, rows: Sequence[Row]) -> None:
    limit = clf.encoder.max_length
    for row, encoding in zip(rows, clf.encoder.encodings([row.text for row in rows]), strict=True):
        if (count := len(encoding.ids)) > limit:
            row.error = f"{count} tokens, over the model's limit of {limit} (--long-text chunk classifies it whole)"
