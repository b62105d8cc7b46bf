"""Benchmark data: an SST-2-style directory, one table file, or `glue/sst2` through `datasets`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastsentiment.errors import InputError
from fastsentiment.jobs.rows import RowSource, is_stream
from fastsentiment.labels import label_id, matching_classes

# Where this project's checkouts find GLUE SST-2 (a dev.tsv and a test.tsv), relative to the working folder; the
# commands that default to it say so where it is not there.
SST2_FOLDER = "../shared/data/sst2"
# SST-2 from the Hugging Face hub, through the `datasets` package.
GLUE_SST2 = "glue/sst2"


@dataclass
class Split:
    name: str
    texts: list[str]
    labels: list[int] | None  # class ids, or None when the split is unlabelled
    names: list[str] | None = None  # what a message calls each text ("dev.tsv, line 4"), where it came from a file


@dataclass
class BenchData:
    source: str
    labelled: Split | None  # accuracy and agreement
    speed: Split  # throughput and latency
    dev: Split | None = None  # the accuracy split's texts, labelled or not (`compare`); default: `labelled`

    @property
    def agreement(self) -> Split:
        """The texts two configurations are compared on: the dev split (a folder's dev.tsv, or the file itself)."""
        return self.dev or self.labelled or self.speed


def load_bench_data(
    source: str,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    option: str = "--data",
    text_option: str = "--text-column",
    with_labels: bool = True,
) -> BenchData:
    """Read the benchmark data; labels may be class ids or, given `label_names`, the model's label names. `option`
    and `text_option`: the command's options that named `source` and the text column, for the messages when either
    is not there. No `text_column`: a column named 'sentence' or 'text'. No `label_column`: 'label' where there is
    one (data without labels measures speed only); a `label_column` named must be there. `with_labels=False`: the
    texts alone (labels, whatever they hold, are not read)."""
    path = Path(source).expanduser()
    labels = LabelColumn(label_column or "label", required=label_column is not None) if with_labels else None
    if path.is_dir():
        dev, test = path / "dev.tsv", path / "test.tsv"
        if not dev.is_file():
            raise InputError(f"{path}: expected dev.tsv (and test.tsv) as in GLUE SST-2")
        labelled = _read_table(dev, text_column, labels, label_names, text_option)
        speed = _read_table(test, text_column, None, None, text_option) if test.is_file() else labelled
        return BenchData(str(path), labelled if labelled.labels is not None else None, speed, labelled)
    if path.is_file():
        split = _read_table(path, text_column, labels, label_names, text_option)
        return BenchData(str(path), split if split.labels is not None else None, split, split)
    if source == GLUE_SST2:
        return from_datasets(option, label_names)
    if is_stream(path):
        raise InputError(f"{option} {source} is a pipe or stdin, which cannot be read again: save it to a file")
    raise InputError(f"{option} {source}: no such file or directory (or use glue/sst2 with internet access)")


@dataclass(frozen=True)
class LabelColumn:
    name: str
    required: bool  # named by the user: its absence is an error, not unlabelled data


def _read_table(
    path: Path, text_column: str | None, label: LabelColumn | None, label_names: list[str] | None, text_option: str
) -> Split:
    rows = []
    for row in RowSource(path, text_column, column_option=text_option).rows():
        if row.error:
            raise InputError(f"{path}, line {row.line}: {row.error}")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    texts = [row.text for row in rows]
    labels = None
    if label is not None and label.required and label.name not in rows[0].fields:
        raise InputError(f"{path}: no label column {label.name!r} (columns: {', '.join(rows[0].fields)})")
    if label is not None and label.name in rows[0].fields:
        labels = [label_id(row.fields[label.name], label_names, f"{path}, line {row.line}") for row in rows]
        if max(labels) < 0:
            labels = None  # GLUE test splits mark missing labels with -1
        elif min(labels) < 0:  # some rows labelled, some not: an accuracy on part of the file would not say so
            row, value = next((r, v) for r, v in zip(rows, labels, strict=True) if v < 0)
            raise InputError(
                f"{path}, line {row.line}: the label {value} marks a row without a label (as in GLUE test splits) "
                "among labelled rows; label every row, or none (speed only)"
            )
        elif label_names and max(labels) >= len(label_names):
            raise InputError(
                f"{path}: label id {max(labels)} does not exist in the model, whose labels are {', '.join(label_names)}"
            )
    return Split(path.stem, texts, labels, [f"{path.name}, line {row.line}" for row in rows])


def needs_datasets(option: str) -> None:
    """Refuse glue/sst2 in one line where `datasets` is not installed (before a model loads, where one will)."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise InputError(
            f"{option} {GLUE_SST2} needs the Python package 'datasets', which is not installed: pip install datasets"
        ) from None


def from_datasets(option: str, label_names: list[str] | None = None) -> BenchData:
    """GLUE SST-2 from the hub: labelled validation, unlabelled test. Where the model's `label_names` name GLUE's
    classes, a label is the model's class of the same name ("negative" for NEGATIVE, in any case), not the class of
    the same id: a model whose head lists POSITIVE first would otherwise be scored inverted; elsewhere (LABEL_0,
    LABEL_1) the class of the same id."""
    needs_datasets(option)
    from datasets import load_dataset

    try:
        data = load_dataset("glue", "sst2")
    except Exception as error:
        offline = f"{option} FILE" if option in ("--calibration", "evaluate") else f"{option} DIR"
        raise InputError(f"could not load glue/sst2 ({str(error).splitlines()[0]}); offline, pass {offline}") from None
    validation = data["validation"]
    labels = list(validation["label"])
    glue_names = validation.features["label"].names  # ["negative", "positive"]
    # By name where the head names GLUE's classes; a head without names of its own (LABEL_0, LABEL_1) takes GLUE's
    # ids as they are.
    positions = matching_classes(glue_names, label_names) if label_names else None
    if positions is not None:
        labels = [positions[label] for label in labels]
    return BenchData(
        GLUE_SST2,
        Split("validation", list(validation["sentence"]), labels),
        Split("test", list(data["test"]["sentence"]), None),
    )
