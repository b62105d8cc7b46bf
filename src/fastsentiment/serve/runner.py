"""Running the app under uvicorn with a graceful stop that counts as success."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from fastsentiment.errors import FastSentimentError, InputError
from fastsentiment.serve.app import MAX_HEADER_BYTES
from fastsentiment.serve.protocol import BoundedHeadProtocol, HeadLimits


class GracefulServer(uvicorn.Server):
    """SIGTERM/SIGINT: stop accepting, answer every accepted request, exit 0.

    uvicorn's own signal capture re-raises the signal after shutting down, which turns a clean stop
    into exit status -15; a graceful stop is a success, so the signals are captured here instead.
    """

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] = lambda: None) -> None:
        super().__init__(config)
        self.on_stop = on_stop  # told first when a signal asks the server to stop

    def handle_exit(self, sig: int, frame) -> None:
        self.on_stop()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def check_port(host: str, port: int) -> int:
    """Refuse a host and port this process cannot listen on (taken by another server, a privileged port, an address
    not of this machine), in one line before the model loads; uvicorn would say so only after it. Returns the port,
    for port 0 the free one the system gave the probe, so that the server can say where it listens."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT leftovers are fine
        try:
            probe.bind(address)
        except OSError as error:
            raise InputError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        return probe.getsockname()[1]


def run(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` (from `create_app`) until SIGTERM/SIGINT; a model that cannot load stops the server at once and
    is raised here, so the command fails with its one-line error instead of answering 503 for ever."""
    # uvloop and httptools (the server extra brings them; uvicorn picks uvloop when installed): uvicorn's pure-Python
    # event loop and HTTP parser cost more CPU per request than the model at batch sizes the server reaches.
    limits = HeadLimits(app.state.settings.header_timeout_s, MAX_HEADER_BYTES)
    protocol = functools.partial(BoundedHeadProtocol, limits=limits, on_refusal=app.state.metrics.count_error)
    config = uvicorn.Config(
        app, host=host, port=port, http=protocol, log_level="warning", access_log=False, timeout_graceful_shutdown=None
    )
    serving = app.state.serving
    server = GracefulServer(config, on_stop=serving.stop_waiting)
    serving.on_failure = lambda error: setattr(server, "should_exit", True)
    server.run()
    if serving.loading:
        # Stopped while the model loads: the loading thread cannot be interrupted, and interpreter shutdown beside
        # native code still running on it (an export, a compilation) could crash; nothing was accepted, so leave.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if isinstance(serving.failure, FastSentimentError):
        raise serving.failure
    if serving.failure is not None:
        raise FastSentimentError(str(serving.failure))
