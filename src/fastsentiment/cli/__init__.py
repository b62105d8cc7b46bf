"""The `fastsentiment` command line. Each command lives in its own module next to what it drives;
this module only assembles them and turns user errors into one line and exit code 2."""

from __future__ import annotations

import errno
import io
import logging
import os
import signal
import sys
import threading

from fastsentiment.cli.app import app
from fastsentiment.errors import FastSentimentError

INTERRUPTED = 130  # the shell's code for a process ended by Ctrl+C (128 + SIGINT)
# Set where Ctrl+C raised in a weakref callback or a finaliser (a thread pool's, collected as a command ends), where
# Python drops the exception: the command then ended as if never interrupted, with exit code 0.
_interrupt_dropped = threading.Event()


def _register_commands() -> None:
    from fastsentiment.cli import (  # noqa: F401  (each registers itself)
        bench,
        classify,
        evaluate,
        explain,
        export,
        info,
        interactive,
        serve,
        train,
        tune,
    )


class _OneLineWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")


class _ClosedOutput(io.TextIOBase):
    """Standing in for a stdout that was closed when the command started (`>&-`): Python makes it None, and the first
    print was an AttributeError's traceback. Writing fails as a write to a closed descriptor does, in one line."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed: nothing can be written there")


def _interrupt_once(signum: int, frame) -> None:
    """Ctrl+C raises KeyboardInterrupt, as Python's own handler does, once: the clean-up it starts (a file job's
    journal, the model calls in flight joined as the interpreter ends) must finish, and a second Ctrl+C (a quick
    double press; `timeout -s INT`, which signals the process and its group) broke into that join and the process
    aborted (SIGABRT: OpenVINO's threads still running as the interpreter ended)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _unraisable_interrupts_quietly(previous):
    """A hook for exceptions Python cannot raise: an interrupt that landed in a finaliser is said by the exit code
    (130), not by a traceback under the command's output."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _interrupt_dropped.set()
        else:
            previous(unraisable)

    return hook


def main(argv: list[str] | None = None) -> None:
    interrupts, unraisable = signal.getsignal(signal.SIGINT), sys.unraisablehook
    # Not where it is ignored (a background job), nor off the main thread, where no handler can be set
    if interrupts is signal.default_int_handler and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt_once)
        sys.unraisablehook = _unraisable_interrupts_quietly(unraisable)
    try:
        _main(argv)
        if _interrupt_dropped.is_set():  # never exit 0 after Ctrl+C, though no code of the command saw it
            raise SystemExit(INTERRUPTED)
    finally:
        # For a caller in the same process (a notebook, a test): Python's own handler again, unless an interrupt came,
        # whose clean-up runs on as the interpreter ends.
        if signal.getsignal(signal.SIGINT) is _interrupt_once:
            signal.signal(signal.SIGINT, interrupts)
            sys.unraisablehook = unraisable


def _main(argv: list[str] | None) -> None:
    if sys.stdout is None:
        sys.stdout = _ClosedOutput()
    if sys.stderr is None:  # `2>&-`: errors have nowhere to go, but the exit code still says what happened
        sys.stderr = open(os.devnull, "w")  # kept open for the life of the process
    logger = logging.getLogger("fastsentiment")
    logger.addHandler(_OneLineWarnings())
    logger.propagate = False
    logger.setLevel(logging.INFO)
    _register_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        # Without standalone mode an interrupt (and any typer.Exit) comes back as an exit code, not an exception.
        code = app(args=argv, standalone_mode=False)
    except FastSentimentError as error:
        if debug:
            raise
        sys.stderr.write(f"error: {error}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(INTERRUPTED) from None
    except OSError as error:  # the machine's, not the input's: a full disk, a file removed or locked mid-run
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        sys.stderr.write(f"error: {where}{error.strerror or error}\n")
        raise SystemExit(1) from None
    except Exception as error:  # the command-line parser's own usage errors
        import typer

        if isinstance(error, typer.Abort):
            raise SystemExit(INTERRUPTED) from None
        # Usage errors by their interface: typer up to 0.27 raises click's ClickException, 0.28 its own copy of it.
        if callable(getattr(error, "show", None)) and hasattr(error, "exit_code"):
            error.show()
            raise SystemExit(2) from None
        raise
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)
