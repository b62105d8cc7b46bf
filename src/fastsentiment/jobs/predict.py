"""The one classify step both engines run on a chunk of rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from fastsentiment.classifier import Classifier, Prediction
from fastsentiment.jobs.rows import Row
from fastsentiment.windows import LongText


def predict_rows(clf: Classifier, rows: Sequence[Row], long_text: LongText = LongText()) -> list[Prediction | None]:
    """A prediction per row, in row order; None for a row that carries an error (it is never sent to the model)."""
    good = [row for row in rows if row.error is None]
    predictions = iter(clf.predict([row.text for row in good], **asdict(long_text)) if good else [])
    return [None if row.error is not None else next(predictions) for row in rows]
