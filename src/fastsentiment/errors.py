"""Errors a user can cause and fix; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class FastSentimentError(Exception):
    """Base class of every error caused by input, configuration or environment."""


class ModelError(FastSentimentError):
    """A model reference that cannot be resolved or a model directory that cannot be used."""


class BackendError(FastSentimentError):
    """An unknown backend, an unsupported device or precision, or a runtime that is not installed."""


class InputError(FastSentimentError, ValueError):
    """Text that cannot be classified (empty, undecodable), a malformed input file, or arguments that cannot work
    together. A ValueError too, as transformers.pipeline's refusals are, so code written for it catches these."""


def missing_extra(package: str, extra: str, purpose: str) -> BackendError:
    """The error for an optional runtime that is not installed, naming the extra that brings it."""
    return BackendError(
        f"{purpose} needs the Python package '{package}', which is not installed: pip install 'fastsentiment[{extra}]'"
    )


def first_line(error: BaseException) -> str:
    """The first line of a (often many-line) error from a library, or its type's name where it says nothing."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
