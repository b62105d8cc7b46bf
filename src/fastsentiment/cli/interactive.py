"""`fastsentiment interactive`: the original experiment's prompt, with its timings under -v."""

from __future__ import annotations

import io
import itertools
import sys
import time
from collections.abc import Callable

import typer

from fastsentiment.cli.app import app
from fastsentiment.cli.options import (
    AggregateOption,
    BackendOption,
    DeviceOption,
    LabelsOption,
    LongTextOption,
    MaxLengthOption,
    ModelOption,
    PrecisionOption,
    StrideOption,
    label_names,
    long_text_options,
)
from fastsentiment.errors import InputError

PROMPT = "Enter text to classify (or 'ctrl+D' to quit): "
# What a line of bytes that are not UTF-8 reads as: a lone surrogate, as surrogateescape gives (text_problem names it).
UNDECODABLE = "\udcff"


@app.command()
def interactive(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log load, tokenize and inference times and the logits."
    ),
    model: ModelOption = None,
    backend: BackendOption = "auto",
    device: DeviceOption = "auto",
    precision: PrecisionOption = None,
    max_length: MaxLengthOption = None,
    long_text: LongTextOption = "truncate",
    stride: StrideOption = None,
    aggregate: AggregateOption = None,
    labels: LabelsOption = None,
) -> None:
    """Classify texts typed at a prompt until Ctrl+D."""
    from dataclasses import asdict

    import numpy as np

    from fastsentiment.backends import load_backend
    from fastsentiment.classifier import Classifier
    from fastsentiment.errors import FastSentimentError
    from fastsentiment.jobs.rows import MAX_TEXT_CHARS
    from fastsentiment.models import resolve_model
    from fastsentiment.texts import text_problem
    from fastsentiment.tokenization import NOTHING_TO_READ, TextEncoder

    reading = long_text_options(long_text, stride, aggregate)
    if sys.stdin is None:  # started with stdin closed (`<&-`; some daemons): nothing could be typed
        raise InputError("stdin is closed: interactive reads the texts typed there")

    def log(message: str) -> None:
        if verbose:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    started = time.perf_counter()
    model_dir = resolve_model(model)
    if labels:
        model_dir = model_dir.with_labels(label_names(labels))
    runtime = load_backend(model_dir, backend, device, precision, workload="latency")
    log(f"Loaded model in {_ms(started)} ms ({runtime.spec.name}, {runtime.device}, {runtime.precision})")
    started = time.perf_counter()
    encoder = TextEncoder.from_model_dir(model_dir, max_length=max_length)
    log(f"Loaded tokenizer in {_ms(started)} ms")
    clf = Classifier(model_dir, runtime, encoder, batch_size=1)
    encoder.check_options(reading.long_text, reading.stride, reading.aggregate)  # a stride too wide for its windows
    started = time.perf_counter()
    for _ in range(3):  # first calls pay for kernel selection and allocation; pay it before the user waits
        clf.logits(["warming up the model before the first question"])
    log(f"Warmed up in {_ms(started)} ms")

    read_line = _terminal_reader() if sys.stdin.isatty() else _stream_reader()  # stdin checked before the load
    for number in itertools.count(1):
        name = f"line {number}"  # what an error calls the text: each line is its own call, so not "input 1"
        try:
            line = read_line()
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            return
        if line is None:  # Ctrl+D
            sys.stdout.write("\n")
            return
        text = line.rstrip("\r\n")
        if len(text) > MAX_TEXT_CHARS:  # as a file job refuses it: tokenised whole it would cost gigabytes
            sys.stderr.write(f"error: {name}: over the limit of {MAX_TEXT_CHARS:,} characters (split it up)\n")
            continue
        if problem := text_problem(text):
            sys.stderr.write(f"error: {name}: {problem}\n")
            continue
        try:
            started = time.perf_counter()
            if reading.long_text == "truncate":
                sequences = encoder.encode([text])
                log(f"Tokenized input in {_ms(started)} ms")
                if encoder.reads_nothing(len(sequences[0])):
                    sys.stderr.write(f"error: {name}: {NOTHING_TO_READ}\n")  # as the other modes say
                    continue
                started = time.perf_counter()
                logits = clf.logits_for_ids(sequences)
                log(f"Inferred in {_ms(started)} ms")
            else:
                (prediction,) = clf.predict([text], **asdict(reading), names=[name])
                log(
                    f"Tokenized and inferred {prediction.tokens} tokens in {prediction.windows} window(s) in {_ms(started)} ms"
                )
                logits = np.array([prediction.logits], dtype=np.float32)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            return
        except FastSentimentError as error:  # e.g. --long-text error on a long line: say so, keep the prompt
            sys.stderr.write(f"error: {error}\n")
            continue
        log(f"Logits: {[round(float(value), 4) for value in logits[0]]}")
        scores = clf.scores(logits)[0]
        best = int(scores.argmax())
        score = f"{scores[best]:.2%}" if clf.scores_are_probabilities else f"{scores[best]:.4f}"
        sys.stdout.write(f"Sentiment prediction: {clf.labels[best].lower()} ({score})\n")


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.1f}"


def _stream_reader() -> Callable[[], str | None]:
    """Lines of a pipe or file after the prompt; undecodable bytes become an error for their line, not a crash."""
    from fastsentiment.jobs.rows import MAX_TEXT_CHARS

    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", line_buffering=True)

    def read() -> str | None:
        sys.stdout.write(PROMPT)
        sys.stdout.flush()
        # A line held whole could be a whole file without line ends: read no more than one character past the
        # longest text (the caller refuses it for that), and skip the rest of such a line as it comes.
        line = stdin.readline(MAX_TEXT_CHARS + 2)
        if len(line.rstrip("\r\n")) > MAX_TEXT_CHARS:  # the caller refuses it; the rest of it goes unkept
            rest = line
            while not rest.endswith("\n") and (rest := stdin.readline(1 << 20)):
                pass
        return line or None

    return read


def _terminal_reader() -> Callable[[], str | None]:
    """Lines typed at a terminal, with line editing and history (arrow keys move the cursor or recall a line
    instead of becoming text)."""
    try:
        import readline  # noqa: F401  (input() uses it once imported)
    except ImportError:  # a Python built without it: plain input()
        pass

    def read() -> str | None:
        try:
            return input(PROMPT)
        except EOFError:
            return None
        except UnicodeDecodeError:
            return UNDECODABLE

    return read
