"""The HTTP API: Hugging Face Inference API compatible /predict and /, plus health, info, metrics.

The model loads in a background thread after the socket opens, so /health can say "not ready"
(503) while it loads and warms up, which is what orchestrators' readiness probes expect.

The prediction routes are the hot path and skip the framework: a plain ASGI endpoint reads the
body, decodes and validates it in one msgspec call, queues the texts (tokenising happens in the
batch worker, off the event loop) and writes the msgspec-encoded answer. FastAPI serves the rest
(health, info, metrics, the OpenAPI document, whose /predict entry comes from the same msgspec types).
"""

from __future__ import annotations

import asyncio
import codecs
import gc
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from fastsentiment import __version__
from fastsentiment.backends.base import parallel_calls
from fastsentiment.checks import is_count
from fastsentiment.classifier import Classifier, function_name
from fastsentiment.errors import InputError
from fastsentiment.serve import PAD_TO_MULTIPLE_OF, WARM_UP_LENGTH
from fastsentiment.serve.batcher import BatchSettings, DynamicBatcher, QueueFull
from fastsentiment.serve.metrics import REFUSED_BY_PROTOCOL, Metrics
from fastsentiment.texts import MAX_TEXT_CHARS, has_undecodable, text_problem
from fastsentiment.tokenization import NOTHING_TO_READ, TextEncoder, Truncations, truncated
from fastsentiment.windows import with_truncation

log = logging.getLogger("fastsentiment.serve")
T = TypeVar("T")

# As nginx's default (large_client_header_buffers 4 8k) allows, with room. The HTTP parser (httptools) has no limit
# of its own: `serve` refuses a head over it as it arrives (serve/protocol.py); the prediction routes check it too,
# for the app served some other way (under Ray Serve, say).
MAX_HEADER_BYTES = 64 * 1024
WARM_UP_TEXT = "warming up the model before the first request"
PREDICT_PATHS = {
    "/predict": "Classify one text or a list",
    "/": "Same as /predict (for huggingface_hub.InferenceClient)",
}


@dataclass(frozen=True)
class ServerSettings:
    batching: BatchSettings = field(default_factory=BatchSettings)
    dynamic_batching: bool = True
    max_inputs: int = 256
    max_body_bytes: int = 1 << 20
    # A client that sends its headers and stops mid-body holds a connection and a request slot until this expires.
    body_timeout_s: float = 30.0
    # And one that never finishes its request line and headers holds a connection (serve/protocol.py).
    header_timeout_s: float = 20.0
    # Every shape of a model call up to this many tokens runs before the server is ready (`warm_shapes`).
    warm_up_length: int = WARM_UP_LENGTH
    # Model calls padded to a multiple of this many tokens; None: PAD_TO_MULTIPLE_OF where the runtime prepares
    # kernels per shape, else 1 (`load_and_warm`).
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if not is_count(self.warm_up_length, least=0):
            raise InputError(f"--warm-up-length must be a whole number of tokens, got {self.warm_up_length!r}")
        if self.pad_to_multiple_of is not None and not is_count(self.pad_to_multiple_of):
            raise InputError(
                f"--pad-to-multiple-of must be a whole number of tokens, at least 1, got {self.pad_to_multiple_of!r}"
            )
        if self.max_inputs > self.batching.max_queue:
            # Such a request could never be queued whole: it would get a 503 "retry" forever.
            raise InputError(
                f"--max-inputs {self.max_inputs} is more than --max-queue {self.batching.max_queue} holds: a request "
                "of that many texts could never be served"
            )


class Parameters(msgspec.Struct, forbid_unknown_fields=True):
    top_k: Annotated[int, msgspec.Meta(ge=1)] | None = None
    function_to_apply: str | None = None  # any case, as transformers reads it ("SOFTMAX")
    # transformers' tokenizer argument, which the Inference API passes through: false refuses over-long texts.
    truncation: bool | Literal["longest_first", "only_first", "do_not_truncate"] | None = None
    # Long documents (see Classifier.__call__): chunk them into windows whose scores are combined.
    long_text: Literal["truncate", "chunk", "error"] | None = None
    stride: Annotated[int, msgspec.Meta(ge=0)] | None = None
    aggregate: Literal["mean", "max", "logit-mean"] | None = None


class Options(msgspec.Struct):
    wait_for_model: bool = False
    use_cache: bool = True


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Hugging Face Inference API body; top_k and raw_scores may also sit at the top level (TEI style)."""

    # A text, a list of texts, or TEI's batch form: a list of one-text lists ([["a"], ["b"]]).
    inputs: str | list[str | list[str]]
    parameters: Parameters | None = None
    top_k: Annotated[int, msgspec.Meta(ge=1)] | None = None
    raw_scores: bool = False
    truncate: bool | None = None  # TEI's clients may send null; None: cut (this server's default)
    # TEI cuts at the end ("Right") unless asked otherwise; cutting the start is not offered here.
    truncation_direction: Literal["Right", "right"] = "Right"
    # The older Inference API's `options`: wait_for_model waits for a loading model instead of a 503; use_cache
    # means nothing to a local server (nothing is cached between requests): accepted.
    options: Options | None = None


class Label(msgspec.Struct):
    label: str
    score: float


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


class ServerState:
    """What the server has once the model is loaded, or why it has nothing."""

    def __init__(self) -> None:
        self.classifier: Classifier | None = None
        self.batcher: DynamicBatcher | None = None
        self.failure: Exception | None = None  # why the model could not load
        self.loading = False  # set by the app's startup until the loading thread is done
        self.settled = asyncio.Event()  # the model loaded, or failed to, or the server stops before either
        self._loop: asyncio.AbstractEventLoop | None = None
        # Told when the model cannot load: logged here; `runner.run` stops the server instead and exits with it.
        self.on_failure: Callable[[Exception], None] = lambda error: log.error("model failed to load: %s", error)

    def stop_waiting(self) -> None:
        """The server stops: requests waiting for the model (wait_for_model) are answered now (503, still loading)
        rather than holding the stop until a load that may take minutes; callable from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.settled.set)

    def ready(self) -> tuple[Classifier, DynamicBatcher]:
        if self.failure is not None:
            raise ApiError(503, "model_failed", f"the model failed to load: {self.failure}")
        if self.batcher is None or self.classifier is None:
            raise ApiError(503, "loading", "the model is loading", headers={"Retry-After": "1"})
        return self.classifier, self.batcher

    async def load(self, load_classifier: Callable[[], Classifier], settings: ServerSettings, metrics: Metrics) -> None:
        self._loop = asyncio.get_running_loop()
        batching = settings.batching
        if not settings.dynamic_batching:
            batching = BatchSettings(1, batching.max_batch_tokens, 0, batching.max_queue)
        try:
            classifier, alone = await _on_daemon_thread(
                load_and_warm,
                load_classifier,
                settings.warm_up_length,
                settings.pad_to_multiple_of,
                batching.max_batch_size,
            )
        except Exception as error:  # surfaced by /health and every request until the server stops
            self.loading = False
            self.failure = error
            self.settled.set()
            self.on_failure(error)
            return
        # Cancelled (the server stopped first), `loading` stays set: the thread still runs, and runner.run says so.
        self.loading = False
        batcher = model_batcher(classifier, alone, batching, metrics.observe_batch, metrics.observe_truncated)
        batcher.start()
        self.classifier, self.batcher = classifier, batcher
        self.settled.set()
        # Everything loaded so far lives as long as the server: taken out of the collector's view, it no longer
        # makes each full collection (a pause for the event loop and the batch thread alike) scan it.
        gc.collect()
        gc.freeze()


class PredictEndpoint:
    """POST /predict and POST / as a plain ASGI app: the route every request of the workload takes."""

    def __init__(self, state: ServerState, settings: ServerSettings, metrics: Metrics) -> None:
        self.state, self.settings, self.metrics = state, settings, metrics
        self._decoder = msgspec.json.Decoder(PredictRequest)
        self._encoder = msgspec.json.Encoder()

    async def __call__(self, scope, receive, send) -> None:
        try:
            status, body, headers = 200, await self._answer(scope, receive), None
        except ApiError as error:
            if not scope.get(REFUSED_BY_PROTOCOL):
                self.metrics.count_error(error.kind)
            status, headers = error.status, error.headers
            body = self._encoder.encode({"error": error.message, "error_type": error.kind})
        except Exception:  # a bug, not the request's fault: answered as FastAPI's error middleware would, in JSON
            log.exception("prediction failed")
            self.metrics.count_error("internal")
            status, headers = 500, None
            body = self._encoder.encode({"error": "internal server error", "error_type": "internal"})
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw_headers += [(key.lower().encode(), value.encode()) for key, value in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope, receive) -> bytes:
        request = self.parse(await self._read_body(scope, receive))
        if request.options is not None and request.options.wait_for_model and not self.state.settled.is_set():
            await self._while_connected(self.state.settled.wait(), receive)
        classifier, batcher = self.state.ready()
        texts = request_texts(request.inputs)
        if not texts:
            raise ApiError(422, "validation", "inputs: give at least one text")
        if len(texts) > self.settings.max_inputs:
            raise ApiError(413, "too_many_inputs", f"inputs: at most {self.settings.max_inputs} texts per request")
        for index, text in enumerate(texts):
            check_text(index, text)
        parameters = request.parameters or Parameters()
        try:
            long_text, function, top_k = _settings(request, parameters, classifier.encoder)
        except InputError as error:
            raise ApiError(422, "validation", f"parameters: {error}") from None
        with self.metrics.time_request():
            try:
                if long_text == "truncate":
                    logits = await self._submit_while_connected(batcher, texts, receive)
                else:
                    logits = await self._submit_windows(
                        classifier, batcher, texts, long_text, parameters, function, receive
                    )
            except ApiError:
                raise
            except QueueFull as error:
                raise ApiError(503, "overloaded", str(error), headers={"Retry-After": "1"}) from None
            except InputError as error:
                raise ApiError(422, "validation", str(error)) from None
            except Exception as error:
                log.exception("batch failed")
                raise ApiError(500, "backend", f"inference failed: {error}") from None
            return self._encoder.encode(_ranked(classifier, classifier.scores(logits, function), top_k))

    async def _submit_windows(
        self, classifier, batcher, texts, long_text: str, parameters: Parameters, function: str | None, receive
    ) -> np.ndarray:
        """Long documents as windows: cut off the event loop, queued as model inputs of their own (so the token
        budget counts windows and a huge document cannot starve short requests), folded back into one verdict.
        A request of more windows than the queue holds could never run: it is refused before they are made."""
        _, windows = await asyncio.to_thread(
            classifier.split,
            texts,
            long_text,
            parameters.stride,
            batcher.settings.max_queue,
            [f"inputs[{index}]" for index in range(len(texts))],  # as validation errors name them
        )
        flat = [window.ids for text_windows in windows for window in text_windows]
        window_logits = await self._submit_while_connected(batcher, flat, receive)
        return classifier.fold(windows, window_logits, parameters.aggregate, function)[0]

    async def _submit_while_connected(self, batcher: DynamicBatcher, texts: list, receive) -> np.ndarray:
        """The texts' logits, unless the client goes away first: then they leave the queue uncomputed.

        Without this, a client that gives up (a timeout, a closed load generator) still costs the
        model its whole request, and everyone queued behind it waits for that work.
        """
        return await self._while_connected(batcher.submit(texts), receive)

    async def _while_connected(self, awaitable: Awaitable[T], receive) -> T:
        """`awaitable`'s result, or a 499 ApiError as soon as the client goes away (the awaitable cancelled)."""
        submitted = asyncio.ensure_future(awaitable)
        gone = asyncio.ensure_future(receive())  # the body is read: the next message is http.disconnect
        # A callback rather than asyncio.wait: no waiter and no callbacks to add and remove on every request.
        gone.add_done_callback(lambda _: submitted.cancel())
        try:
            return await submitted
        except asyncio.CancelledError:
            if gone.done() and not gone.cancelled():
                raise ApiError(499, "client_gone", "the client closed the connection") from None
            raise  # this handler itself was cancelled
        finally:
            gone.cancel()

    async def _read_body(self, scope, receive) -> bytes:
        """The whole body within --body-timeout seconds. A body refused before it is read (too large, compressed)
        closes the connection: its unread bytes would otherwise be taken for the connection's next request."""
        limit = self.settings.max_body_bytes
        header_bytes = 0
        framed = False
        codings: list[bytes] = []
        for key, value in scope["headers"]:
            header_bytes += len(key) + len(value)
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise _too_large(limit)
            if key in (b"content-length", b"transfer-encoding"):
                framed = True
            if key == b"transfer-encoding":  # several lines are one list (RFC 9110, 5.3)
                codings += [part.strip() for part in value.lower().split(b",")]
            if key == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                raise ApiError(
                    415,
                    "unsupported_encoding",
                    f"Content-Encoding {value.decode('latin-1')!r} is not accepted: send the body uncompressed",
                    headers={"Connection": "close"},
                )
            if key == b"content-type" and not _may_hold_json(value):
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    f"Content-Type {value.decode('latin-1')!r}: the body is JSON (application/json)",
                    headers={"Connection": "close"},
                )
        # Codings before a final chunked: the parser reads the chunks, and theirs would go undone. Codings not ending
        # in chunked leave the body's length unknown: the parser answers that with a 400 (RFC 9112, 6.3).
        if codings and codings[-1] == b"chunked" and codings != [b"chunked"]:
            raise ApiError(
                501,
                "unsupported_transfer_encoding",
                f"Transfer-Encoding {b', '.join(codings).decode('latin-1')!r} is not supported: send the body as it "
                "is, or chunked alone",
                headers={"Connection": "close"},
            )
        if not framed:  # a body sent without either header would be read as the connection's next request
            raise ApiError(
                411,
                "length_required",
                "the request has no Content-Length (or Transfer-Encoding: chunked): its body cannot be told apart",
                headers={"Connection": "close"},
            )
        if header_bytes > MAX_HEADER_BYTES:
            raise ApiError(
                431,
                "headers_too_large",
                f"request headers over {MAX_HEADER_BYTES} bytes",
                headers={"Connection": "close"},
            )
        try:
            chunks = await _within(self.settings.body_timeout_s, _body_chunks(receive, limit))
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            raise ApiError(
                408,
                "body_timeout",
                f"the body did not arrive within {self.settings.body_timeout_s:g} s",
                headers={"Connection": "close"},
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def parse(self, raw: bytes) -> PredictRequest:
        """The request body, or an ApiError saying what is wrong with it (encoding, JSON, schema). A leading UTF-8 byte
        order mark, which some clients (PowerShell) send, is skipped, as RFC 8259 allows."""
        raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ApiError(400, "invalid_encoding", f"the body is not valid UTF-8 (byte {error.start})") from None
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as error:
            where, _, message = _split_location(str(error))
            raise ApiError(422, "validation", f"{where}: {message}") from None
        except msgspec.DecodeError as error:
            if (where := _lone_surrogate_escape(raw)) is not None:
                raise ApiError(422, "validation", f"{where}: holds a lone surrogate escape: not valid UTF-8") from None
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({error})") from None


def _may_hold_json(content_type: bytes) -> bool:
    """Whether a declared media type is one a JSON body comes with: JSON's own, text, or a form's (curl -d's
    default, which clients send whatever the body is)."""
    media = content_type.split(b";")[0].strip().lower()
    return media in (b"", b"application/json", b"text/plain", b"application/x-www-form-urlencoded", b"*/*") or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"body over {limit} bytes", headers={"Connection": "close"})


async def _body_chunks(receive, limit: int) -> list[bytes]:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(499, "client_gone", "the client closed the connection")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks


if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # Python 3.10 has no asyncio.timeout; wait_for runs the awaitable as a task of its own

    async def _within(seconds: float, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, seconds)


def _lone_surrogate_escape(raw: bytes) -> str | None:
    """Where JSON that msgspec refused holds a "\\ud800"-style escape that no text can hold ("inputs[1]",
    "parameters.long_text"; msgspec reports it as truncated or malformed input), or None; only read on that error's
    path. Python's reader takes such escapes, and also NaN and a leading byte order mark, which are plain invalid
    JSON here: only a string holding a lone surrogate counts."""
    import json

    def strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, str):
            yield value, where
        elif isinstance(value, dict):
            for key, item in value.items():
                inside = f"{where}.{key}" if where else key
                yield key, f"a key in {where or 'the body'}"
                yield from strings(item, inside)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from strings(item, f"{where}[{index}]")

    try:
        decoded = json.loads(raw)
        return next((where or "body" for text, where in strings(decoded, "") if has_undecodable(text)), None)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's reader (or ours) goes
        return None


def request_texts(inputs: str | list[str | list[str]]) -> list[str]:
    """The texts of `inputs`: one text, a list, or TEI's batch of one-text lists. TEI's text pairs ([a, b] inside
    the list) are refused: these models classify one text."""
    if isinstance(inputs, str):
        return [inputs]
    texts = []
    for index, item in enumerate(inputs):
        if isinstance(item, list):
            if len(item) != 1:
                raise ApiError(
                    422,
                    "validation",
                    f"inputs[{index}]: a list in a batch holds one text (TEI's form); "
                    f"got {len(item)}: text pairs are not classified by this server",
                )
            item = item[0]
        texts.append(item)
    return texts


def check_text(index: int, text: str) -> None:
    """The project's text rules (fastsentiment.texts), as a 422 naming the input."""
    if len(text) <= MAX_TEXT_CHARS and text.isascii() and text.isprintable() and not text.isspace() and text:
        # The common case in C passes: printable ASCII of a length the rules allow holds no undecodable bytes or
        # control characters, and this text is not blank. Anything else meets the full rules (texts.text_problem).
        return
    if problem := text_problem(text):
        raise ApiError(422, "validation", f"inputs[{index}]: {problem}")


def create_app(load_classifier: Callable[[], Classifier], settings: ServerSettings = ServerSettings()) -> FastAPI:
    metrics = Metrics()
    state = ServerState()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loading = True  # from now: a stop before the task's first step must not wait for the load either
        loading = asyncio.create_task(state.load(load_classifier, settings, metrics))
        yield
        if state.loading:  # stopped before the model is ready: no request was accepted, none waits for it
            loading.cancel()
            return
        await loading
        if state.batcher is not None:
            await state.batcher.drain()  # every accepted request gets its answer before exit

    predict = PredictEndpoint(state, settings, metrics)
    app = _PredictFirst(predict, title="fastsentiment", version=__version__, lifespan=lifespan)
    app.state.serving = state
    app.state.settings, app.state.metrics = settings, metrics  # for the HTTP protocol's own refusals (runner.run)
    # The same endpoint as routes too: what the app dispatches to it (below) never reaches them, but other methods
    # get Starlette's 405, and the OpenAPI document lists them.
    app.router.routes[:0] = [Route(path, predict, methods=["POST"]) for path in PREDICT_PATHS]
    _document_predict(app)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        metrics.count_error(error.kind)
        return JSONResponse(
            {"error": error.message, "error_type": error.kind}, status_code=error.status, headers=error.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        """Routing's own answers (404 unknown path, 405 wrong method) in the same shape as every other error."""
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        metrics.count_error(kind)
        headers = error.headers
        if error.status_code == 405:  # every method the path takes (RFC 9110): Starlette names its first route's
            allowed = {
                method
                for route in app.router.routes
                if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE
                for method in route.methods
            }
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return JSONResponse(
            {"error": str(error.detail), "error_type": kind}, status_code=error.status_code, headers=headers
        )

    # HEAD: uptime probes that ask for no body; left out of the OpenAPI document, whose operation ids are one per
    # route and method (GET and HEAD under one id made the document invalid).
    @app.head("/health", include_in_schema=False)
    @app.get("/health")
    async def health():
        if state.failure is not None:
            return JSONResponse({"status": "failed", "error": str(state.failure)}, status_code=503)
        if state.batcher is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok"}

    @app.head("/info", include_in_schema=False)
    @app.get("/info")
    async def info():
        classifier, batcher = state.ready()
        backend = classifier.backend
        return {
            "model": str(classifier.model.path),
            "labels": classifier.labels,
            "backend": backend.spec.name,
            "device": backend.device,
            "precision": backend.precision,
            "max_length": classifier.encoder.max_length,
            "pad_to_multiple_of": classifier.encoder.pad_to_multiple_of,
            # What ran: none where the runtime does not prepare kernels per shape.
            "warm_up_length": settings.warm_up_length if backend.spec.prepares_per_shape else 0,
            "version": __version__,
            "dynamic_batching": settings.dynamic_batching,
            "batching": vars(batcher.settings),
            "model_batch_size": classifier.batch_size,
            "max_inputs": settings.max_inputs,
            "max_body_bytes": settings.max_body_bytes,
        }

    @app.head("/metrics", include_in_schema=False)
    @app.get("/metrics")
    async def prometheus_metrics():
        batcher = state.batcher
        return PlainTextResponse(metrics.render(batcher.depth if batcher else 0), media_type=metrics.content_type)

    return app


class _PredictFirst(FastAPI):
    """FastAPI, except that a prediction goes straight to its endpoint: past the middleware stack and the router,
    whose layers (each wrapping `send`) took a fifth of the event loop's time per request under load."""

    def __init__(self, predict: PredictEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._predict = predict

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PREDICT_PATHS:
            await self._predict(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _settings(
    request: PredictRequest, parameters: Parameters, encoder: TextEncoder
) -> tuple[str, str | None, int | None]:
    """The long-text handling, score function and top_k a request asks for, refusing the ones it asks for twice
    over in ways that disagree (the Python API refuses the same)."""
    long_text = with_truncation(parameters.long_text or "truncate", parameters.truncation)  # as the Python API
    asked = parameters.long_text is not None or parameters.truncation is not None
    if request.truncate is False and long_text == "truncate":
        if asked:
            raise InputError("truncate is false at the top level and long_text (or truncation) asks to cut long texts")
        long_text = "error"  # TEI's refusal; its clients send false by default, so windows asked for still win
    if request.truncate is True and long_text != "truncate":
        raise InputError(f"truncate is true at the top level and long_text (or truncation) asks for {long_text!r}")
    encoder.check_options(long_text, parameters.stride, parameters.aggregate)  # the stride's room in its windows too
    function = function_name(parameters.function_to_apply)
    if request.raw_scores and function not in (None, "none"):
        raise InputError(f"raw_scores gives logits; function_to_apply {parameters.function_to_apply!r} asks otherwise")
    function = "none" if request.raw_scores else function
    if None not in (parameters.top_k, request.top_k) and parameters.top_k != request.top_k:
        raise InputError(f"top_k is {request.top_k} at the top level and {parameters.top_k} in parameters")
    return long_text, function, parameters.top_k or request.top_k


def _ranked(classifier: Classifier, scores: np.ndarray, top_k: int | None) -> list[list[Label]]:
    """Per text, the best `top_k` labels (all for None), best first; equal scores in label order."""
    labels = classifier.labels
    keep = len(labels) if top_k is None else min(top_k, len(labels))
    # Plain Python: for a handful of labels per text, numpy's argsort and gather cost more than the sort (they took
    # a tenth of the event loop's time under load).
    ranked = []
    for row in scores.tolist():
        order = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:keep]
        ranked.append([Label(labels[j], row[j]) for j in order])
    return ranked


def _document_predict(app: FastAPI) -> None:
    """Publish the prediction routes in the OpenAPI document, with the msgspec types they decode and encode."""
    (request, response), components = msgspec.json.schema_components(
        [PredictRequest, list[list[Label]]], ref_template="#/components/schemas/{name}"
    )
    operation = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {
                "description": "Labels per input, best first",
                "content": {"application/json": {"schema": response}},
            }
        },
    }
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            document.setdefault("components", {}).setdefault("schemas", {}).update(components)
            for path, summary in PREDICT_PATHS.items():
                document["paths"].setdefault(path, {})["post"] = {"summary": summary, **operation}
        return app.openapi_schema

    app.openapi = openapi


def _split_location(message: str) -> tuple[str, str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.inputs[1]`": the place first, as the other errors do."""
    text, separator, place = message.rpartition(" - at `")
    if not separator:
        return "body", "", message
    return place.rstrip("`").removeprefix("$.").removeprefix("$") or "body", "", text


def _on_daemon_thread(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`function(*args)` on a thread that does not hold up the process's exit, unlike asyncio's executor threads:
    a server stopped while its model loads (a first `--backend auto` measures for minutes) stops at once."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled: the server stopped meanwhile
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def run() -> None:
        try:
            outcome = (function(*args), None)
        except BaseException as error:
            outcome = (None, error)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop has closed: nobody waits for the model any more
            pass

    threading.Thread(target=run, name="fastsentiment-load", daemon=True).start()
    return future


def load_and_warm(
    load_classifier: Callable[[], Classifier],
    warm_up_length: int = WARM_UP_LENGTH,
    pad_to_multiple_of: int | None = None,
    most_texts_per_call: int | None = None,
) -> tuple[Classifier, Classifier]:
    """The classifier, and the same model with every thread on one call where the classifier runs calls side by
    side (for texts that arrive to an idle machine), both padding each call to a multiple of `pad_to_multiple_of`
    tokens (None: PAD_TO_MULTIPLE_OF where the runtime prepares kernels per input shape, else 1) and both warmed,
    where the runtime prepares kernels per shape, for every shape of a call up to `warm_up_length` tokens and
    `most_texts_per_call` texts (None: the model batch size; a server gathers no more than its --max-batch-size)
    (`warm_shapes`)."""
    classifier = load_classifier()
    if pad_to_multiple_of is None:
        pad_to_multiple_of = PAD_TO_MULTIPLE_OF if classifier.backend.spec.prepares_per_shape else 1
    classifier = classifier.padded_to_multiple_of(pad_to_multiple_of)
    alone = classifier.one_call_at_a_time()
    started, shapes = time.perf_counter(), 0
    for model in [classifier] if alone is classifier else [classifier, alone]:
        for size in (1, 8):
            model.logits([WARM_UP_TEXT] * size)
        shapes += warm_shapes(model, warm_up_length, most_texts_per_call)
    if shapes:
        seconds = time.perf_counter() - started
        log.info(
            "prepared %d input shapes in %.1f s (--warm-up-length %d, --pad-to-multiple-of %d)",
            shapes, seconds, warm_up_length, pad_to_multiple_of,
        )  # fmt: skip
    return classifier, alone


def warm_shapes(model: Classifier, max_tokens: int, most_texts: int | None = None) -> int:
    """Run every shape a model call of `model` can take up to `max_tokens` tokens (and the model's limit) once:
    1 to its batch size (at most `most_texts`) of texts at every width its padding gives, each shape on each of its
    parallel calls, where the runtime prepares kernels per input shape. There a call whose shape the server has not
    met yet waits for that preparation (OpenVINO, built-in model: about 5 ms a shape on the 2-core EPYC, 4 to 8 ms on
    the AMX Xeon, more the more texts), and a fresh server met it for minutes of traffic: at half load one call in
    four holds several texts. The time this takes grows with the square of the texts per call (it runs 1 + 2 + ...
    of them at each width). Returns the number of shapes run (0 where the runtime does not prepare per shape)."""
    if not model.backend.spec.prepares_per_shape:
        return 0
    encoder = model.encoder
    longest = min(max_tokens, encoder.max_length)
    # A text of at least `longest` tokens, cut to each width as the encoder cuts (its closing tokens kept).
    ids = encoder.encodings([" ".join([WARM_UP_TEXT] * longest)])[0].ids
    calls = parallel_calls(model.backend)
    widths = sorted({encoder.padded_width(length) for length in range(encoder.special_tokens + 1, longest + 1)})
    texts_per_call = range(1, min(model.batch_size, most_texts or model.batch_size) + 1)
    for texts in texts_per_call:
        for width in widths:
            # `calls` calls at once, so that each of the runtime's streams prepares the shape for itself: OpenVINO
            # gives a call to whichever stream is free, so this is likely rather than certain (after it, a first call
            # at a warmed length on either stream cost up to 2 ms more than its repeats, as any change of length
            # does, not 5).
            model.logits_for_ids([truncated(ids, width, encoder.closing_tokens)] * (texts * calls), batch_size=texts)
    return len(texts_per_call) * len(widths)


def counting_encoder(
    encoder: TextEncoder, on_truncated: Callable[[int, int, int], None]
) -> Callable[[Sequence[str]], list[list[int]]]:
    """The batch worker's tokeniser: cuts are counted per batch, not named per text (a warning about "input 3" of a
    model batch would name no request, and a busy server would log one per long request)."""

    def encode(texts: Sequence[str]) -> list[list[int]]:
        cuts = Truncations(named=0)
        ids = encoder.encode(texts, cuts)
        if any(encoder.reads_nothing(len(sequence)) for sequence in ids):
            # The batcher encodes the texts again one by one, to fail that text's request alone: counted then.
            raise InputError(NOTHING_TO_READ)
        if cuts.count:
            on_truncated(cuts.count, cuts.longest, encoder.max_length)
        return ids

    return encode


def model_batcher(
    classifier: Classifier,
    alone: Classifier,
    batching: BatchSettings,
    on_batch: Callable[[int, float], None] = lambda size, seconds: None,
    on_truncated: Callable[[int, int, int], None] = lambda count, longest, limit: None,
) -> DynamicBatcher:
    """The server's batcher over the models `load_and_warm` gives (not started: `start()` it in a running loop).
    `on_truncated(count, longest, limit)` hears of each batch's texts cut to the model's length."""
    # Requests arrive in random length order: one padded call over the whole gathered batch wastes most of
    # its work on padding, so it runs as length-sorted calls of the classifier's (small) batch size instead.
    return DynamicBatcher(
        counting_encoder(classifier.encoder, on_truncated),
        classifier.logits_for_ids,
        batching,
        on_batch=on_batch,
        concurrency=parallel_calls(classifier.backend),
        run_alone=None if alone is classifier else alone.logits_for_ids,
        alone_up_to=classifier.batch_size,
        name_text=lambda index: f"inputs[{index}]",  # as the request's validation errors name them
        call_size=classifier.batch_size,
    )
