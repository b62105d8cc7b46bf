"""Checks of values that users and files give, shared by the places that take them."""

from __future__ import annotations

import numbers
from typing import Any


def is_count(value: Any, least: int = 1) -> bool:
    """A whole number of at least `least` (numpy's too; True is not a count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least
