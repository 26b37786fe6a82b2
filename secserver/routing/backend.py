"""Forwarding to a provider's backend service: only ever its registered URL.

Backend failures each get their own code: refused or dropped connection
(``ServiceFailed.NetworkError``), no complete answer within the service's timeout
(``ServiceFailed.Timeout``), and an answer that is not usable HTTP or is too large
(``ServiceFailed.InvalidResponse``). The HTTP client is the lean ``http1`` one, with a
pool of kept-alive connections per backend origin; ``https`` backends are verified
against the system's CAs with host name checking.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from secserver.routing import http1
from secserver.routing.body import SpooledBody
from secserver.routing.errors import (
    ServiceInvalidResponse,
    ServiceNetworkError,
    ServiceTimeout,
)
from secserver.routing.http1 import Response as BackendResponse
from secserver.routing.http1 import ResponseLimits

__all__ = ["BackendClient", "BackendResponse"]

FAILURES = http1.Failures(what="the service", unreachable=ServiceNetworkError,
                          connect=ServiceNetworkError,
                          timeout=ServiceTimeout, malformed=ServiceInvalidResponse,
                          tls=ServiceNetworkError, too_large=ServiceInvalidResponse)


class BackendClient:
    """Kept-alive connections to the registered backend URLs."""

    def __init__(self, *, idle_timeout: float = 4.0, max_idle: int = 64) -> None:
        self._pool = http1.ConnectionPool(idle_timeout=idle_timeout, max_idle=max_idle)
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def forward(self, method: str, url: str, headers: list[tuple[str, str]],
                      body: SpooledBody, deadline_s: float,
                      limits: ResponseLimits) -> BackendResponse:
        """Send the request to ``url`` and read the whole response in ``deadline_s``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in ("http", "https") or not host:
            raise ServiceNetworkError("the service's registered URL is not http(s)")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        netloc_host = f"[{host}]" if ":" in host else host
        default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
        host_header = netloc_host if default else f"{netloc_host}:{port}"
        context = self._tls_context() if scheme == "https" else None

        async def connect() -> http1.Connection:
            return await self._pool.connect(host, port, context, host, FAILURES)

        return await http1.request(self._pool, (scheme, host, port), connect, method,
                                   target, host_header, headers, body, limits, FAILURES,
                                   deadline_s)

    async def close(self) -> None:
        await self._pool.close()
