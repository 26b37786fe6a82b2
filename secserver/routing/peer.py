"""The client between security servers: mutual TLS, pinned peer, kept-alive connections.

Every new connection's peer certificate must be exactly the one the member directory
lists for that security server (SHA-256 of the DER), on top of chain verification by the
TLS context. HTTP/1.1 itself is ``http1.py``.
"""

from __future__ import annotations

import hashlib
import ssl

from secserver.identifiers import ServerId
from secserver.routing import http1
from secserver.routing.body import SpooledBody
from secserver.routing.directory import ServerEntry
from secserver.routing.errors import NetworkError, PeerUnreachable, SslAuthenticationFailed
from secserver.routing.http1 import Response as PeerResponse
from secserver.routing.http1 import ResponseLimits

__all__ = ["PeerPool", "PeerResponse", "ResponseLimits"]

MAX_KNOWN_SERVERS = 4096  # remembered failure descriptions (bounded)


class PeerPool:
    """Kept-alive mutual-TLS connections to other security servers."""

    def __init__(self, ssl_context: ssl.SSLContext, *, idle_timeout: float = 4.0,
                 max_idle_per_peer: int = 64, connect_timeout: float = 10.0) -> None:
        self._ssl = ssl_context
        self._pool = http1.ConnectionPool(idle_timeout=idle_timeout,
                                          max_idle=max_idle_per_peer,
                                          connect_timeout=connect_timeout)
        self._failures_of: dict[ServerId, http1.Failures] = {}

    def _failures(self, server: ServerEntry) -> http1.Failures:
        """How failures with ``server`` are raised (made once per server)."""
        failures = self._failures_of.get(server.server_id)
        if failures is None:
            failures = http1.Failures(what=f"security server {server.server_id}",
                                      unreachable=PeerUnreachable, connect=NetworkError,
                                      timeout=NetworkError, malformed=NetworkError,
                                      tls=SslAuthenticationFailed, too_large=NetworkError)
            if len(self._failures_of) >= MAX_KNOWN_SERVERS:
                self._failures_of.clear()
            self._failures_of[server.server_id] = failures
        return failures

    async def _connect(self, server: ServerEntry) -> http1.Connection:
        connection = await self._pool.connect(server.host, server.port, self._ssl, server.host,
                                              self._failures(server))
        ssl_object = connection.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None or hashlib.sha256(der).hexdigest() != server.tls_cert_sha256:
            connection.close()
            raise SslAuthenticationFailed(
                f"security server {server.server_id} presented a TLS certificate that is not "
                "the one the member directory lists for it")
        return connection

    async def request(self, server: ServerEntry, method: str, target: str,
                      headers: list[tuple[str, str]], body: SpooledBody,
                      limits: ResponseLimits, deadline_s: float) -> PeerResponse:
        """Send one request and read the whole response, within ``deadline_s`` seconds."""
        return await http1.request(
            self._pool, server.server_id, lambda: self._connect(server), method, target,
            server.address, headers, body, limits, self._failures(server), deadline_s)

    async def close(self) -> None:
        await self._pool.close()
