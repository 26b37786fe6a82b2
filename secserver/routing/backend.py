"""Forwarding to a provider's backend service: only ever its registered URL.

Backend failures each get their own code: refused or dropped connection
(``ServiceFailed.NetworkError``), no answer within the service's timeout
(``ServiceFailed.Timeout``), and an answer that is not a usable HTTP response
(``ServiceFailed.InvalidResponse``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from secserver.routing.body import SpooledBody, spool
from secserver.routing.errors import (
    ExchangeError,
    MessageTooLarge,
    ServiceInvalidResponse,
    ServiceNetworkError,
    ServiceTimeout,
)
from secserver.routing.peer import ResponseLimits


@dataclass(frozen=True)
class BackendResponse:
    status: int
    headers: list[tuple[str, str]]
    body: SpooledBody


class _ResponseTooLarge(ServiceInvalidResponse):
    pass


def make_session() -> aiohttp.ClientSession:
    """The backend client: no cookies, no decompression, no redirects, no env proxies."""
    connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=15.0, ttl_dns_cache=60)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                 auto_decompress=False, trust_env=False,
                                 skip_auto_headers=("User-Agent", "Accept-Encoding",
                                                    "Content-Type"))


async def forward(session: aiohttp.ClientSession, method: str, url: str,
                  headers: list[tuple[str, str]], body: SpooledBody, deadline_s: float,
                  limits: ResponseLimits) -> BackendResponse:
    """Send the request to ``url`` and read the whole response within ``deadline_s`` seconds."""
    try:
        async with asyncio.timeout(deadline_s):
            async with session.request(
                method, url, headers=headers,
                data=body.chunks() if body.size else None,
                allow_redirects=False, compress=None, chunked=None,
            ) as response:
                status = response.status
                if not 100 <= status <= 599:
                    raise ServiceInvalidResponse(f"the service answered HTTP status {status}")
                response_headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                                    for k, v in response.raw_headers]
                response_body = await spool(
                    response.content.iter_chunked(256 * 1024), max_bytes=limits.max_bytes,
                    threshold=limits.spool_threshold, spool_dir=limits.spool_dir,
                    deadline_s=None, too_large=_ResponseTooLarge, what="service's response")
                return BackendResponse(status, response_headers, response_body)
    except TimeoutError as exc:
        raise ServiceTimeout(f"the service did not answer within {deadline_s} seconds") from exc
    except MessageTooLarge as exc:  # pragma: no cover - spool raises _ResponseTooLarge
        raise ServiceInvalidResponse(exc.message) from exc
    except ExchangeError:
        raise
    except aiohttp.ClientConnectorError as exc:
        raise ServiceNetworkError("the service cannot be reached (connection refused or "
                                  "unreachable)") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise ServiceNetworkError("the service closed the connection without a complete "
                                  "answer") from exc
    except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
        raise ServiceInvalidResponse("the service answered with malformed HTTP") from exc
    except aiohttp.ClientError as exc:
        raise ServiceNetworkError("the request to the service failed",
                                  detail=type(exc).__name__) from exc
