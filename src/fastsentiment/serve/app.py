"""The HTTP API: Hugging Face Inference API compatible /predict and /, plus health, info, metrics.

The model loads in a background thread after the socket opens, so /health can say "not ready"
(503) while it loads and warms up, which is what orchestrators' readiness probes expect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from fastsentiment import __version__
from fastsentiment.classifier import Classifier
from fastsentiment.errors import InputError
from fastsentiment.serve.batcher import BatchSettings, DynamicBatcher, QueueFull
from fastsentiment.serve.metrics import Metrics
from fastsentiment.texts import text_problem
from fastsentiment.windows import aggregate_logits, check_options, cut, too_long

log = logging.getLogger("fastsentiment.serve")


@dataclass(frozen=True)
class ServerSettings:
    batching: BatchSettings = field(default_factory=BatchSettings)
    dynamic_batching: bool = True
    max_inputs: int = 256
    max_body_bytes: int = 1 << 20


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=1)
    function_to_apply: str | None = Field(default=None, pattern="^(softmax|sigmoid|none)$")
    long_text: str | None = Field(default=None, pattern="^(truncate|chunk|error)$")
    stride: int | None = Field(default=None, ge=0)
    aggregate: str | None = None


class PredictRequest(BaseModel):
    """Hugging Face Inference API body; top_k and raw_scores may also sit at the top level (TEI style)."""

    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str]
    parameters: Parameters | None = None
    top_k: int | None = Field(default=None, ge=1)
    raw_scores: bool = False
    truncate: bool = True


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def create_app(load_classifier: Callable[[], Classifier], settings: ServerSettings = ServerSettings()) -> FastAPI:
    metrics = Metrics()
    state: dict[str, Any] = {"classifier": None, "batcher": None, "load_error": None}

    def run_batch(sequences) -> np.ndarray:
        # Requests arrive in random length order: one padded call over the whole gathered batch wastes most of
        # its work on padding, so it runs as length-sorted calls of the classifier's (small) batch size instead.
        return state["classifier"].logits_for_ids(sequences)

    async def load() -> None:
        try:
            classifier = await asyncio.to_thread(_load_and_warm, load_classifier)
        except Exception as error:  # surfaced by /health and every request
            state["load_error"] = str(error)
            log.error("model failed to load: %s", error)
            return
        batching = (
            settings.batching
            if settings.dynamic_batching
            else BatchSettings(
                max_batch_size=1,
                max_batch_tokens=settings.batching.max_batch_tokens,
                max_wait_ms=0,
                max_queue=settings.batching.max_queue,
            )
        )
        batcher = DynamicBatcher(run_batch, batching, on_batch=metrics.observe_batch)
        batcher.start()
        state["classifier"], state["batcher"] = classifier, batcher

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(load())
        yield
        await loading
        if state["batcher"] is not None:
            await state["batcher"].drain()  # every accepted request gets its answer before exit

    app = FastAPI(title="fastsentiment", version=__version__, lifespan=lifespan)

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return _error_response(
                ApiError(413, "body_too_large", f"body over {settings.max_body_bytes} bytes"), metrics
            )
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return _error_response(error, metrics)

    async def predict(request: Request) -> list[list[dict[str, Any]]]:
        body = _parse(await _read_body(request, settings.max_body_bytes))
        classifier, batcher = _ready(state)
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        if not texts:
            raise ApiError(422, "validation", "inputs: give at least one text")
        if len(texts) > settings.max_inputs:
            raise ApiError(413, "too_many_inputs", f"inputs: at most {settings.max_inputs} texts per request")
        for index, text in enumerate(texts):
            if problem := text_problem(text):
                raise ApiError(422, "validation", f"inputs[{index}]: {problem}")
        parameters = body.parameters or Parameters()
        function = "none" if body.raw_scores else parameters.function_to_apply
        top_k = parameters.top_k or body.top_k
        with metrics.time_request():
            try:
                if parameters.long_text in (None, "truncate"):
                    logits = await batcher.submit(classifier.encoder.encode(texts))
                else:
                    logits = await _whole_documents(classifier, batcher, texts, parameters, settings)
            except InputError as error:
                raise ApiError(422, "validation", f"parameters: {error}") from None
            except QueueFull as error:
                raise ApiError(503, "overloaded", str(error), headers={"Retry-After": "1"}) from None
            except Exception as error:
                log.exception("batch failed")
                raise ApiError(500, "backend", f"inference failed: {error}") from None
        return classifier.ranked(classifier.scores(logits, function), top_k)

    # The body is parsed by hand (whatever the Content-Type) so that size, encoding and JSON errors
    # get their own status codes; the schema is still published in the OpenAPI document.
    body_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    }
    app.post("/predict", summary="Classify one text or a list", openapi_extra=body_schema)(predict)
    app.post("/", summary="Same as /predict (for huggingface_hub.InferenceClient)", openapi_extra=body_schema)(predict)

    @app.get("/health")
    async def health():
        if state["load_error"]:
            return JSONResponse({"status": "failed", "error": state["load_error"]}, status_code=503)
        if state["batcher"] is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        classifier, batcher = _ready(state)
        backend = classifier.backend
        return {
            "model": str(classifier.model.path),
            "labels": classifier.labels,
            "backend": backend.spec.name,
            "device": backend.device,
            "precision": backend.precision,
            "max_length": classifier.encoder.max_length,
            "version": __version__,
            "dynamic_batching": settings.dynamic_batching,
            "batching": vars(batcher.settings),
            "max_inputs": settings.max_inputs,
            "max_body_bytes": settings.max_body_bytes,
        }

    @app.get("/metrics")
    async def prometheus_metrics():
        batcher = state["batcher"]
        return PlainTextResponse(metrics.render(batcher.depth if batcher else 0), media_type=metrics.content_type)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> PredictRequest:
    from pydantic import ValidationError

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, "invalid_encoding", f"the body is not valid UTF-8 (byte {error.start})") from None
    try:
        return PredictRequest.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        if first.get("type") == "json_invalid":
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({first.get('msg')})") from None
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ApiError(422, "validation", f"{where}: {first.get('msg')}") from None


def _load_and_warm(load_classifier: Callable[[], Classifier]) -> Classifier:
    classifier = load_classifier()
    for size in (1, 8):
        classifier.logits(["warming up the model before the first request"] * size)
    return classifier


def _ready(state: dict) -> tuple[Classifier, DynamicBatcher]:
    if state["load_error"]:
        raise ApiError(503, "model_failed", f"the model failed to load: {state['load_error']}")
    if state["batcher"] is None:
        raise ApiError(503, "loading", "the model is loading", headers={"Retry-After": "1"})
    return state["classifier"], state["batcher"]


def _error_response(error: ApiError, metrics: Metrics) -> JSONResponse:
    metrics.count_error(error.kind)
    return JSONResponse(
        {"error": error.message, "error_type": error.kind}, status_code=error.status, headers=error.headers
    )


async def _whole_documents(classifier, batcher, texts, parameters: Parameters, settings: ServerSettings) -> np.ndarray:
    """long_text "chunk"/"error": every window goes through the batcher, at most one batch's worth at a time, so
    a huge document queues behind (and lets through) other requests' texts instead of holding the batcher."""
    limit = classifier.encoder.max_length
    stride, aggregate = check_options(parameters.long_text, parameters.stride, parameters.aggregate, limit)
    encodings = classifier.encoder.encodings(texts)
    if parameters.long_text == "error" and (error := too_long([len(e.ids) for e in encodings], limit)):
        raise error
    documents = [cut(encoding, index, limit, stride).windows for index, encoding in enumerate(encodings)]
    flat = [window.ids for windows in documents for window in windows]
    group = max(1, min(settings.batching.max_batch_size, settings.batching.max_batch_tokens // limit))
    rows = [await batcher.submit(flat[start : start + group]) for start in range(0, len(flat), group)]
    window_logits, start = np.concatenate(rows), 0
    sigmoid = classifier._default_function() == "sigmoid"
    logits = np.empty((len(texts), len(classifier.labels)), dtype=np.float32)
    for index, windows in enumerate(documents):
        weights = np.array([window.tokens for window in windows], dtype=np.float64)
        logits[index] = aggregate_logits(window_logits[start : start + len(windows)], weights, aggregate, sigmoid)
        start += len(windows)
    return logits
