"""Prometheus metrics of one server: requests, latency, batch sizes, queue depth, errors by kind."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("fastsentiment")

# Set in a request's ASGI scope by the connection's protocol when it refuses the request while the app reads its body
# (and counts that refusal): the app then sees the connection close, which is not a client that went away.
REFUSED_BY_PROTOCOL = "fastsentiment.refused_by_protocol"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # A registry per server, so several servers (or tests) in one process never collide.
        self.registry = CollectorRegistry()
        self.requests = Counter("fastsentiment_requests", "Prediction requests answered", registry=self.registry)
        self.latency = Histogram(
            "fastsentiment_request_seconds",
            "Prediction request latency",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fastsentiment_batch_size",
            "Texts per gathered batch (run as length-sorted calls of the model batch size)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "fastsentiment_batch_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.queue = Gauge("fastsentiment_queue_depth", "Texts waiting for the model", registry=self.registry)
        self.errors = Counter("fastsentiment_errors", "Failed requests by kind", ["kind"], registry=self.registry)
        self._said_truncation = False
        self.truncated = Counter(
            "fastsentiment_truncated_texts",
            "Texts cut to the model's length (long_text truncate)",
            registry=self.registry,
        )

    @contextmanager
    def time_request(self):
        started = time.perf_counter()
        yield
        self.requests.inc()
        self.latency.observe(time.perf_counter() - started)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_truncated(self, count: int, longest: int, limit: int) -> None:
        """Texts a batch cut to the model's length: counted, and said once per server (not once per request)."""
        if not self._said_truncation:
            self._said_truncation = True
            log.warning(
                "texts over the model's %d tokens are being cut to fit (one had %d); counted in "
                'fastsentiment_truncated_texts_total; parameters.long_text "chunk" classifies them whole',
                limit,
                longest,
            )
        self.truncated.inc(count)

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def render(self, queue_depth: int) -> bytes:
        self.queue.set(queue_depth)
        return generate_latest(self.registry)
