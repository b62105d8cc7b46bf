"""uvicorn's HTTP protocol (httptools) with bounds on a request's head: the time it takes and the bytes it holds.

uvicorn bounds a body only through the app (here `--body-timeout`) and the head not at all: a client that opens a
connection and sends nothing, or sends its headers a byte a minute (slowloris), holds the connection for as long as
it likes, and the parser buffers a header line of any length while it waits for its end. Here a head must be whole
within `header_timeout_s` of the connection opening or its first byte (then 408), and a head that grows past
`max_head_bytes` is refused as it arrives (431); both answers close the connection, in the app's error format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class HeadLimits:
    header_timeout_s: float
    max_head_bytes: int


class BoundedHeadProtocol(HttpToolsProtocol):
    """One connection. Counting starts with the request's first byte (a request line and headers that arrive in the
    same read as it are counted only when the head goes on past that read: the bound is exact to within one read
    of the socket, and a body is never counted)."""

    def __init__(self, *args, limits: HeadLimits, on_refusal: Callable[[str], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._on_refusal = on_refusal  # told the refusal's kind, for the server's error counts
        self._head_bytes: int | None = 0  # of the head being read; None between a head's end and the next one
        self._heads_begun = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered and closing: what else it sends is not read
            return
        heads_before = self._heads_begun
        super().data_received(data)
        if self._head_bytes is not None and self._heads_begun == heads_before and not self._refused:
            self._head_bytes += len(data)  # the whole read lies inside one head
            if self._head_bytes > self._limits.max_head_bytes:
                self._refuse(431, "headers_too_large", f"request headers over {self._limits.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._heads_begun += 1
        self._head_bytes = 0
        self._arm_deadline()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm_deadline()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # after a refusal the parser's complaint about the cut-off head is not the client's
            super().send_400_response(msg)

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._head_deadline = self.loop.call_later(self._limits.header_timeout_s, self._deadline_passed)

    def _disarm_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _deadline_passed(self) -> None:
        self._head_deadline = None
        if self._head_bytes is None or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A request of this connection is still being answered, and uvicorn reads no more of the connection
            # until it is: the next head's time starts counting once it has been.
            self._arm_deadline()
            return
        self._refuse(
            408, "header_timeout", f"the request headers did not arrive within {self._limits.header_timeout_s:g} s"
        )

    def _refuse(self, status: int, kind: str, message: str) -> None:
        self._refused = True
        self._disarm_deadline()
        self._on_refusal(kind)
        body = json.dumps({"error": message, "error_type": kind}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
            + b"content-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()
