"""A lean HTTP/1.1 client between security servers: mutual TLS, pinned peer, keep-alive.

aiohttp's ClientSession costs ~205 µs CPU per forwarded request; this client does the one
thing the exchange needs (send a request whose body is already spooled, read a response
with Content-Length or chunked framing) over a pool of kept-alive TLS connections. Every
new connection's peer certificate must be exactly the one the directory lists for that
security server (SHA-256 of the DER), on top of chain verification by the TLS context.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from secserver.identifiers import ServerId
from secserver.routing.body import SpooledBody, spool
from secserver.routing.directory import ServerEntry
from secserver.routing.errors import NetworkError, SslAuthenticationFailed

HEAD_LIMIT = 64 * 1024
READ_CHUNK = 256 * 1024


class _Broken(Exception):
    """The peer's response was not valid HTTP/1.1 framing."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_used: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


@dataclass(frozen=True)
class PeerResponse:
    status: int
    headers: list[tuple[str, str]]
    body: SpooledBody

    def header(self, name: str) -> str | None:
        lower = name.lower()
        values = [v for k, v in self.headers if k == lower]
        return values[0] if len(values) == 1 else None


@dataclass(frozen=True)
class ResponseLimits:
    max_bytes: int
    spool_threshold: int
    spool_dir: Path | None


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes everything
        raise _Broken("undecodable head") from exc
    lines = text.split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or status_line[0] != "HTTP/1.1" or not status_line[1].isdigit():
        raise _Broken(f"bad status line {lines[0][:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise _Broken(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip()))
    return int(status_line[1]), headers


async def _fixed(reader: asyncio.StreamReader, length: int) -> AsyncIterator[bytes]:
    remaining = length
    while remaining:
        chunk = await reader.read(min(READ_CHUNK, remaining))
        if not chunk:
            raise _Broken("connection closed inside the body")
        remaining -= len(chunk)
        yield chunk


async def _chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise _Broken("bad chunk size") from exc
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        async for part in _fixed(reader, size):
            yield part
        if await reader.readexactly(2) != b"\r\n":
            raise _Broken("chunk not followed by CRLF")


class PeerPool:
    """Kept-alive mutual-TLS connections to other security servers."""

    def __init__(self, ssl_context: ssl.SSLContext, *, idle_timeout: float = 4.0,
                 max_idle_per_peer: int = 64, connect_timeout: float = 10.0) -> None:
        self._ssl = ssl_context
        self._idle: dict[ServerId, list[_Connection]] = {}
        self._idle_timeout = idle_timeout
        self._max_idle = max_idle_per_peer
        self._connect_timeout = connect_timeout
        self._closed = False

    async def _connect(self, server: ServerEntry) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    server.host, server.port, ssl=self._ssl, limit=HEAD_LIMIT,
                    server_hostname=server.host,
                )
        except ssl.SSLError as exc:
            raise SslAuthenticationFailed(
                f"TLS with security server {server.server_id} failed: its certificate does "
                "not verify against the trusted CAs, or it refused ours",
                detail=exc.reason) from exc
        except (OSError, TimeoutError) as exc:
            raise NetworkError(f"cannot connect to security server {server.server_id}",
                               detail=type(exc).__name__) from exc
        connection = _Connection(reader, writer)
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None or hashlib.sha256(der).hexdigest() != server.tls_cert_sha256:
            connection.close()
            raise SslAuthenticationFailed(
                f"security server {server.server_id} presented a TLS certificate that is not "
                "the one the member directory lists for it")
        return connection

    def _take_idle(self, server: ServerEntry) -> _Connection | None:
        idle = self._idle.get(server.server_id)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.last_used < self._idle_timeout \
                    and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    def _release(self, server: ServerEntry, connection: _Connection) -> None:
        idle = self._idle.setdefault(server.server_id, [])
        if self._closed or len(idle) >= self._max_idle:
            connection.close()
            return
        connection.last_used = time.monotonic()
        idle.append(connection)

    async def request(self, server: ServerEntry, method: str, target: str,
                      headers: list[tuple[str, str]], body: SpooledBody,
                      limits: ResponseLimits, deadline_s: float) -> PeerResponse:
        """Send one request and read the whole response, within ``deadline_s`` seconds."""
        try:
            async with asyncio.timeout(deadline_s):
                connection = self._take_idle(server)
                if connection is not None:
                    try:
                        return await self._exchange(server, connection, method, target,
                                                    headers, body, limits)
                    except _StaleConnection:
                        pass  # the peer closed a kept-alive connection: one fresh try
                connection = await self._connect(server)
                try:
                    return await self._exchange(server, connection, method, target, headers,
                                                body, limits)
                except _StaleConnection as exc:
                    raise NetworkError(f"security server {server.server_id} closed the "
                                       "connection without answering") from exc
        except TimeoutError as exc:
            raise NetworkError(f"security server {server.server_id} did not answer within "
                               f"{deadline_s} seconds") from exc

    async def _exchange(self, server: ServerEntry, connection: _Connection, method: str,
                        target: str, headers: list[tuple[str, str]], body: SpooledBody,
                        limits: ResponseLimits) -> PeerResponse:
        reusable = False
        try:
            head = [f"{method} {target} HTTP/1.1", f"Host: {server.address}",
                    f"Content-Length: {body.size}"]
            for name, value in headers:
                if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                    raise NetworkError("refusing to send a header with a line break")
                head.append(f"{name}: {value}")
            writer = connection.writer
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            async for chunk in body.chunks():
                writer.write(chunk)
                await writer.drain()
            await writer.drain()
            try:
                raw_head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _StaleConnection from exc
                raise _Broken("connection closed inside the response head") from exc
            except ConnectionError as exc:
                raise _StaleConnection from exc
            status, response_headers = _parse_head(raw_head[:-4])
            source = self._body_source(connection.reader, response_headers, method, status)
            response_body = await spool(
                source, max_bytes=limits.max_bytes, threshold=limits.spool_threshold,
                spool_dir=limits.spool_dir, deadline_s=None, what="response body")
            reusable = not any(k == "connection" and "close" in v.lower()
                               for k, v in response_headers)
            return PeerResponse(status, response_headers, response_body)
        except (_Broken, asyncio.LimitOverrunError, asyncio.IncompleteReadError,
                ValueError) as exc:
            raise NetworkError(f"security server {server.server_id} sent a malformed HTTP "
                               "response", detail=str(exc)[:120]) from exc
        except (OSError, ssl.SSLError) as exc:
            raise NetworkError(f"the connection to security server {server.server_id} "
                               "failed", detail=type(exc).__name__) from exc
        finally:
            if reusable:
                self._release(server, connection)
            else:
                connection.close()

    @staticmethod
    def _body_source(reader: asyncio.StreamReader, headers: list[tuple[str, str]],
                     method: str, status: int) -> AsyncIterator[bytes]:
        lengths = [v for k, v in headers if k == "content-length"]
        encodings = [v.lower() for k, v in headers if k == "transfer-encoding"]
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return _fixed(reader, 0)
        if lengths and encodings:
            raise _Broken("both Content-Length and Transfer-Encoding")
        if encodings:
            if encodings != ["chunked"]:
                raise _Broken("unsupported Transfer-Encoding")
            return _chunked(reader)
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            raise _Broken("missing or invalid Content-Length")
        return _fixed(reader, int(lengths[0]))

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection was closed by the peer before any response byte."""
