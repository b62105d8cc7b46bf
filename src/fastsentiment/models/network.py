"""The PyTorch network of a model directory, for the runtimes and flows that start from one (torch, the exporters,
training): a checkpoint that does not fit its own config.json becomes one readable error, wherever it is loaded."""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fastsentiment.errors import ModelError, first_line
from fastsentiment.models.modeldir import ModelDir


def load_network(model: ModelDir, **options: Any):
    """`AutoModelForSequenceClassification.from_pretrained(model.path, **options)` (needs torch and transformers).

    Weights whose shapes differ from what config.json describes are refused (transformers' own error only points
    at a report on the console), unless `ignore_mismatched_sizes=True` asks for them to be replaced, as a fine-tune
    of a bare encoder does for the head it adds. Weights the network needs and the file lacks (transformers would
    draw them at random: predictions that mean nothing, and differ from load to load) are refused likewise."""
    from transformers import AutoModelForSequenceClassification

    replacing = options.pop("ignore_mismatched_sizes", False)
    try:
        with transformers_quiet():
            network, report = AutoModelForSequenceClassification.from_pretrained(
                model.path, ignore_mismatched_sizes=True, output_loading_info=True, **options
            )
    except (ValueError, RuntimeError, OSError, TypeError) as error:  # transformers' words for a config it cannot build
        raise ModelError(
            f"{model.path}: the weights do not load as config.json describes them ({first_line(error).rstrip('.')})"
        ) from None
    except CORRUPT_CHECKPOINT as error:
        raise unreadable_weights(model, error) from None
    except KeyError as error:  # a name config.json gives that transformers has no entry for (hidden_act "foo")
        raise ModelError(f"{model.path}: config.json names {error}, which transformers does not know") from None
    except Exception as error:
        # huggingface_hub's strict config checks (a field of the wrong type) raise errors of their own classes.
        if type(error).__module__.split(".")[0] != "huggingface_hub":
            raise
        detail = [line.strip() for line in str(error).splitlines() if line.strip()][-1:] or [type(error).__name__]
        raise ModelError(f"{model.path}: config.json does not describe a model ({detail[0]})") from None
    if not replacing:
        refuse_misfit_weights(model, report.get("missing_keys") or [], report.get("mismatched_keys") or [])
    return network


# What reading a corrupt pytorch_model.bin raises (a pickle cut short, a zip archive that is not one).
CORRUPT_CHECKPOINT = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)


def unreadable_weights(model: ModelDir, error: BaseException) -> ModelError:
    """The error for a weights file that cannot be read at all."""
    return ModelError(f"{model.path}: unreadable weights ({first_line(error)})")


def refuse_misfit_weights(
    model: ModelDir,
    missing: Iterable[str],
    mismatched: Iterable[tuple[str, Sequence[int], Sequence[int]]],
) -> None:
    """Raise ModelError where the weights do not fit config.json: tensors (by Hugging Face name) the network needs
    and the file lacks, or holds in another shape (name, shape in the file, shape config.json gives). Every loader
    of a model directory (transformers', the ANE converter's) refuses in these words."""
    if mismatched := sorted(mismatched, key=lambda entry: (_in_head(entry[0]), entry[0])):
        name, stored, expected = mismatched[0]
        question = "is num_labels / id2label right?" if _in_head(name) else "is config.json this checkpoint's?"
        raise ModelError(
            f"{model.path}: {name} has shape {list(stored)} in the weights but {list(expected)} by config.json "
            f"({len(mismatched)} tensor(s) differ; {question})"
        )
    if missing := sorted(missing):
        more = f" and {len(missing) - 1} more tensor(s)" if len(missing) > 1 else ""
        raise ModelError(
            f"{model.path}: the weights lack {missing[0]}{more} that config.json describes (is num_hidden_layers "
            "right, and config.json this checkpoint's?)"
        )


def _in_head(name: str) -> bool:
    """Whether a Hugging Face tensor name is the classification head's, the part whose shape num_labels sets."""
    return name.split(".")[0] in {"classifier", "score"}


@contextlib.contextmanager
def transformers_quiet() -> Iterator[None]:
    """transformers draws progress bars over the weights it loads and saves, and prints a table of missing and
    unexpected keys (a fine-tune's new head, a base model's unused pooler): load_network's report says what
    matters, in one line."""
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
