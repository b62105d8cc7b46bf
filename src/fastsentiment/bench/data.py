"""Benchmark data: an SST-2-style directory, one table file, or `glue/sst2` through `datasets`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastsentiment.errors import InputError
from fastsentiment.jobs.rows import RowSource, is_stream
from fastsentiment.labels import label_id


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
    if source == "glue/sst2":
        return _from_datasets(option)
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


def _from_datasets(option: str) -> BenchData:
    try:
        from datasets import load_dataset
    except ImportError:
        raise InputError(
            f"{option} glue/sst2 needs the Python package 'datasets', which is not installed: pip install datasets"
        ) from None
    try:
        data = load_dataset("glue", "sst2")
    except Exception as error:
        offline = f"{option} FILE" if option == "--calibration" else f"{option} DIR"
        raise InputError(f"could not load glue/sst2 ({str(error).splitlines()[0]}); offline, pass {offline}") from None
    validation = data["validation"]
    return BenchData(
        "glue/sst2",
        Split("validation", list(validation["sentence"]), list(validation["label"])),
        Split("test", list(data["test"]["sentence"]), None),
    )
