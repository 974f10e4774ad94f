"""HTTP/1.1 on asyncio.Protocol: keep-alive, pipelining (responses in request order), Content-Length bodies.

httptools parses when importable; otherwise a small pure-Python parser does (Content-Length bodies only).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

MAX_BODY = 64 * 1024 * 1024
MAX_HEAD = 64 * 1024  # request line and headers together
MAX_HEADERS = 100
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    408: "Request Timeout",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_HEADS: dict[tuple[int, str], bytes] = {}


def head(status: int, content_type: str, length: int) -> bytes:
    """The status line and headers of a response (the constant part is encoded once and cached)."""
    key = (status, content_type)
    prefix = _HEADS.get(key)
    if prefix is None:
        prefix = f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\nContent-Type: {content_type}\r\n".encode()
        _HEADS[key] = prefix
    return b"%sContent-Length: %d\r\n\r\n" % (prefix, length)


def response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    """A whole response: head and body."""
    return head(status, content_type, len(body)) + body


def response_with_headers(
    status: int, body: bytes, headers: dict[str, str], content_type: str = "application/json"
) -> bytes:
    """A whole response with extra ``headers`` (e.g. ``Allow`` on a 405); not cached, so kept off the hot path."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\nContent-Type: {content_type}\r\n{lines}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class ParseError(Exception):
    """The bytes are not a request this server reads."""

    def __init__(self, status: int, message: str) -> None:
        """An error answered with ``status`` and ``message`` before the connection is closed."""
        super().__init__(message)
        self.status = status


class Headers:
    """The request headers the server reads (every other header is dropped while parsing)."""

    __slots__ = ("api_key", "authorization", "binary_length", "content_type", "sticky")

    def __init__(self) -> None:
        """No header seen yet."""
        self.authorization: str | None = None  # "Bearer <token>" (OIDC)
        self.api_key: str | None = None  # X-API-Key
        self.sticky: str | None = None  # X-Sticky-Key: the A/B arm of a caller
        self.binary_length: str | None = None  # Inference-Header-Content-Length: OIP binary tensor data
        self.content_type: str | None = None


# lower-cased header name -> the Headers slot that keeps it
KEPT_HEADERS = {
    b"authorization": "authorization",
    b"x-api-key": "api_key",
    b"x-sticky-key": "sticky",
    b"inference-header-content-length": "binary_length",
    b"content-type": "content_type",
}


class Callbacks(Protocol):
    """What a parser calls back (httptools' interface)."""

    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class FallbackParser:
    """A minimal HTTP/1.x request parser with httptools' interface: Content-Length bodies, no chunked encoding."""

    def __init__(self, callbacks: Callbacks) -> None:
        """A parser feeding ``callbacks``."""
        self.cb = callbacks
        self.buffer = b""
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.remaining = -1  # body bytes still expected; -1 while reading the head

    def get_method(self) -> bytes:
        """The current request's method."""
        return self.method

    def should_keep_alive(self) -> bool:
        """Whether the connection stays open after this request."""
        return self.keep_alive

    def feed_data(self, data: bytes) -> None:
        """Parse ``data``; call back for every complete part; raise ParseError on malformed input."""
        self.buffer += data
        while True:
            if self.remaining < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        raise ParseError(431, f"request line and headers over {MAX_HEAD} bytes")
                    return
                head_bytes, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                self._head(head_bytes)
            if len(self.buffer) < self.remaining:
                return
            body, self.buffer = self.buffer[: self.remaining], self.buffer[self.remaining :]
            self.remaining = -1
            if body:
                self.cb.on_body(body)
            self.cb.on_message_complete()

    def _head(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise ParseError(400, "malformed request line")
        self.method, url, version = parts
        self.version = version[5:].decode("ascii", "replace")
        self.cb.on_url(url)
        length = 0
        connection = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ParseError(400, "malformed header line")
            name, value = name.strip(), value.strip()
            self.cb.on_header(name, value)
            lower = name.lower()
            if lower == b"content-length":
                if not value.isdigit():
                    raise ParseError(400, "bad Content-Length")
                length = int(value)
            elif lower == b"transfer-encoding":
                raise ParseError(411, "chunked bodies are not supported; send Content-Length")
            elif lower == b"connection":
                connection = value.lower()
        if length > MAX_BODY:
            raise ParseError(413, f"body over {MAX_BODY} bytes")
        self.keep_alive = connection != b"close" if self.version == "1.1" else connection == b"keep-alive"
        self.cb.on_headers_complete()
        self.remaining = length


def _parser_factory() -> tuple[Any, tuple[type[Exception], ...]]:
    if os.environ.get("MLSPEC_SERVING_PURE") != "1":
        try:
            import httptools

            return httptools.HttpRequestParser, (httptools.HttpParserError,)
        except ImportError:  # pragma: no cover - httptools is in the serve extra
            pass
    return FallbackParser, ()


class Handler(Protocol):
    """The application behind the connections."""

    def dispatch(self, conn: Connection, method: bytes, url: bytes, body: bytes, headers: Headers) -> bytes | None:
        """A whole response, or None when the handler will call ``conn.complete`` later."""
        ...


class Ticket:
    """A response slot kept in request order (pipelining)."""

    __slots__ = ("close", "data", "linger")

    def __init__(self, close: bool, linger: bool = False) -> None:
        """An empty slot; ``close`` when the connection ends after it, ``linger`` when the client may still be
        sending (a refused request): the answer is sent, sending ends, and what arrives is read and dropped until
        the client closes or ``LINGER`` seconds pass, so that the client reads the answer instead of a reset."""
        self.data: bytes | None = None
        self.close = close
        self.linger = linger


class Limits:
    """What clients may hold: ``max_connections`` open at once, ``request_timeout`` seconds to send a whole
    request once it started, ``idle_timeout`` seconds of silence on a kept-alive connection, and ``max_buffered``
    bytes of request bodies read but not yet answered, all connections together (``buffered`` now, and its
    ``high_water`` since memory was last given back)."""

    __slots__ = ("buffered", "high_water", "idle_timeout", "max_buffered", "max_connections", "request_timeout")

    def __init__(
        self,
        max_connections: int = 4096,
        request_timeout: float = 30.0,
        idle_timeout: float = 75.0,
        max_buffered: int = 256 * 1024 * 1024,
    ) -> None:
        """Limits (the defaults are the serving configuration's)."""
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_buffered = max_buffered
        self.buffered = 0
        self.high_water = 0


LINGER = 2.0  # seconds a refused client's remaining bytes are read and dropped before the connection closes
TRIM_ABOVE = 16 * 1024 * 1024  # after a flood of bodies this large, freed memory is handed back to the system


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: freed heap pages go back to the system (bodies arrive in chunks small enough
    for the heap, so freeing them alone keeps the process's RSS at its peak); a no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None

    def give_back() -> None:
        trim(0)

    return give_back


give_back_memory = _malloc_trim()


def reclaim(limits: Limits) -> bool:
    """Give freed memory back once a flood of request bodies is over (most of its high water answered or cut);
    True when it did."""
    if limits.high_water < TRIM_ABOVE or limits.buffered * 4 > limits.high_water:
        return False
    give_back_memory()
    limits.high_water = limits.buffered
    return True


def sweep(connections: set[Connection], limits: Limits, now: float) -> int:
    """Close every connection past its limits (a request sent too slowly gets 408; a silent idle one is closed);
    returns how many were closed. Called about once a second: the hot path only stamps times."""
    closed = 0
    for conn in list(connections):
        if conn.lingering is not None:  # refused and answered: closed once the client had time to read it
            if now - conn.lingering > LINGER and conn.transport is not None:
                conn.transport.close()
                closed += 1
            continue
        if conn.queue:  # waiting for its own answers: never cut while the server owes it a response
            continue
        if conn.request_started is not None and now - conn.request_started > limits.request_timeout:
            conn.time_out()
            closed += 1
        elif conn.request_started is None and now - conn.last_seen > limits.idle_timeout:
            conn.close_when_idle()
            closed += 1
    return closed


class Connection(asyncio.Protocol):
    """One client connection: parses requests, hands them to the handler, writes responses in order."""

    def __init__(self, handler: Handler, connections: set[Connection], limits: Limits | None = None) -> None:
        """A connection serving ``handler``, registered in ``connections`` while open."""
        factory, errors = _parser_factory()
        self.parser = factory(self)
        self.parse_errors: tuple[type[Exception], ...] = (ParseError, *errors)
        self.handler = handler
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.headers = Headers()
        self.queue: deque[Ticket] = deque()
        self.closing = False
        self.limits = limits or Limits()
        self.last_seen = time.monotonic()
        self.request_started: float | None = None  # when the first bytes of the request being read arrived
        self.head_size = 0  # bytes received while the current request's head is not complete
        self.header_count = 0
        self.in_head = True
        self.completed = 0  # requests read whole on this connection
        self.refusal: ParseError | None = None  # why a callback refused the request (httptools hides it)
        self.lingering: float | None = None  # since when a refused client's bytes are dropped (Ticket.linger)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection; over ``max_connections`` it is answered 503 and closed at once."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio subclasses
        if len(self.connections) >= self.limits.max_connections:
            from mlspec.serving.protocol import error_body

            message = f"the server holds {self.limits.max_connections} connections already; retry later"
            transport.write(response(503, error_body(message)))  # type: ignore[attr-defined]
            transport.close()
            self.closing = True
            return
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection and the body it was reading."""
        self.connections.discard(self)
        self.transport = None
        self.closing = True
        self._release()

    def _release(self) -> None:
        """Drop the body read so far and give its bytes back to the server's budget."""
        self.limits.buffered -= self.size
        self.body, self.size = [], 0

    def pause_writing(self) -> None:
        """Stop reading while the client does not read its responses."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """Read again."""
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; malformed input is answered with 400 and the connection is closed."""
        if self.lingering is not None:  # answered and refused: the rest of what it sends is dropped
            return
        self.last_seen = now = time.monotonic()
        if self.request_started is None:
            self.request_started = now
        completed = self.completed
        try:
            self.parser.feed_data(data)
        except self.parse_errors as exc:
            cause = self.refusal or exc
            status = cause.status if isinstance(cause, ParseError) else 400
            self._fail(status, f"bad HTTP request: {cause}")
        except Exception:  # httptools re-raises callback errors; answer them without killing the loop
            self._fail(500, "internal error while reading the request")
            return
        if self.in_head and not self.closing:
            # a head that never ends (a streamed request line, endless headers) is cut, not buffered: count the
            # bytes of chunks that completed no request (one that did may end with at most its own length of head)
            self.head_size = self.head_size + len(data) if self.completed == completed else 0
            if self.head_size > MAX_HEAD:
                self._fail(431, f"request line and headers over {MAX_HEAD} bytes")

    def _fail(self, status: int, message: str) -> None:
        from mlspec.serving.protocol import error_body

        ticket = Ticket(close=True, linger=True)
        ticket.data = response(status, error_body(message))
        self.queue.append(ticket)
        self.drain()
        self.closing = True
        self._release()

    # parser callbacks
    def on_url(self, url: bytes) -> None:
        """Collect the request target."""
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep the headers the server uses (KEPT_HEADERS); more than MAX_HEADERS is refused with 431."""
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            # httptools wraps a callback's exception in its own (a 400): keep ours to answer with
            self.refusal = ParseError(431, f"more than {MAX_HEADERS} header fields")
            raise self.refusal
        slot = KEPT_HEADERS.get(name.lower())
        if slot is not None:
            setattr(self.headers, slot, value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        """The head is whole: its size limit no longer applies to this request."""
        self.in_head = False

    def on_body(self, body: bytes) -> None:
        """Collect the body, refusing bodies over MAX_BODY and any body while all connections together hold
        ``max_buffered`` bytes of bodies (503: retry later)."""
        limits = self.limits
        if self.size + len(body) > MAX_BODY:  # httptools wraps a callback's exception: keep ours to answer with
            self.refusal = ParseError(413, f"body over {MAX_BODY} bytes")
            raise self.refusal
        if limits.buffered + len(body) > limits.max_buffered:
            message = f"the server holds {limits.max_buffered} bytes of request bodies already; retry later"
            self.refusal = ParseError(503, message)
            raise self.refusal
        self.size += len(body)
        limits.buffered += len(body)
        limits.high_water = max(limits.high_water, limits.buffered)
        self.body.append(body)

    def on_message_complete(self) -> None:
        """Dispatch a complete request."""
        self.request_started = None
        self.head_size = self.header_count = 0
        self.in_head = True
        self.completed += 1
        if self.closing:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        url, headers = self.url, self.headers
        self._release()
        self.url, self.headers = b"", Headers()
        keep = self.parser.should_keep_alive()
        data = self.handler.dispatch(self, self.parser.get_method(), url, body, headers)
        if data is None:  # the handler deferred: its ticket is the last one queued
            if not keep and self.queue:
                self.queue[-1].close = True
            return
        if keep and not self.queue:
            if self.transport is not None:
                self.transport.write(data)
            return
        ticket = Ticket(close=not keep)
        ticket.data = data
        self.queue.append(ticket)
        self.drain()

    # responses
    def defer(self) -> Ticket:
        """The slot of the request being dispatched, for a handler answering later (call only from dispatch)."""
        ticket = Ticket(close=False)
        self.queue.append(ticket)
        return ticket

    def complete(self, ticket: Ticket, data: bytes) -> None:
        """Fill a deferred slot and write every response that is now in order."""
        ticket.data = data
        self.drain()

    def drain(self) -> None:
        """Write the leading filled slots."""
        queue, transport = self.queue, self.transport
        while queue and queue[0].data is not None:
            ticket = queue.popleft()
            if transport is None:
                continue
            transport.write(ticket.data)  # type: ignore[arg-type]
            if ticket.close:
                self.closing = True
                queue.clear()
                if ticket.linger and transport.can_write_eof():
                    transport.write_eof()  # the answer, then FIN; reading goes on (dropped) until the client closes
                    self.lingering = time.monotonic()
                else:
                    transport.close()
                return

    def time_out(self) -> None:
        """Answer 408 and close: the request did not arrive whole within ``request_timeout``."""
        self._fail(408, f"the request did not arrive within {self.limits.request_timeout:g} s")

    def close_when_idle(self) -> None:
        """Close now when nothing is pending, else after the pending responses."""
        self.closing = True
        if self.transport is None:
            return
        if not self.queue:
            self.transport.close()
        else:
            self.queue[-1].close = True
