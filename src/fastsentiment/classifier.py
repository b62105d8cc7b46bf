"""The public API: `Classifier.load(...)` and calls shaped like `transformers.pipeline` output."""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastsentiment.backends import Backend, load_backend
from fastsentiment.backends.base import WORKLOADS, parallel_calls
from fastsentiment.backends.registry import default_batch_size
from fastsentiment.checks import is_count
from fastsentiment.errors import InputError
from fastsentiment.models import ModelDir, resolve_model
from fastsentiment.texts import input_name, text_problem
from fastsentiment.tokenization import NOTHING_TO_READ, TextEncoder, Truncations, checked_pad_multiple
from fastsentiment.windows import (
    Window,
    aggregate_logits,
    cut,
    too_long,
    truncation_flag,
    truncation_window,
    window_count,
    with_truncation,
)

FUNCTIONS = ("softmax", "sigmoid", "none")
PADDINGS = (None, True, False, "longest", "max_length", "do_not_pad")  # transformers' values
_UNSET: Any = object()


@dataclass(frozen=True)
class Prediction:
    """Everything known about one classified text.

    `tokens` is the text's length in tokens (special tokens included) and `windows` how many model inputs it took
    (more than 1 only with long_text="chunk"); `chunks` (with return_chunks=True) gives each window's character
    span, tokens and scores, to see which part of a long text drove the verdict.
    """

    label: str
    score: float
    scores: dict[str, float]
    logits: list[float]
    tokens: int | None = None
    windows: int = 1
    chunks: list[dict[str, Any]] | None = None


@dataclass
class _Reading:
    """Logits per text, and what the long-text handling did to get them."""

    logits: np.ndarray
    tokens: list[int]
    windows: list[list[Window]]
    window_logits: list[np.ndarray]


class Classifier:
    """A sentiment model on a backend: `clf("I like cheese")` -> `[{"label": "POSITIVE", "score": 0.96}]`."""

    def __init__(
        self,
        model: ModelDir,
        backend: Backend,
        encoder: TextEncoder,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        if batch_size is not None and not is_count(batch_size):
            raise InputError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
        self.model = model
        self.backend = backend
        self.encoder = encoder
        # texts per model call; None: the device's (32, 256 on a CUDA GPU)
        self.batch_size = default_batch_size(backend.device) if batch_size is None else batch_size
        self.threads = threads  # the cap the backend was loaded with (None: every usable CPU)
        self.labels = model.labels
        self._pool: ThreadPoolExecutor | None = None  # for backends that run several calls at once

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        backend: str | None = "auto",
        device: str | int | None = "auto",
        precision: str | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        workload: str = "throughput",
        tune: bool = False,
        labels: Sequence[str] | None = None,
        pad_to_multiple_of: int = 1,
    ) -> Classifier:
        """Load a model (built-in name, local directory or hub id; default: the built-in model).

        `backend="auto"` is the fastest faithful backend measured for this model on this machine for `workload`
        ("throughput": batched texts; "latency": one text at a time; "start": a one-off call, where start-up
        dominates; "serve": a server's mix of both, see `backends.auto.decision_for`). Without a cached measurement
        it is a choice by CPU flags, unless `tune=True` measures now (minutes the first time, exports included;
        cached for later loads). `threads` caps the compute threads (default: every usable CPU).
        `device` also takes what pipeline code passes: -1 (the CPU), 0, 1, ... (a CUDA GPU), a torch.device, None.
        `labels` renames the classes in class-id order (for checkpoints whose config says LABEL_0, LABEL_1, ...).
        `pad_to_multiple_of` rounds each model call's length up to a multiple of that many tokens, as transformers'
        tokenizers do: fewer distinct shapes for a runtime that prepares kernels per shape (OpenVINO), at the cost of
        computing the padding.
        """
        if threads is not None and not is_count(threads):
            raise InputError(f"threads must be a whole number of at least 1 (None: every usable CPU), got {threads!r}")
        checked_pad_multiple(pad_to_multiple_of)  # before a hub id is resolved, as the options above
        if isinstance(labels, str):
            raise InputError(f"labels must be a list of names in class-id order, not one string ({labels!r})")
        labels = None if labels is None else list(labels)  # any iterable of names
        if labels is not None and not labels:
            raise InputError("labels must be a list of names in class-id order, got an empty one")
        if workload not in WORKLOADS:  # whatever the backend: a typo would quietly take the throughput setup
            raise InputError(f"unknown workload {workload!r}; expected one of {', '.join(WORKLOADS)}")
        device = device_name(device)
        if is_count(max_length, least=0):  # numpy's whole numbers too, as batch_size, threads and a call's max_length
            max_length = int(max_length)
        model_dir = resolve_model(model)
        if labels is not None:
            model_dir = model_dir.with_labels(labels)
        encoder = TextEncoder.from_model_dir(model_dir, max_length=max_length).padded_to_multiple_of(pad_to_multiple_of)
        loaded = load_backend(model_dir, backend, device, precision, threads, workload, measure=tune)
        return cls(model_dir, loaded, encoder, batch_size, threads)

    def one_call_at_a_time(self) -> Classifier:
        """This model, backend and precision with every thread on one call: itself, unless its backend splits
        its threads into side-by-side calls (OpenVINO's throughput streams), which makes a lone text slower
        (3.3 against 2.2 ms for the built-in model on the AMX Xeon). A server keeps both: the streams for a
        queue, this for a text that arrives to an idle machine."""
        if parallel_calls(self.backend) == 1:
            return self
        return Classifier.load(
            self.model.path,
            backend=self.backend.spec.name,
            device=self.backend.device,
            precision=self.backend.precision,
            max_length=self.encoder.max_length,
            batch_size=self.batch_size,
            threads=self.threads,
            workload="latency",
            labels=self.labels,
            pad_to_multiple_of=self.encoder.pad_to_multiple_of,
        )

    def padded_to_multiple_of(self, multiple: int) -> Classifier:
        """This classifier, on the same loaded backend, with its model calls padded to a multiple of `multiple`
        tokens (see `load`)."""
        padded = copy.copy(self)
        padded.encoder = self.encoder.padded_to_multiple_of(multiple)
        return padded

    def __repr__(self) -> str:
        backend = self.backend
        return (
            f"Classifier(model={str(self.model.path)!r}, backend={backend.spec.name!r}, "
            f"device={backend.device!r}, precision={backend.precision!r})"
        )

    # ---- pipeline-compatible call -------------------------------------------------------
    def __call__(
        self,
        inputs: str | Sequence[str] | Mapping[str, str] | Sequence[Mapping[str, str]],
        *,
        batch_size: int | None = None,
        top_k: int | None = _UNSET,
        function_to_apply: str | None = None,
        long_text: str = "truncate",
        stride: int | None = None,
        aggregate: str | None = None,
        return_chunks: bool = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        padding: bool | str | None = None,
    ) -> list | dict:
        """Classify one text or a list, returning what `transformers.pipeline("text-classification")` returns.

        Without `top_k`, each text gives its best label as `{"label", "score"}` (a list of these for a
        list of texts). `top_k=None` gives every label, `top_k=k` the best k, best first.
        `function_to_apply` is "softmax" (default for several labels), "sigmoid" or "none" (raw logits).
        Texts longer than the model accepts are truncated with a warning (`long_text="truncate"`), classified
        whole as overlapping windows of the model's length sharing `stride` tokens whose scores `aggregate`
        combines (`"chunk"`: "logit-mean" token-weighted logits, the default; "mean" token-weighted probabilities;
        "max" the most confident window),
        or refused (`"error"`). `return_chunks=True` adds each text's windows (character span, tokens, label,
        score) as "chunks" to its best-label answer. `truncation`, the tokenizer argument pipelines take, is the
        same choice as in transformers: True cuts (long_text="truncate"), False refuses (long_text="error"), and
        `max_length` is this call's limit (at most the loaded one) where it cuts in transformers: with truncation on,
        or unset without `padding`. `padding` otherwise changes nothing: batches are padded as they need, which no
        score depends on. As in transformers, an input may be a record
        `{"text": ...}` (a lone one is answered by one dict, not a list); text pairs are refused.
        """
        if return_chunks and top_k is not _UNSET:
            raise InputError("return_chunks adds the windows to the best-label answer: leave top_k unset")
        long_text = with_truncation(long_text, truncation)
        truncation = truncation_flag(truncation)
        # Checked before any text is read or runs: a typo found after the model read every text cost the whole call,
        # and a generator's texts were used up.
        check_top_k(top_k)
        function_name(function_to_apply)
        self.encoder.check_options(long_text, stride, aggregate)
        self._batch_size(batch_size)
        if padding not in PADDINGS:
            raise InputError(f"padding is one of {', '.join(map(repr, PADDINGS))}, got {padding!r}")
        # As in transformers: max_length cuts where truncation is on, or unset without padding (which it would size).
        cuts_at = max_length if truncation is True or (truncation is None and not padding) else None
        if max_length is not None:
            least = self.encoder.special_tokens + 1
            if not is_count(max_length) or not least <= max_length <= self.encoder.max_length:
                raise InputError(
                    f"max_length must be a whole number from {least} up to the {self.encoder.max_length} tokens this "
                    f"classifier was loaded with (Classifier.load(max_length=...) sets that), got {max_length!r}"
                )
        if cuts_at is not None and cuts_at != self.encoder.max_length:
            limited = copy.copy(self)
            limited.encoder = self.encoder.limited_to(cuts_at)
            return limited(
                inputs,
                batch_size=batch_size,
                top_k=top_k,
                function_to_apply=function_to_apply,
                long_text=long_text,
                stride=stride,
                aggregate=aggregate,
                return_chunks=return_chunks,
                truncation=truncation,
            )
        single = isinstance(inputs, (str, Mapping))
        # Cuts asked for (truncation=True) are counted without a warning each, as a pipeline makes them.
        cuts = Truncations(named=0) if truncation is True else None
        texts = _texts_of(inputs)
        reading = self._read(
            texts, batch_size, long_text, stride, aggregate, truncations=cuts, function=function_to_apply
        )
        scores = self.scores(reading.logits, function_to_apply)
        if top_k is _UNSET:
            best = scores.argmax(axis=1)
            answers = [{"label": self.labels[j], "score": float(row[j])} for row, j in zip(scores, best, strict=False)]
            if return_chunks:
                for answer, windows, logits in zip(answers, reading.windows, reading.window_logits, strict=True):
                    answer["chunks"] = self._chunks(windows, logits, function_to_apply)
            return answers[0] if isinstance(inputs, Mapping) else answers
        ranked = self.ranked(scores, top_k)
        return ranked[0] if single else ranked

    def ranked(self, scores: np.ndarray, top_k: int | None = None) -> list[list[dict[str, Any]]]:
        """Per row, the best `top_k` labels (all for None) as {"label", "score"}, best first."""
        check_top_k(top_k)
        keep = len(self.labels) if top_k is None else min(int(top_k), len(self.labels))
        return [
            [{"label": self.labels[j], "score": float(row[j])} for j in np.argsort(-row, kind="stable")[:keep]]
            for row in scores
        ]

    def predict(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int | None = None,
        long_text: str = "truncate",
        stride: int | None = None,
        aggregate: str | None = None,
        return_chunks: bool = False,
        names: Sequence[str] | None = None,
        truncations: Truncations | None = None,
    ) -> list[Prediction]:
        """Label, score, every label's score, the raw logits, tokens and windows per text (see `__call__`; one
        string is one text); `names` are how truncation warnings name the texts (default "input 1", "input 2",
        ...), `truncations` what counts them (default: one for this call; a file job passes its own)."""
        reading = self._read(_texts_of(texts), batch_size, long_text, stride, aggregate, names, truncations)
        scores = self.scores(reading.logits)
        predictions = []
        for index, (row_logits, row) in enumerate(zip(reading.logits, scores, strict=False)):
            best = int(row.argmax())
            windows = reading.windows[index]
            predictions.append(
                Prediction(
                    label=self.labels[best],
                    score=float(row[best]),
                    scores={label: float(value) for label, value in zip(self.labels, row, strict=False)},
                    logits=[float(value) for value in row_logits],
                    tokens=reading.tokens[index],
                    windows=len(windows),
                    chunks=self._chunks(windows, reading.window_logits[index]) if return_chunks else None,
                )
            )
        return predictions

    # ---- the stages, for callers that time or reuse them ----------------------------------
    def logits(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int | None = None,
        long_text: str = "truncate",
        stride: int | None = None,
        aggregate: str | None = None,
        names: Sequence[str] | None = None,
        truncations: Truncations | None = None,
    ) -> np.ndarray:
        """Float32 logits [len(texts), labels], computed in length-sorted batches with dynamic padding (`names` and
        `truncations` as for `predict`)."""
        return self._read(_texts_of(texts), batch_size, long_text, stride, aggregate, names, truncations).logits

    def _read(
        self, texts, batch_size, long_text, stride, aggregate, names=None, truncations=None, function=None
    ) -> _Reading:
        self.encoder.check_options(long_text, stride, aggregate)
        self._batch_size(batch_size)  # here too: a call with no texts accepted batch_size=0 and "8"
        tokens, windows = self.split(texts, long_text, stride, names=names, truncations=truncations)
        flat = [window.ids for text_windows in windows for window in text_windows]
        if not flat:
            return _Reading(np.zeros((0, len(self.labels)), dtype=np.float32), [], [], [])
        logits, per_text = self.fold(windows, self.logits_for_ids(flat, batch_size=batch_size), aggregate, function)
        return _Reading(logits, tokens, windows, per_text)

    def split(
        self,
        texts: Sequence[str],
        long_text: str = "truncate",
        stride: int | None = None,
        max_windows: int | None = None,
        names: Sequence[str] | None = None,
        truncations: Truncations | None = None,
    ) -> tuple[list[int], list[list[Window]]]:
        """Each text's token count and the model inputs (windows) it becomes under `long_text`; more than
        `max_windows` in all is an error, raised before any window is made. Truncations are noted in `truncations`
        (default: one for this call) under `names` (default "input 1", "input 2", ...)."""
        stride, _ = self.encoder.check_options(long_text, stride, None)
        check_texts(texts)
        if names is not None and len(names) != len(texts):
            raise InputError(f"names: {len(names)} for {len(texts)} texts; give one name per text")
        encodings = self.encoder.encodings(texts)
        tokens = [len(encoding.ids) for encoding in encodings]
        for index, count in enumerate(tokens):
            if self.encoder.reads_nothing(count):
                raise InputError(f"{names[index] if names else input_name(index + 1)}: {NOTHING_TO_READ}")
        limit = self.encoder.max_length
        if long_text == "error" and (error := too_long(tokens, limit, names, self.encoder.limit_name)):
            raise error
        if long_text == "chunk":
            if (
                max_windows is not None
                and (count := sum(window_count(e, limit, stride) for e in encodings)) > max_windows
            ):
                raise InputError(
                    f"the inputs make {count:,} windows of {limit} tokens, more than the {max_windows:,} one request "
                    "may hold; send shorter or fewer texts, or a smaller stride"
                )
            return tokens, [cut(encoding, i, limit, stride).windows for i, encoding in enumerate(encodings)]
        names = names or [input_name(number) for number in range(1, len(texts) + 1)]
        cuts = truncations or Truncations()
        return tokens, [[truncation_window(e, i, limit, self.encoder.fit(e.ids, name, cuts))]
                        for i, (e, name) in enumerate(zip(encodings, names, strict=True))]  # fmt: skip

    def fold(
        self,
        windows: list[list[Window]],
        window_logits: np.ndarray,
        aggregate: str | None = None,
        function_to_apply: str | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per-text logits from the logits of all texts' windows (in `split` order), and each text's own rows.
        "mean" averages the windows' scores under `function_to_apply` (the model's own by default), given back as
        the logits that `scores` with that function turns into that mean; with "none" (raw scores, no
        probabilities to average) it is the token-weighted mean of the logits."""
        _, aggregate = self.encoder.check_options("chunk", None, aggregate)
        function = self._function(function_to_apply)
        if aggregate == "mean" and function == "none":
            aggregate = "logit-mean"
        per_text, start = [], 0
        for text_windows in windows:
            per_text.append(window_logits[start : start + len(text_windows)])
            start += len(text_windows)
        if len(window_logits) == len(windows):
            return np.asarray(window_logits, dtype=np.float32), per_text
        sigmoid = function == "sigmoid"
        # Which window is surest is read from probabilities where there are any: under the function asked for,
        # else the model's own (raw scores asked of a classifier; a softmax over one output is always 1).
        confidence = function
        if function == "none" or (function == "softmax" and len(self.labels) == 1):
            confidence = self._default_function()
        logits = np.empty((len(windows), len(self.labels)), dtype=np.float32)
        for index, (text_windows, own) in enumerate(zip(windows, per_text, strict=True)):
            weights = np.array([window.weight for window in text_windows], dtype=np.float64)
            logits[index] = aggregate_logits(own, weights, aggregate, sigmoid, confidence)
        return logits, per_text

    def _chunks(self, windows: list[Window], logits: np.ndarray, function: str | None = None) -> list[dict[str, Any]]:
        scores = self.scores(logits, function)
        return [
            {
                "start": window.start,
                "end": window.end,
                "tokens": window.tokens,
                "label": self.labels[int(row.argmax())],
                "score": float(row.max()),
            }
            for window, row in zip(windows, scores, strict=True)
        ]

    def logits_for_ids(self, sequences: Sequence[Sequence[int]], *, batch_size: int | None = None) -> np.ndarray:
        size = self._batch_size(batch_size)
        result = np.empty((len(sequences), len(self.labels)), dtype=np.float32)
        batches = list(length_sorted_batches([len(s) for s in sequences], size))

        def run(rows: np.ndarray) -> None:
            batch = self.encoder.pad([sequences[i] for i in rows])
            result[rows] = self.backend.logits(batch.input_ids, batch.attention_mask)

        self.run_batches(run, batches)
        return result

    def _batch_size(self, batch_size: int | None) -> int:
        """The texts per model call for `batch_size` (None: the classifier's), or an InputError."""
        size = self.batch_size if batch_size is None else batch_size
        if not is_count(size):
            raise InputError(f"batch size must be a whole number of at least 1, got {size!r}")
        return size

    def run_batches(self, run: Callable[[Any], None], batches: Sequence[Any]) -> None:
        """`run(batch)` for every batch: one after another, or as many at once as the backend runs calls
        (`parallel_calls`), longest batches first so that the last to finish is a short one."""
        calls = parallel_calls(self.backend)
        if calls == 1 or len(batches) <= 1:
            for batch in batches:
                run(batch)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(calls, thread_name_prefix="fastsentiment-call")
        for _ in self._pool.map(run, reversed(batches)):  # map re-raises the first failure
            pass

    def scores(self, logits: np.ndarray, function_to_apply: str | None = None) -> np.ndarray:
        function = self._function(function_to_apply)
        if function == "none":
            return logits.astype(np.float32)
        if function == "sigmoid":
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)

    @property
    def scores_are_probabilities(self) -> bool:
        """Whether its scores by default are probabilities (shown as percentages), not a regression's raw outputs."""
        return self._default_function() != "none"

    def _function(self, function_to_apply: str | None) -> str:
        """The scoring function asked for, or the model's own."""
        return function_name(function_to_apply) or self._default_function()

    def _default_function(self) -> str:
        # As transformers does: a regression's outputs are the scores; one output or a multi-label problem means
        # independent sigmoids.
        problem = self.model.config.get("problem_type")
        if problem == "regression":
            return "none"
        return "sigmoid" if problem == "multi_label_classification" or len(self.labels) == 1 else "softmax"


def check_top_k(top_k: Any) -> None:
    if top_k is not None and top_k is not _UNSET and not is_count(top_k):
        raise InputError(f"top_k must be a whole number of at least 1 (None: every label), got {top_k!r}")


def function_name(function_to_apply: Any) -> str | None:
    """`function_to_apply` checked, in lower case as transformers reads it ("SOFTMAX"); None stays None (the model's
    own)."""
    if function_to_apply is None:
        return None
    if not isinstance(function_to_apply, str):
        raise InputError(f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {function_to_apply!r}")
    if function_to_apply.lower() not in FUNCTIONS:
        raise InputError(f"unknown function_to_apply {function_to_apply!r}; expected one of {', '.join(FUNCTIONS)}")
    return function_to_apply.lower()


def device_name(device: Any) -> str:
    """`device` as the backends name it ("cpu", "cuda:1", "auto"), from a name or from what pipeline code passes:
    transformers' numbers (-1 the CPU, n >= 0 CUDA device n), a torch.device, or None (the default). Those failed with
    an AttributeError."""
    if device is None:
        return "auto"
    if isinstance(device, str):
        return device
    if isinstance(device, numbers.Integral) and not isinstance(device, bool) and device >= -1:
        return "cpu" if device == -1 else f"cuda:{int(device)}"
    if type(device).__module__ == "torch" and type(device).__name__ == "device":  # str(): "cuda:0", "cpu"
        return str(device)
    raise InputError(
        f"device must be a name such as 'cpu' or 'cuda:0', or a CUDA device number (-1: the CPU), got {device!r}"
    )


def _texts_of(inputs: Any) -> list[str]:
    """The texts of a call: one string is one text (never its characters), a record `{"text": ...}` one text, any
    other iterable (a list, a generator, a pandas Series, a dataset) is read once into a list of those. A table is
    refused: iterating a DataFrame gives its column names."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, Mapping):
        return [_record_text(inputs)]
    if isinstance(inputs, (set, frozenset)):
        raise InputError("inputs is a set, whose order is arbitrary: pass a list, to get the answers in its order")
    if hasattr(inputs, "columns"):
        raise InputError("inputs is a table: pass its text column (df['text']) or a list of texts")
    # iter(), not a look for __iter__: a dataset of __getitem__ and __len__ alone (transformers' KeyDataset) iterates
    try:
        items = None if inputs is None or isinstance(inputs, bytes) else iter(inputs)
    except TypeError:
        items = None
    if items is None:
        raise InputError(f"inputs must be a text or a list of texts, got {type(inputs).__name__}")
    return [_record_text(item) if isinstance(item, Mapping) else item for item in items]


def _record_text(record: Mapping) -> Any:
    """The text of a transformers-style record. Its other fields (a dataset row's label) are left alone, as a
    pipeline leaves them; these models classify one text, not a pair (a `text_pair` of None is no pair)."""
    if record.get("text_pair") is not None:
        raise InputError("text pairs (text_pair) are not classified: these models read one text")
    if "text" not in record:
        keys = f"the keys {', '.join(map(repr, record))}" if record else "an empty record"
        raise InputError(f"a record input holds its text under 'text', got {keys}")
    return record["text"]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar length, so dynamic padding wastes little compute."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def check_texts(texts: Sequence[str]) -> None:
    """Refuse the whole call, naming the first text that cannot be classified (1-based)."""
    for index, text in enumerate(texts, start=1):
        if problem := text_problem(text):
            raise InputError(f"{input_name(index)}: {problem}")
