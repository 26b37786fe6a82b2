"""A lean HTTP/1.1 client: kept-alive connections, one request at a time per connection.

aiohttp's ClientSession costs ~205 µs CPU per forwarded request; this client does only what
the exchange needs: send a request whose body is already spooled (always with
``Content-Length``), read a response framed by ``Content-Length``, chunked encoding or the
end of the connection, into a spooled, hashed body. It is used between security servers
(``peer.py``: mutual TLS, pinned certificate) and towards backends (``backend.py``).

Each connection is an ``asyncio.Protocol`` (``_Protocol``) that appends what arrives to
one buffer and wakes the request waiting for it: a small answer (head and a body of up to
``SMALL_BODY`` bytes) is read with one wake-up and no stream or generator machinery, and a
request's deadline is one timer (``loop.call_at``) that wakes the waiting request.
Larger bodies stream from the buffer into ``body.spool`` (reading pauses while more than
``HIGH_WATER`` bytes wait unread).

Failures are raised as the caller's error classes (``Failures``), so each use keeps its
own codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secserver.routing.body import SpooledBody, spool, spool_buffered
from secserver.routing.errors import ExchangeError

HEAD_LIMIT = 64 * 1024      # response head, one chunk-size line, all trailers
MAX_HEADERS = 256           # header lines in one response head
READ_CHUNK = 256 * 1024
HIGH_WATER = 2 * READ_CHUNK  # unread bytes above which the connection stops reading
MAX_INTERIM = 8
SMALL_BODY = 64 * 1024
_HEX = b"0123456789abcdefABCDEF"


class Broken(Exception):
    """The peer's response is not valid HTTP/1.1."""


class StaleConnection(Exception):
    """A kept-alive connection was closed by the peer before any response byte."""


class _Expired(Exception):
    """The request's deadline passed while it waited on its connection."""


@dataclass(frozen=True)
class Failures:
    """Which error each kind of failure becomes, and how the far end is named."""

    what: str                               # e.g. "security server X" or "the service"
    unreachable: type[ExchangeError]        # no connection could be made (nothing sent)
    connect: type[ExchangeError]            # the connection failed while in use
    timeout: type[ExchangeError]            # no complete answer in time
    malformed: type[ExchangeError]          # not HTTP
    tls: type[ExchangeError]                # handshake failed
    too_large: type[ExchangeError]          # response body over the limit


@dataclass(frozen=True)
class ResponseLimits:
    max_bytes: int
    spool_threshold: int
    spool_dir: Path | None


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: SpooledBody

    def header(self, name: str) -> str | None:
        """The one value of ``name``; None when absent or repeated."""
        lower = name.lower()
        found: str | None = None
        for key, value in self.headers:
            if key == lower:
                if found is not None:
                    return None
                found = value
        return found


class _Protocol(asyncio.Protocol):
    """One connection: received bytes in ``buffer``, one waiting request woken on news."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False                     # no more bytes will come
        self.error: BaseException | None = None  # why the connection was lost, if not clean
        self.answered = False                # a byte arrived since the request was sent
        self.expired = False                 # the current request's deadline has passed
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.answered = True
        self._wake()
        if len(self.buffer) > HIGH_WATER and not self.reading_paused \
                and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    # -- the request's side
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def expire(self) -> None:
        """The deadline timer's callback: the waiting request gives up."""
        self.expired = True
        self._wake()

    async def _wait(self) -> None:
        if self.expired:
            raise _Expired
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None
        if self.expired:
            raise _Expired

    async def fill(self) -> bool:
        """Wait for more bytes: False at a clean end of the connection (raises the error
        of an unclean one)."""
        if self.eof:
            if self.error is not None:
                raise self.error
            return False
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        await self._wait()
        return True

    async def drain(self) -> None:
        """Wait until the transport takes more bytes to send."""
        while self.writing_paused:
            if self.eof:
                raise self.error if self.error is not None else ConnectionResetError(
                    "the connection was closed while the request was sent")
            await self._wait()

    async def read_head(self, first: bool) -> bytes:
        """One response head without its final empty line."""
        return await self._read_until(b"\r\n\r\n", "response head", "the response head",
                                      stale_if_nothing=first)

    async def read_line(self) -> bytes:
        """One CRLF-terminated line (chunk size, trailer) of at most ``HEAD_LIMIT``."""
        return await self._read_until(b"\r\n", "chunked body line", "the chunked body")

    async def _read_until(self, separator: bytes, what: str, inside: str, *,
                          stale_if_nothing: bool = False) -> bytes:
        """The bytes before ``separator`` (at most ``HEAD_LIMIT``), consumed with it.
        ``stale_if_nothing``: a close before any byte is a ``StaleConnection``."""
        buffer = self.buffer
        overlap = len(separator) - 1
        start = 0
        while True:
            end = buffer.find(separator, start)
            if end >= 0:
                if end > HEAD_LIMIT:
                    raise Broken(f"{what} longer than {HEAD_LIMIT} bytes")
                found = bytes(buffer[:end])
                del buffer[:end + len(separator)]
                return found
            if len(buffer) > HEAD_LIMIT + overlap:
                raise Broken(f"{what} longer than {HEAD_LIMIT} bytes")
            start = max(0, len(buffer) - overlap)
            if not await self.fill():
                if stale_if_nothing and not buffer:
                    raise StaleConnection
                raise Broken(f"connection closed inside {inside}")

    async def read_exactly(self, length: int) -> bytes:
        """``length`` bytes at once (meant for small bodies)."""
        buffer = self.buffer
        while len(buffer) < length:
            if not await self.fill():
                raise Broken("connection closed inside the body")
        if len(buffer) == length:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:length])
            del buffer[:length]
        return data


def surplus(protocol: _Protocol) -> bool:
    """Whether the peer sent bytes beyond its response (an answer to nothing): such a
    connection must not carry another request, which would take them for its answer."""
    return bool(protocol.buffer)


@dataclass
class Connection:
    transport: asyncio.Transport
    protocol: _Protocol
    last_used: float = field(default_factory=time.monotonic)

    def get_extra_info(self, name: str) -> Any:
        """The transport's ``name`` (e.g. ``ssl_object``, ``peername``)."""
        return self.transport.get_extra_info(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.abort()


@dataclass(slots=True)
class _Head:
    status: int
    headers: list[tuple[str, str]]
    keep: bool
    lengths: list[str]
    encodings: list[str]


def _parse(head: bytes) -> _Head:
    if b"\x00" in head:
        raise Broken("NUL in the response head")
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    count = len(lines) - 1
    if text.count("\n") != count or text.count("\r") != count:
        raise Broken("bare CR or LF in the response head")
    if count > MAX_HEADERS:
        raise Broken(f"more than {MAX_HEADERS} header lines")
    status_line = lines[0]
    version = status_line[:9]
    code = status_line[9:12]
    if version not in ("HTTP/1.1 ", "HTTP/1.0 ") or len(code) != 3 \
            or not (code.isascii() and code.isdigit()) \
            or (len(status_line) > 12 and status_line[12] != " "):
        raise Broken(f"bad status line {status_line[:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name or "\t" in name:
            raise Broken(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    lower = text.lower()  # only to see which framing headers are there at all
    lengths = [v for k, v in headers if k == "content-length"] \
        if "\ncontent-length:" in lower else []
    encodings = [v.strip().lower() for k, v in headers if k == "transfer-encoding"] \
        if "\ntransfer-encoding:" in lower else []
    http10 = version == "HTTP/1.0 "
    if "\nconnection:" in lower:
        tokens = {t.strip().lower() for k, v in headers if k == "connection"
                  for t in v.split(",")}
        keep = "keep-alive" in tokens if http10 else "close" not in tokens
    else:
        keep = not http10
    return _Head(int(code), headers, keep, lengths, encodings)


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """Status, headers and whether the connection may be kept, from a response head."""
    parsed = _parse(head)
    return parsed.status, parsed.headers, parsed.keep


async def _fixed(protocol: _Protocol, length: int) -> AsyncIterator[bytes]:
    buffer = protocol.buffer
    remaining = length
    while remaining:
        if not buffer:
            if not await protocol.fill():
                raise Broken("connection closed inside the body")
            continue
        if len(buffer) <= remaining:
            chunk = bytes(buffer)
            buffer.clear()
        else:
            chunk = bytes(buffer[:remaining])
            del buffer[:remaining]
        remaining -= len(chunk)
        yield chunk


async def _until_close(protocol: _Protocol) -> AsyncIterator[bytes]:
    buffer = protocol.buffer
    while True:
        if buffer:
            chunk = bytes(buffer)
            buffer.clear()
            yield chunk
        elif not await protocol.fill():
            return


async def _chunked(protocol: _Protocol) -> AsyncIterator[bytes]:
    while True:
        line = await protocol.read_line()
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.translate(None, _HEX):
            raise Broken("bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            trailers = 0
            while line := await protocol.read_line():
                trailers += len(line) + 2  # dropped, but bounded like a head
                if trailers > HEAD_LIMIT:
                    raise Broken(f"trailers longer than {HEAD_LIMIT} bytes")
            return
        async for part in _fixed(protocol, size):
            yield part
        if await protocol.read_exactly(2) != b"\r\n":
            raise Broken("chunk not followed by CRLF")


async def read_body(protocol: _Protocol, head: _Head, method: str, limits: ResponseLimits,
                    failures: Failures) -> tuple[SpooledBody, bool]:
    """The response body by its framing, and whether it ended the connection."""
    what = f"response of {failures.what}"
    lengths, encodings = head.lengths, head.encodings
    if method == "HEAD" or head.status in (204, 304):
        return spool_buffered(b"", max_bytes=limits.max_bytes,
                              threshold=limits.spool_threshold, spool_dir=limits.spool_dir,
                              too_large=failures.too_large, what=what), False
    if lengths and encodings:
        raise Broken("both Content-Length and Transfer-Encoding")
    source: AsyncIterator[bytes]
    ends = False
    if encodings:
        if encodings != ["chunked"]:
            raise Broken("unsupported Transfer-Encoding")
        source = _chunked(protocol)
    elif lengths:
        length_text = lengths[0]
        if (len(lengths) > 1 and any(v != length_text for v in lengths)) \
                or not (length_text.isascii() and length_text.isdigit()):
            raise Broken("invalid Content-Length")
        length = int(length_text)
        if length <= SMALL_BODY and length <= limits.max_bytes:
            data = await protocol.read_exactly(length)
            return spool_buffered(data, max_bytes=limits.max_bytes,
                                  threshold=limits.spool_threshold,
                                  spool_dir=limits.spool_dir, too_large=failures.too_large,
                                  what=what), False
        source = _fixed(protocol, length)
    else:
        source, ends = _until_close(protocol), True
    return await spool(source, max_bytes=limits.max_bytes, threshold=limits.spool_threshold,
                       spool_dir=limits.spool_dir, deadline_s=None,
                       too_large=failures.too_large, what=what), ends


def request_head(method: str, target: str, host_header: str, headers: list[tuple[str, str]],
                 size: int, failures: Failures) -> bytes:
    """The request head's bytes; a header with a CR, LF or NUL is refused."""
    block = "".join([f"{name}: {value}\r\n" for name, value in headers])
    count = len(headers)
    if block.count("\r") != count or block.count("\n") != count or "\x00" in block:
        raise failures.malformed("refusing to send a header with a line break")
    # header values are as received: UTF-8 (invalid bytes kept as surrogate escapes)
    return (f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n"
            f"Content-Length: {size}\r\n{block}\r\n").encode("utf-8", "surrogateescape")


Key = Hashable


class ConnectionPool:
    """Idle kept-alive connections per destination key; at most ``max_idle`` each."""

    def __init__(self, *, idle_timeout: float = 4.0, max_idle: int = 64,
                 connect_timeout: float = 10.0) -> None:
        self._idle: dict[Key, list[Connection]] = {}
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._closed = False

    def take(self, key: Key) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            protocol = connection.protocol
            if now - connection.last_used < self._idle_timeout and not protocol.eof \
                    and not surplus(protocol) and not protocol.expired:
                return connection
            connection.close()
        return None

    def give_back(self, key: Key, connection: Connection) -> None:
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        if self._closed or len(idle) >= self._max_idle:
            connection.close()
            return
        connection.last_used = time.monotonic()
        idle.append(connection)

    async def connect(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                      server_hostname: str | None, failures: Failures) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(loop), host, port, ssl=ssl_context,
                    server_hostname=server_hostname if ssl_context is not None else None)
        except ssl.SSLError as exc:
            raise failures.tls(f"TLS with {failures.what} failed", detail=exc.reason) from exc
        except TimeoutError as exc:
            raise failures.unreachable(f"{failures.what} cannot be reached (connection "
                                       "timed out)") from exc
        except OSError as exc:
            raise failures.unreachable(f"{failures.what} cannot be reached (connection "
                                       "refused or unreachable)",
                                       detail=type(exc).__name__) from exc
        return Connection(transport, protocol)

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


async def exchange(connection: Connection, method: str, target: str, host_header: str,
                   headers: list[tuple[str, str]], body: SpooledBody,
                   limits: ResponseLimits, failures: Failures) -> tuple[Response, bool]:
    """Send one request on ``connection`` and read the whole response.

    Returns the response and whether the connection can be reused. Raises
    ``StaleConnection`` when the peer closed the connection before answering (a
    kept-alive connection the caller may retry once on a fresh one).
    """
    head_bytes = request_head(method, target, host_header, headers, body.size, failures)
    protocol = connection.protocol
    try:
        if protocol.eof:
            raise StaleConnection
        protocol.answered = False
        transport = connection.transport
        if body.in_memory and body.size <= SMALL_BODY:
            transport.write(head_bytes + body.read_all())  # one send, one TLS record
        else:
            transport.write(head_bytes)
            async for chunk in body.chunks():
                if protocol.eof:
                    raise protocol.error if isinstance(protocol.error, OSError) \
                        else ConnectionResetError("the connection closed during the request")
                transport.write(chunk)
                await protocol.drain()
        for first in (True, *(False,) * (MAX_INTERIM - 1)):
            head = _parse(await protocol.read_head(first))
            status = head.status
            if not 100 <= status < 200 or status == 101:
                break
        else:
            raise Broken("too many interim responses")
        if status == 101 or status < 100:
            raise Broken(f"unexpected status {status}")
        response_body, ends_connection = await read_body(protocol, head, method, limits,
                                                         failures)
        reusable = head.keep and not ends_connection and not surplus(protocol) \
            and not protocol.eof
        return Response(status, head.headers, response_body), reusable
    except (ConnectionResetError, BrokenPipeError) as exc:
        if not protocol.answered:
            raise StaleConnection from exc
        raise failures.connect(f"the connection to {failures.what} failed",
                               detail=type(exc).__name__) from exc
    except (Broken, ValueError, UnicodeError) as exc:
        raise failures.malformed(f"{failures.what} sent a malformed HTTP response",
                                 detail=str(exc)[:120]) from exc
    except (OSError, ssl.SSLError) as exc:
        raise failures.connect(f"the connection to {failures.what} failed",
                               detail=type(exc).__name__) from exc


class _Deadline:
    """One request's deadline: a single timer that wakes whichever connection the
    request is waiting on."""

    __slots__ = ("fired", "protocol")

    def __init__(self) -> None:
        self.fired = False
        self.protocol: _Protocol | None = None

    def fire(self) -> None:
        self.fired = True
        if self.protocol is not None:
            self.protocol.expire()

    def watch(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        if self.fired:
            protocol.expire()


async def request(pool: ConnectionPool, key: Key, connect: Callable[[], Awaitable[Connection]],
                  method: str, target: str, host_header: str,
                  headers: list[tuple[str, str]], body: SpooledBody, limits: ResponseLimits,
                  failures: Failures, deadline_s: float) -> Response:
    """One request through ``pool``: a kept-alive connection if there is one (retried
    once on a fresh connection if the peer had closed it), all within ``deadline_s``."""
    loop = asyncio.get_running_loop()
    when = loop.time() + deadline_s
    deadline = _Deadline()
    timer = loop.call_at(when, deadline.fire)
    try:
        connection = pool.take(key)
        fresh = connection is None
        while True:
            if connection is None:
                async with asyncio.timeout_at(when):
                    connection = await connect()
            deadline.watch(connection.protocol)
            reusable = False
            try:
                response, reusable = await exchange(connection, method, target, host_header,
                                                    headers, body, limits, failures)
                return response
            except StaleConnection as exc:
                if fresh:
                    raise failures.connect(f"{failures.what} closed the connection "
                                           "without answering") from exc
                connection.close()
                connection, fresh = None, True
            finally:
                if connection is not None:
                    if reusable and not connection.protocol.expired:
                        pool.give_back(key, connection)
                    else:
                        connection.close()
    except (TimeoutError, _Expired) as exc:
        raise failures.timeout(f"{failures.what} did not answer within {deadline_s} "
                               "seconds") from exc
    finally:
        timer.cancel()
