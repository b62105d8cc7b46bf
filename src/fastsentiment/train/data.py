"""Labelled training data: read, validate labels, split off a held-out slice, bucket by length."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsentiment.errors import InputError
from fastsentiment.jobs.rows import RowSource, table_format
from fastsentiment.labels import class_id, generic_names, label_id
from fastsentiment.texts import EMPTY_TEXT

UNLABELLED = -1  # the label of a text only a teacher's logits teach on (train/augment.py, --unlabelled)


@dataclass
class LabelledData:
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    lines: list[int] | None = None  # each text's line in its file, where read from one

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> LabelledData:
        lines = None if self.lines is None else [self.lines[i] for i in indices]
        return LabelledData([self.texts[i] for i in indices], self.labels[indices], lines)


def read_labelled(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str = "label",
    label_names: list[str] | None = None,
) -> tuple[LabelledData, list[str]]:
    """Read texts and labels; labels may be names or integer ids. Returns the data and label names.

    Every problem (missing column, unknown label, empty file) is raised before any training starts.
    """
    if table_format(path) == "txt":
        raise InputError(
            f"{path}: labelled data is a table with text and label columns (.csv, .tsv, .jsonl or .parquet)"
        )
    texts: list[str] = []
    raw_labels: list[str] = []
    lines: list[int] = []
    source = RowSource(path, text_column, column_option="--text-column")
    if source.columns is not None and label_column not in source.columns:  # a table's header says it for every row
        raise InputError(
            f"{path}: no label column {label_column!r} (columns: {', '.join(source.columns)}; see --label-column)"
        )
    for row in source.rows():
        if row.error:
            raise InputError(f"{path}, line {row.line}: {row.error}")
        if label_column not in row.fields:
            raise InputError(f"{path}, line {row.line}: no label column {label_column!r} (see --label-column)")
        label = row.fields[label_column]
        if label is None or (isinstance(label, float) and label != label) or not str(label).strip():
            # an empty cell, JSON null or a NaN: it would become a class of its own (named "", "None" or "nan")
            raise InputError(f"{path}, line {row.line}: no label in column {label_column!r}")
        if isinstance(label, (list, dict)):  # JSON: its text ("[1]") would become a class name
            raise InputError(
                f"{path}, line {row.line}: the label in column {label_column!r} is {json.dumps(label)}; "
                "expected a class name or id"
            )
        texts.append(row.text)
        raw_labels.append(str(label).strip())
        lines.append(row.line)
    if not texts:
        raise InputError(f"{path}: no labelled rows")
    names = label_names or _infer_label_names(raw_labels, path, lines)
    return LabelledData(texts, _to_ids(raw_labels, names, path, lines), lines), names


def read_unlabelled(
    paths: Sequence[str | Path], text_column: str | None = None, on_event: Callable[[str], None] | None = None
) -> list[str]:
    """Texts without labels for a teacher to label (`train --unlabelled`), every file's in order: a text file of one
    text per line, or a table whose text column is `text_column` (other columns, a label among them, are ignored).
    Empty lines and cells are passed over, told to `on_event`: they hold nothing to learn, and a text file's blank
    lines (between paragraphs, at its end) are not a mistake to refuse the run for."""
    texts: list[str] = []
    for path in paths:
        start, empty = len(texts), 0
        for row in RowSource(path, text_column, column_option="--text-column").rows():
            if row.error and row.error.startswith(EMPTY_TEXT):
                empty += 1
            elif row.error:
                raise InputError(f"--unlabelled {path}, line {row.line}: {row.error}")
            else:
                texts.append(row.text)
        if len(texts) == start:
            raise InputError(f"--unlabelled {path}: no texts")
        if empty and on_event:
            on_event(f"--unlabelled {path}: passed over {empty:,} empty line(s)")
    return texts


def _infer_label_names(raw: list[str], path: str | Path, lines: list[int]) -> list[str]:
    """The class names of labels given without --labels: LABEL_0... for class ids, the names sorted otherwise. A
    column of both is refused: an id among names would become a class named "0" beside the one it means."""
    is_id = [class_id(value) is not None for value in raw]
    if all(is_id):
        ids = [class_id(value) for value in raw]
        if min(ids) < 0:
            row = ids.index(min(ids))
            raise _missing_label(path, lines[row], raw[row])
        # Ids name classes 0 to the highest: a stray large id (a row's number in the label column) made a model of
        # thousands of classes without rows, or, at 99999999999, ran out of memory naming them.
        if (present := len(set(ids))) < (max(ids) + 1) / 2:
            row = ids.index(max(ids))
            raise InputError(
                f"{path}, line {lines[row]}: class id {max(ids)} would make {max(ids) + 1:,} classes, of which "
                f"{present} have a row; class ids count from 0 (or name the classes with --labels)"
            )
        return generic_names(max(ids) + 1)
    if any(is_id):
        number, name = is_id.index(True), is_id.index(False)
        raise InputError(
            f"{path}, line {lines[number]}: the label {raw[number]!r} is a class id, but line {lines[name]} names "
            f"a class ({raw[name]!r}); label every row by name or every row by id (or name the ids with --labels)"
        )
    return sorted(set(raw))


def _to_ids(raw: list[str], names: list[str], path: str | Path, lines: list[int]) -> np.ndarray:
    ids = np.empty(len(raw), dtype=np.int64)
    for row, (value, line) in enumerate(zip(raw, lines, strict=True)):
        ids[row] = label_id(value, names, f"{path}, line {line}", renamed_by="--labels")  # train's, evaluate's
        if ids[row] < 0:
            raise _missing_label(path, line, value)
        if not ids[row] < len(names):
            raise InputError(
                f"{path}, line {line}: unknown label {value!r}; expected one of "
                f"{', '.join(names)} or a class id below {len(names)}"
            )
    return ids


def _missing_label(path: str | Path, line: int, value: str) -> InputError:
    """A negative class id is how GLUE's test splits (SST-2's on the Hugging Face hub) mark a row without a label:
    say so, rather than call it an unknown class."""
    return InputError(
        f"{path}, line {line}: the label {value} marks a row without a label (as in GLUE test splits); "
        "every row needs a class name or an id of 0 or more"
    )


def split_held_out(data: LabelledData, fraction: float, seed: int) -> tuple[LabelledData, LabelledData]:
    if not 0 < fraction < 1:
        raise InputError(f"--eval-fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    held = max(1, round(len(data) * fraction))
    if held >= len(data):
        raise InputError(
            f"--eval-fraction {fraction:g} of {len(data)} row(s) holds out every row: none would be left to train on"
        )
    return data.subset(np.sort(order[held:])), data.subset(np.sort(order[:held]))


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar-length examples in random order: little padding, still shuffled.

    Shuffle, cut into pools of 50 batches, sort each pool by length, cut pools into batches,
    then shuffle the batches so long and short ones interleave.
    """
    order = rng.permutation(len(lengths))
    pool_size = batch_size * 50
    batches = []
    for start in range(0, len(order), pool_size):
        pool = order[start : start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
