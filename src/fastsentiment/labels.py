"""Label names: reading a label cell of a data file (one rule for training, evaluation and benchmarks), and what
makes a set of class names usable."""

from __future__ import annotations

from collections.abc import Sequence

from fastsentiment.errors import InputError


def label_id(value: object, names: Sequence[str] | None, where: str, renamed_by: str | None = None) -> int:
    """The class id a cell names: one of `names` (the model's or the data's labels), else an integer id.
    `renamed_by`: the caller's option that names a model's classes, offered where they have no names of their own.

    Names win over digits, so a label literally called "1" keeps its own id; a name matches in any case where no
    other name differs from it by case alone. Negative ids pass through:
    GLUE test splits mark a missing label with -1, and callers decide what a missing label means.
    """
    text = str(value).strip()
    if names and (position := name_position(text, names)) is not None:
        return position
    if (number := class_id(text)) is not None:
        return number
    known = f"expected one of {', '.join(names)} or a class id" if names else "expected a class id"
    if renamed_by and names and list(names) == generic_names(len(names)):
        known += f" (the model's classes have no names of their own: {renamed_by} names them in class-id order)"
    raise InputError(f"{where}: unknown label {text!r}; {known}")


def name_position(name: str, names: Sequence[str]) -> int | None:
    """Where `name` is among `names`: exactly, else in any case ("positive" for POSITIVE, as compare matches classes)
    where no two of `names` differ by case alone; None where it is not there."""
    if name in names:
        return list(names).index(name)
    folded = [other.casefold() for other in names]
    return folded.index(name.casefold()) if folded.count(name.casefold()) == 1 else None


def matching_classes(names: Sequence[str], others: Sequence[str]) -> list[int] | None:
    """For each of `names`, the position in `others` of the same class (`name_position`); None where the two do not
    name the same classes. "negative, positive" against a head's "POSITIVE, NEGATIVE" is [1, 0]."""
    positions = [name_position(name, others) for name in names]
    if len(names) != len(others) or None in positions or len(set(positions)) != len(positions):
        return None
    return positions


def class_id(text: str) -> int | None:
    """The integer a label cell spells ("1", "-1", or "1.0" as pandas writes ids of a column that held a NaN), or
    None."""
    whole, point, fraction = text.partition(".")
    digits = whole.removeprefix("-")
    # ASCII digits only: str.isdigit also takes "¹" (which int() refuses) and "١" (which it reads as 1)
    if digits.isascii() and digits.isdigit() and (not point or (fraction and fraction.strip("0") == "")):
        return int(whole)
    return None


def generic_names(count: int) -> list[str]:
    """The names of classes known only by their ids, as transformers writes them: LABEL_0, LABEL_1, ..."""
    return [f"LABEL_{i}" for i in range(count)]


def distinct_names(names: Sequence[str]) -> bool:
    """Whether every class has a name of its own: two alike would merge into one score, and answers would name
    the merged class."""
    return all(names) and len(set(names)) == len(names)
