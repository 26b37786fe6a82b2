"""A lean HTTP/1.1 client: kept-alive connections, one request at a time per connection.

aiohttp's ClientSession costs ~205 µs CPU per forwarded request; this client does only what
the exchange needs: send a request whose body is already spooled (always with
``Content-Length``), read a response framed by ``Content-Length``, chunked encoding or the
end of the connection, into a spooled, hashed body. It is used between security servers
(``peer.py``: mutual TLS, pinned certificate) and towards backends (``backend.py``).

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

from secserver.routing.body import SpooledBody, spool
from secserver.routing.errors import ExchangeError

HEAD_LIMIT = 64 * 1024
READ_CHUNK = 256 * 1024
MAX_INTERIM = 8
SMALL_BODY = 64 * 1024


class Broken(Exception):
    """The peer's response is not valid HTTP/1.1."""


class StaleConnection(Exception):
    """A kept-alive connection was closed by the peer before any response byte."""


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
        values = [v for k, v in self.headers if k == lower]
        return values[0] if len(values) == 1 else None


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_used: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


def surplus(reader: asyncio.StreamReader) -> bool:
    """Whether the peer sent bytes beyond its response (an answer to nothing): such a
    connection must not carry another request, which would take them for its answer."""
    return bool(getattr(reader, "_buffer", b""))


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """Status, headers and whether the connection may be kept, from a response head."""
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") \
            or len(parts[1]) != 3 or not parts[1].isdigit():
        raise Broken(f"bad status line {lines[0][:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t") \
                or any(c in line for c in "\r\n\x00"):
            raise Broken(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    tokens = {t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",")}
    keep = "keep-alive" in tokens if parts[0] == "HTTP/1.0" else "close" not in tokens
    return int(parts[1]), headers, keep


async def _fixed(reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
    remaining = length
    while remaining:
        chunk = await reader.read(min(READ_CHUNK, remaining))
        if not chunk:
            raise Broken("connection closed inside the body")
        remaining -= len(chunk)
        yield chunk


async def _until_close(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(READ_CHUNK):
        yield chunk


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise Broken("bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            trailers = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                trailers += len(line)  # dropped, but bounded like a head
                if trailers > HEAD_LIMIT:
                    raise Broken(f"trailers longer than {HEAD_LIMIT} bytes")
            return
        async for part in _fixed(reader, size):
            yield part
        if await reader.readexactly(2) != b"\r\n":
            raise Broken("chunk not followed by CRLF")


def body_source(reader: asyncio.StreamReader, headers: list[tuple[str, str]], method: str,
                status: int) -> tuple[AsyncIterator[bytes], bool]:
    """The body's framing: the chunk source, and whether the body ends the connection."""
    lengths = [v for k, v in headers if k == "content-length"]
    encodings = [v.strip().lower() for k, v in headers if k == "transfer-encoding"]
    if method == "HEAD" or status in (204, 304):
        return _fixed(reader, 0), False
    if lengths and encodings:
        raise Broken("both Content-Length and Transfer-Encoding")
    if encodings:
        if encodings != ["chunked"]:
            raise Broken("unsupported Transfer-Encoding")
        return _chunked(reader), False
    if lengths:
        if len(set(lengths)) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
            raise Broken("invalid Content-Length")
        return _fixed(reader, int(lengths[0])), False
    return _until_close(reader), True


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
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.last_used < self._idle_timeout \
                    and not connection.reader.at_eof() and not surplus(connection.reader):
                return connection
            connection.close()
        return None

    def give_back(self, key: Key, connection: Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if self._closed or len(idle) >= self._max_idle:
            connection.close()
            return
        connection.last_used = time.monotonic()
        idle.append(connection)

    async def connect(self, host: str, port: int, ssl_context: ssl.SSLContext | None,
                      server_hostname: str | None, failures: Failures) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ssl_context, limit=HEAD_LIMIT,
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
        return Connection(reader, writer)

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
    try:
        head = [f"{method} {target} HTTP/1.1", f"Host: {host_header}",
                f"Content-Length: {body.size}"]
        for name, value in headers:
            if any(c in value or c in name for c in "\r\n\x00"):
                raise failures.malformed("refusing to send a header with a line break")
            head.append(f"{name}: {value}")
        writer = connection.writer
        # header values are as received: UTF-8 (invalid bytes kept as surrogate escapes)
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        if body.in_memory and body.size <= SMALL_BODY:
            writer.write(head_bytes + body.read_all())  # one send, one TLS record
        else:
            writer.write(head_bytes)
            async for chunk in body.chunks():
                writer.write(chunk)
                await writer.drain()
        await writer.drain()
        for _ in range(MAX_INTERIM):
            try:
                raw_head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise StaleConnection from exc
                raise Broken("connection closed inside the response head") from exc
            status, response_headers, keep = parse_head(raw_head[:-4])
            if not 100 <= status < 200 or status == 101:
                break
        else:
            raise Broken("too many interim responses")
        if status == 101 or status < 100:
            raise Broken(f"unexpected status {status}")
        source, ends_connection = body_source(connection.reader, response_headers, method,
                                              status)
        response_body = await spool(
            source, max_bytes=limits.max_bytes, threshold=limits.spool_threshold,
            spool_dir=limits.spool_dir, deadline_s=None, too_large=failures.too_large,
            what=f"response of {failures.what}")
        reusable = keep and not ends_connection and not surplus(connection.reader)
        return Response(status, response_headers, response_body), reusable
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise StaleConnection from exc
    except (Broken, asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError,
            UnicodeError) as exc:
        raise failures.malformed(f"{failures.what} sent a malformed HTTP response",
                                 detail=str(exc)[:120]) from exc
    except (OSError, ssl.SSLError) as exc:
        raise failures.connect(f"the connection to {failures.what} failed",
                               detail=type(exc).__name__) from exc


async def request(pool: ConnectionPool, key: Key, connect: Callable[[], Awaitable[Connection]],
                  method: str, target: str, host_header: str,
                  headers: list[tuple[str, str]], body: SpooledBody, limits: ResponseLimits,
                  failures: Failures, deadline_s: float) -> Response:
    """One request through ``pool``: a kept-alive connection if there is one (retried
    once on a fresh connection if the peer had closed it), all within ``deadline_s``."""
    try:
        async with asyncio.timeout(deadline_s):
            connection = pool.take(key)
            fresh = connection is None
            while True:
                if connection is None:
                    connection = await connect()
                reusable = False
                try:
                    response, reusable = await exchange(connection, method, target,
                                                        host_header, headers, body, limits,
                                                        failures)
                    return response
                except StaleConnection as exc:
                    if fresh:
                        raise failures.connect(f"{failures.what} closed the connection "
                                               "without answering") from exc
                    connection.close()
                    connection, fresh = None, True
                finally:
                    if connection is not None:
                        if reusable:
                            pool.give_back(key, connection)
                        else:
                            connection.close()
    except TimeoutError as exc:
        raise failures.timeout(f"{failures.what} did not answer within {deadline_s} "
                               "seconds") from exc
