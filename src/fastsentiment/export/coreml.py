"""Convert the ANE layout of a model to a CoreML ML program (fp16, int32 inputs).

Conversion runs anywhere coremltools installs (Linux included); loading the package for
prediction needs macOS.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from fastsentiment.errors import FastSentimentError, InputError, missing_extra
from fastsentiment.models import ModelDir
from fastsentiment.models.architectures import ane_layout_problem
from fastsentiment.outputs import check_output_place, through_link

DEFAULT_LENGTH = 128


def export_coreml(model: ModelDir, target: Path, seq_lengths: Sequence[int] = (DEFAULT_LENGTH,)) -> Path:
    """Write `target` (.mlpackage) with inputs input_ids and attention_mask of shape (1, L).

    One length gives a fixed-shape model; several give enumerated shapes (the largest is the default),
    which the Neural Engine supports where fully flexible shapes would fall back to the CPU.
    """
    if problem := ane_layout_problem(model.model_type, model.config):
        raise InputError(problem)
    # Checked before coremltools is imported: on Linux its import prints a dozen lines of its own.
    lengths = sorted(set(seq_lengths))
    if not lengths or lengths[0] < 2 or lengths[-1] > model.max_length:
        raise InputError(f"sequence lengths must lie between 2 and {model.max_length}, got {list(seq_lengths)}")
    if len(lengths) > 1 and (reason := model.architecture.coreml_one_length):
        raise InputError(
            f"a {model.model_type} package holds one sequence length ({reason}): export one package per length"
        )
    if target.suffix != ".mlpackage":
        raise InputError(f"{target}: a CoreML ML program is saved as a .mlpackage directory")
    if target.exists() and not is_package(target):
        # An earlier package is replaced, as the other exports replace their files; anything else is not ours.
        raise InputError(f"{target} exists and is not a CoreML package; remove it or choose another path")
    target = through_link(target)
    check_output_place(target, folder=True, name="OUT")
    try:
        ct = import_coremltools()
        import numpy as np
        import torch
    except ImportError as error:
        raise missing_extra(error.name or "coremltools", "coreml", "CoreML export") from None
    from fastsentiment.models.ane import ane_model_from_dir

    network = ane_model_from_dir(model)

    class Int32Inputs(torch.nn.Module):
        """CoreML feeds int32; the embedding lookups take them as they are."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, input_ids, attention_mask):
            return self.network(input_ids, attention_mask)

    import warnings

    example = torch.ones((1, lengths[-1]), dtype=torch.int32)
    with torch.inference_mode(), warnings.catch_warnings():
        # the tracer warns of Python arithmetic on shapes (DeBERTa-v2's relative positions), which the lengths the
        # package is made for fix: a dozen lines of noise around the command's one line
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(Int32Inputs().eval(), (example, example))
    if len(lengths) == 1:
        shape = (1, lengths[0])
    else:
        shape = ct.EnumeratedShapes(shapes=[(1, n) for n in lengths], default=(1, lengths[-1]))

    # Quiet: coremltools draws a progress bar for each of its passes over the graph (a dozen lines in a log) and
    # warns that torch 2.13 is newer than it was tested with. An error still raises, with its own message.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        converted = ct.convert(
            traced,
            inputs=[
                ct.TensorType(name="input_ids", shape=shape, dtype=np.int32),
                ct.TensorType(name="attention_mask", shape=shape, dtype=np.int32),
            ],
            outputs=[ct.TensorType(name="logits")],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            # Enumerated shapes on two inputs need the macOS 15 / iOS 18 ML program format.
            minimum_deployment_target=ct.target.macOS13 if len(lengths) == 1 else ct.target.macOS15,
        )
    converted.short_description = f"{model.path.name}: sequence classification ({', '.join(model.labels)})"
    converted.user_defined_metadata["labels"] = ",".join(model.labels)
    converted.user_defined_metadata["seq_lengths"] = ",".join(map(str, lengths))
    # Saved beside the target first, so that a failed save leaves an earlier package whole.
    partial = target.with_name(f".{target.stem}.partial.mlpackage")  # coremltools insists on the suffix
    shutil.rmtree(partial, ignore_errors=True)
    try:
        converted.save(str(partial))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    except OSError as error:  # a full disk: coremltools' copy fails with shutil.Error's list of every file it missed
        shutil.rmtree(partial, ignore_errors=True)
        raise FastSentimentError(f"cannot write {target}: {_reason(error)}") from None
    return target


def _reason(error: OSError) -> str:
    """Why a write failed, in the system's words: shutil.Error carries (source, target, "[Errno 28] No space left on
    device: '…'") for each file it could not copy; the first one's is the reason."""
    if error.strerror:
        return error.strerror
    failures = error.args[0] if error.args and isinstance(error.args[0], list) else []
    text = str(failures[0][2]) if failures and len(failures[0]) == 3 else str(error)
    return text.split("] ", 1)[-1].split(": '", 1)[0]


def import_coremltools():
    """coremltools, imported without the lines it logs on import (off macOS, a dozen "Failed to load ..." for its
    prediction library; anywhere, the scikit-learn and torch versions it was not tested with): noise around a
    command's own output. Its errors still show."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with _interrupt_after():
        import coremltools

    return coremltools


@contextlib.contextmanager
def _interrupt_after() -> Iterator[None]:
    """Ctrl+C held back until the block ends. coremltools imports its optional libraries (torch among them) under a
    bare `except:`: an interrupt landing there was swallowed (the export ran on and exited 0) or left torch half
    imported (a traceback, or an abort inside pybind11)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set signal handlers
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: pressed.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if pressed:  # delivered as the handler before would have (the command's sets itself to ignore later ones)
        if callable(previous):
            previous(signal.SIGINT, None)
        raise KeyboardInterrupt


def is_package(path: Path) -> bool:
    """A directory as coremltools saves an ML program: a Manifest.json beside the model's Data folder."""
    return path.is_dir() and (path / "Manifest.json").is_file()
