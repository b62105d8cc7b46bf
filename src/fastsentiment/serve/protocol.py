"""uvicorn's HTTP protocol (httptools) with bounds on what a client sends around a request's body: the time its head
takes and the bytes its head and a chunked body's framing and trailers hold.

uvicorn bounds a body only through the app (here `--body-timeout`, `--max-body-bytes`) and the rest not at all: a
client that opens a connection and sends nothing, or its headers a byte a minute (slowloris), held the connection
for as long as it liked, and the parser buffers a header line (or a chunked body's trailer) of any length while it
waits for its end. Here:

- a request's head must be whole within `header_timeout_s` of its first byte, or 408; a connection on which no
  request has begun (opened and silent, or only blank lines after an answer) is closed without an answer after as
  long, as nginx closes idle ones, so that no client takes an unasked-for 408 for the answer to a request it sends
  at that moment;
- a head that grows past `max_head_bytes` is refused with 431, and a chunked body whose framing and trailers pass
  `max_head_bytes` plus the body's own size likewise;
- requests pipelined behind the one being answered are read no further while MAX_PIPELINED wait;
- an upgrade uvicorn does not make (h2c) is ignored, as RFC 9110 allows: the request is answered as HTTP/1.1 with
  its body (uvicorn's parser dropped it);

the refusals close the connection, in the app's error format, as does the 400 for bytes the parser rejects
(uvicorn's own is plain text). A refusal meant for a pipelined request while the one before it is still being
answered waits for that answer, and nothing more of the connection is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fastsentiment.serve.metrics import REFUSED_BY_PROTOCOL

# A refused client that does not read its answer would keep the connection (and a graceful stop) waiting for the
# answer to drain; it is cut off after this. Also how long the rest of a refused body is read and dropped for.
CLOSE_GRACE_S = 5.0
# At most this much of a refused body is read and dropped before the connection is closed regardless.
LINGER_MAX_BYTES = 64 << 20
# Requests of one connection parsed ahead of the one being answered (HTTP pipelining): reading stops while this many
# wait. uvicorn read on whenever the request being answered read its body or listened for a disconnect, so a client
# that pipelined requests without reading the answers had everything it sent parsed and held, about 2.6 KB per
# 72-byte request (the server grew by 770 MB for 21 MB sent on one connection).
MAX_PIPELINED = 16


@dataclass(frozen=True)
class HeadLimits:
    header_timeout_s: float
    max_head_bytes: int


def _head_part(data: bytes) -> int:
    """How many of `data`'s bytes belong to a head that begins or goes on at its first byte: up to the blank line
    that ends it (CRLF or the bare LF the parser also takes), else all of them."""
    crlf = data.find(b"\r\n\r\n")
    end = len(data) if crlf < 0 else crlf + 4
    bare = data.find(b"\n\n", 0, end)  # only before it: a body after the head is not scanned
    return end if bare < 0 else bare + 2


class BoundedHeadProtocol(HttpToolsProtocol):
    """One connection. Bytes are counted per read of the socket, only for reads that lie wholly inside one head (or
    one chunked body): the bounds are exact to within one read, and a body's own bytes are never counted."""

    def __init__(self, *args, limits: HeadLimits, on_refusal: Callable[[str], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._on_refusal = on_refusal  # told the refusal's kind, for the server's error counts
        self._phase = "idle"  # "head" from a request's first byte, "body" from its headers' end, "idle" after it
        self._messages_begun = 0
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes of the read before, where a head's closing blank line may begin
        self._framing_bytes = 0  # of the body being read: what is not the body's own bytes (chunk sizes, trailers)
        self._body_bytes = 0
        self._body_bytes_in_read = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._refusal_due: tuple[bytes, str] | None = None  # an answer (and its kind) that waits for the one before
        # A head whose upgrade (h2c) is not made, rewritten without it, and where the bytes after it begin in the read
        # (on_headers_complete, data_received).
        self._head_again: bytes | None = None
        self._after_head: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw_transport = transport
        self._lingering: asyncio.TimerHandle | None = None
        self._stop_watch: asyncio.TimerHandle | None = None
        self._dropped = 0
        wrapped = _LingeringClose(transport, self)
        super().connection_made(wrapped)  # type: ignore[arg-type]
        self.flow = _PipelineBoundFlow(wrapped, self.pipeline)  # before any request's cycle takes it
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        if self._stop_watch is not None:
            self._stop_watch.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:  # the rest of a body answered unread: dropped, until the client is done
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self._raw_transport.close()
            return
        if self._refused:  # refused: what else it sends is not read
            return
        phase, messages = self._phase, self._messages_begun
        # A head that begins (or goes on) at this read's first byte, counted before the parser takes it: a read is
        # up to a few hundred kB, and one holding a whole head of 150 kB was answered as if within the limit.
        if phase in ("idle", "head"):
            before = self._head_tail if phase == "head" else b""  # a blank line may begin in the read before
            so_far = self._head_bytes if phase == "head" else 0
            if so_far + max(0, _head_part(before + data) - len(before)) > self._limits.max_head_bytes:
                self._refuse(431, "headers_too_large", f"request headers over {self._limits.max_head_bytes} bytes")
                return
        # A head's closing blank line may come a byte a read: the last bytes of the head so far, not of this read alone.
        self._head_tail = ((self._head_tail if phase == "head" else b"") + data[-3:])[-3:]
        self._body_bytes_in_read = 0
        super().data_received(data)
        while self._after_head is not None:  # an upgrade not made: the request read again, as plain HTTP/1.1
            data, self._after_head = self._head_again + data[self._after_head :], None
            self._head_again = None
            self.parser = httptools.HttpRequestParser(self)  # the old one takes what follows for the new protocol
            with contextlib.suppress(AttributeError):  # httptools < 0.6.3; uvicorn sets it on its own parser too
                # bytes after a `Connection: close` request are not an error: that request is still answered
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
            super().data_received(data)
        if self._head_again is not None:  # a uvicorn that no longer reports where the head ended: refused, not hung
            self._head_again = None
            self._refuse(400, "invalid_http", "an Upgrade this server does not make; send the request without it")
            return
        if self._refused or self.transport.is_closing():  # refused while parsing, or uvicorn answered 400
            return
        if phase == "idle" and self._phase == "head" and self._messages_begun == messages + 1:
            self._head_bytes = len(data)  # a head begun in this read and not yet ended: all of the read but blank lines
        if self._messages_begun == messages and self._phase == phase:  # the whole read lies inside one part
            if phase == "head":
                self._head_bytes += len(data)
                if self._head_bytes > self._limits.max_head_bytes:
                    self._refuse(431, "headers_too_large", f"request headers over {self._limits.max_head_bytes} bytes")
            elif phase == "body":
                self._framing_bytes += len(data) - self._body_bytes_in_read
                if self._framing_bytes > self._limits.max_head_bytes + self._body_bytes:
                    self._refuse(
                        431,
                        "headers_too_large",
                        f"the chunked body's framing and trailers over {self._limits.max_head_bytes} bytes more "
                        "than its data",
                    )
        if self._phase == "idle" and self._deadline is None and not self._answering():
            self._arm_deadline()  # bytes that begin no request (blank lines) stopped uvicorn's keep-alive timer

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages_begun += 1
        self._phase, self._head_bytes = "head", 0
        self._arm_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_deadline()
        if self.parser.should_upgrade() and not self._should_upgrade() and self.parser.get_method() != b"CONNECT":
            # An upgrade uvicorn does not make: h2c, which every JDK HttpClient (and `curl --http2`) asks for on plain
            # http. The parser skips the body as the new protocol's bytes, and uvicorn served the request with an
            # empty body (400 "not valid JSON") and dropped the rest. A server may ignore an upgrade (RFC 9110, 7.8):
            # the head is parsed again without it, with the bytes after it (data_received), and answered then.
            self._head_again = self._head_without_upgrade()
            return
        # uvicorn's first: a request target it cannot parse (`http://x:99999/`, CONNECT's `host:443`) raises there,
        # before this request has a cycle; its refusal is then for a head, after the answer before it (`_refuse`).
        super().on_headers_complete()
        self._phase, self._framing_bytes, self._body_bytes = "body", 0, 0

    def on_body(self, body: bytes) -> None:
        self._body_bytes_in_read += len(body)
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = "idle"
        if self._head_again is None:  # else the parser skipped the body of a request read again (on_headers_complete)
            super().on_message_complete()

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn calls this while it handles the parser's HttpParserUpgrade for an upgrade it does not make; the
        exception says where the bytes after the head begin in this read. The request is read again (data_received),
        without uvicorn's warning."""
        upgrade = sys.exc_info()[1]
        if self._head_again is not None and isinstance(upgrade, httptools.HttpParserUpgrade):
            self._after_head = upgrade.args[0]
        else:
            super()._unsupported_upgrade_warning()

    def _head_without_upgrade(self) -> bytes:
        """The request line and headers just parsed, without Upgrade, HTTP2-Settings and their Connection tokens."""
        dropped = (b"upgrade", b"http2-settings")
        version = self.parser.get_http_version().encode()
        lines = [b"%s %s HTTP/%s\r\n" % (self.parser.get_method(), self.url, version)]
        for name, value in self.headers:
            if name == b"connection":
                value = b", ".join(token.strip() for token in value.split(b",") if token.strip().lower() not in dropped)
                if not value:
                    continue
            if name not in dropped:
                lines.append(b"%s: %s\r\n" % (name, value))
        return b"".join(lines) + b"\r\n"

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal_due is not None and self.transport.is_closing():  # the answer closed the connection
            self._refusal_due = None
        elif self._refusal_due is not None and not self.pipeline and not self._answering():
            # uvicorn has just started the last pipelined request (the pipeline is empty, its answer not yet sent)
            answer, kind = self._refusal_due
            self._on_refusal(kind)
            self._answer_and_close(answer)
        elif self._phase == "head" and not self.transport.is_closing():
            self._arm_deadline()  # a pipelined head's time counts from the answer before it

    def shutdown(self) -> None:
        if self._lingering is not None:  # the server stops: a refused body's rest is not waited for
            self._raw_transport.close()
            return
        super().shutdown()
        self._watch_reading(None)

    def _watch_reading(self, unsent_before: int | None) -> None:
        """While the server stops: a client that reads nothing of its answer for CLOSE_GRACE_S is cut off. The stop
        waits for every connection to close, and one whose client never read held it for ever. Stalled: bytes wait
        unsent with the answer complete or the app waiting for room to write, at two looks in a row, no fewer at the
        second (`unsent_before`: the first look's count, None where it found no stall); a request still computing,
        which has written nothing, and a client reading its answer are waited for."""
        unsent = self._raw_transport.get_write_buffer_size()
        stalled = unsent > 0 and (not self._answering() or self.flow.write_paused)
        if stalled and unsent_before is not None and unsent >= unsent_before:
            self._raw_transport.abort()
            return
        self._stop_watch = self.loop.call_later(CLOSE_GRACE_S, self._watch_reading, unsent if stalled else None)

    def linger(self) -> bool:
        """The app answered and closes the connection: when the request's body is still arriving, only the
        answering side is shut, and what the client still sends is read and dropped for up to CLOSE_GRACE_S (or
        LINGER_MAX_BYTES), until it closes its side. A close with unread bytes makes the kernel reset the connection,
        and a client still sending its body (Python's http.client sends all of it before it reads) got "connection
        reset" instead of the answer, a 413 for a body too large most often. False: close as usual."""
        if self._phase != "body" or self._refused or not self._raw_transport.can_write_eof():
            return False
        self._disarm_deadline()
        self._raw_transport.write_eof()  # after the answer already written
        self._raw_transport.resume_reading()  # uvicorn pauses reading while the app has not taken the body
        self._lingering = self.loop.call_later(CLOSE_GRACE_S, self._raw_transport.close)
        return True

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser rejects (a garbled request line, a bad Content-Length, a broken
        chunk): in the app's error format, counted, and after the answer to a request before it on the connection."""
        if not self._refused:  # after a refusal the parser's complaint about the cut-off head is not the client's
            self._refuse(400, "invalid_http", "not a valid HTTP/1.1 request (its request line, headers or framing)")

    def _answering(self) -> bool:
        """Whether a request of this connection is being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self._limits.header_timeout_s, self._deadline_passed)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._refused or self._phase == "body":
            return
        if self._answering():  # a pipelined head: its time counts from the answer before it (on_response_complete)
            return
        if self._phase == "head":
            self._refuse(
                408, "header_timeout", f"the request headers did not arrive within {self._limits.header_timeout_s:g} s"
            )
        else:  # no request begun: an idle connection, closed without an answer
            self.transport.close()

    def _refuse(self, status: int, kind: str, message: str) -> None:
        self._refused = True
        self._disarm_deadline()
        body = json.dumps({"error": message, "error_type": kind}).encode()
        answer = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
            + b"content-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        if self._phase != "body" and self._answering():
            # After the answer of the request before it (on_response_complete), and counted then: an answer that
            # closes the connection drops it.
            self._refusal_due = answer, kind
            return
        self._on_refusal(kind)
        if self._phase == "body":
            self.cycle.scope[REFUSED_BY_PROTOCOL] = True  # counted here, not again as a client gone
        if self._phase == "body" and self.cycle.response_started:
            self._answer_and_close(b"")  # the request's own answer has begun: only the connection can end it
        else:
            self._answer_and_close(answer)

    def _answer_and_close(self, answer: bytes) -> None:
        """Our own refusals close at once: they answer a client that sends too much or too slowly."""
        self._refusal_due = None
        if answer:
            self._raw_transport.write(answer)
        self._raw_transport.close()
        self.loop.call_later(CLOSE_GRACE_S, self._raw_transport.abort)


class _PipelineBoundFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while MAX_PIPELINED requests wait their turn. Each
    answer resumes it once fewer wait (uvicorn's on_response_complete), so nothing stalls."""

    def __init__(self, transport: asyncio.Transport, pipeline: deque) -> None:
        super().__init__(transport)
        self._pipeline = pipeline

    def resume_reading(self) -> None:
        if len(self._pipeline) < MAX_PIPELINED:
            super().resume_reading()


class _LingeringClose:
    """The connection's transport as uvicorn sees it: its close() lets the protocol linger (see `linger`)."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHeadProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closed or self._transport.is_closing()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._protocol.linger():
                self._transport.close()
