"""What the proxy handlers share: the node's parts, limits, and small helpers."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from secserver.acl.snapshot import RegistrySnapshot
from secserver.audit.records import BodyPolicy, MessageRecord
from secserver.config import LimitsSection
from secserver.errors import SecServerError
from secserver.identifiers import ClientId, ServerId
from secserver.routing import headers as h
from secserver.routing.backend import BackendClient
from secserver.routing.body import SpooledBody, spool, spool_buffered
from secserver.routing.directory import Directory
from secserver.routing.errors import InvalidRequest, MessageTooLarge, qualified_code
from secserver.routing.middleware import CodedRequestHandler, is_soap
from secserver.routing.peer import PeerPool, ResponseLimits
from secserver.routing.replay import ReplayGuard
from secserver.signing.trust import TrustStore

Sign = Callable[[bytes], Awaitable[bytes]]


@dataclass
class ExchangeNode:
    """The parts of a running node the consumer and provider handlers use."""

    server_id: ServerId
    directory: Directory
    registry: Callable[[], RegistrySnapshot]
    trust: TrustStore
    sign: Sign
    append_log: Callable[[MessageRecord], Awaitable[int]]
    check_accepting: Callable[[datetime], None]
    peers: PeerPool
    backend: BackendClient
    replay: ReplayGuard
    limits: LimitsSection
    spool_dir: Path
    client_hosts: frozenset[str]
    server_hosts: frozenset[str]
    subject_key: bytes | None = None

    @property
    def owner(self) -> ClientId:
        return self.server_id.owner

    @cached_property
    def response_limits(self) -> ResponseLimits:
        """The limits of answers read from peers and backends (made once: ``limits`` and
        ``spool_dir`` do not change while a node runs)."""
        return ResponseLimits(self.limits.max_message_bytes, self.limits.spool_threshold_bytes,
                              self.spool_dir)


def body_limit(request: web.BaseRequest, limits: LimitsSection) -> tuple[int, str]:
    """The size limit for this request's body and what to call it: a SOAP envelope is
    parsed whole, so it gets ``[limits] max_soap_bytes`` (when smaller)."""
    if is_soap(request):
        return min(limits.max_soap_bytes, limits.max_message_bytes), "SOAP envelope"
    return limits.max_message_bytes, "request body"


def precheck_length(request: web.BaseRequest, limits: LimitsSection) -> tuple[int, str]:
    """Refuse a body whose Content-Length is over its limit; return the limit and what to
    call the body (``body_limit``)."""
    length = request.content_length
    max_bytes, what = body_limit(request, limits)
    if length is not None and length > max_bytes:
        raise MessageTooLarge(f"the {what} of {length} bytes is larger than the limit "
                              f"of {max_bytes} bytes")
    return max_bytes, what


async def read_request_body(request: web.BaseRequest, limits: LimitsSection,
                            spool_dir: Path) -> SpooledBody:
    """The request body, size-limited, within ``[limits] body_timeout``, hashed, kept in
    memory up to ``spool_threshold_bytes``, else spooled to a file in ``spool_dir``.

    A body that has already arrived whole (a small one usually comes with its head) is
    taken by ``spool_buffered``, without arming the deadline's timer; any other body
    streams through ``spool``."""
    max_bytes, what = precheck_length(request, limits)
    content = request.content
    if content.is_eof() and content.exception() is None:
        return spool_buffered(content.read_nowait(), max_bytes=max_bytes,
                              threshold=limits.spool_threshold_bytes, spool_dir=spool_dir,
                              what=what)
    try:
        return await spool(content.iter_chunked(256 * 1024), max_bytes=max_bytes,
                           threshold=limits.spool_threshold_bytes, spool_dir=spool_dir,
                           deadline_s=limits.body_timeout, what=what)
    except (ConnectionError, aiohttp.ClientError, HttpProcessingError) as exc:
        # the caller went away or broke the framing mid-body: nobody reads an answer
        raise InvalidRequest("the request body was cut off or malformed",
                             detail=type(exc).__name__) from exc


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PeerFacts:
    """What a request's connection says about its caller: the TLS client certificate
    (DER and its SHA-256, hex) and the IP address (IPv4-mapped IPv6 as IPv4).

    All are fixed for the life of a connection (the node's TLS listeners refuse
    renegotiation, ``node.server_tls_context``), so they are learnt once per connection and
    kept on its protocol, together with the transport they were read from."""

    transport: object
    cert_der: bytes | None
    cert_sha256: str | None
    address: Address


def _read_peer_facts(transport: asyncio.BaseTransport | None) -> PeerFacts:
    der: bytes | None = None
    peer: object = None
    if transport is not None:
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            der = ssl_object.getpeercert(binary_form=True) or None
        peer = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else "0.0.0.0"  # noqa: S104
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return PeerFacts(transport, der, hashlib.sha256(der).hexdigest() if der else None,
                     address)


def peer_facts(request: web.BaseRequest) -> PeerFacts:
    """The caller's certificate and address, read once per connection."""
    transport = request.transport
    protocol = request.protocol
    if isinstance(protocol, CodedRequestHandler):
        known = protocol.peer_facts
        if isinstance(known, PeerFacts) and known.transport is transport:
            return known
        facts = _read_peer_facts(transport)
        if transport is not None:
            protocol.peer_facts = facts
        return facts
    return _read_peer_facts(transport)


def check_request_head(request: web.BaseRequest, allowed_hosts: frozenset[str]) -> None:
    """Origin-form target only, a Host this node serves, no conflicting framing."""
    h.check_origin_form(request.raw_path)
    hosts = request.headers.getall("Host", [])
    if len(hosts) > 1:
        raise InvalidRequest("the request has more than one Host header")
    h.check_host(hosts[0] if hosts else None, allowed_hosts)
    encodings = request.headers.getall("Transfer-Encoding", [])
    if encodings and "Content-Length" in request.headers:
        raise InvalidRequest("the request has both Content-Length and Transfer-Encoding")
    if encodings and (request.version < (1, 1)
                      or [e.strip().lower() for e in encodings] != ["chunked"]):
        # HTTP/1.0 has no chunked framing; any other coding list is read differently by
        # different parsers (aiohttp takes "identity, chunked" as chunked)
        raise InvalidRequest("Transfer-Encoding must be exactly 'chunked', and only in "
                             "HTTP/1.1", detail=", ".join(encodings)[:80])
    if len(request.headers.getall("Content-Length", [])) > 1:
        raise InvalidRequest("the request has more than one Content-Length header")


@dataclass(slots=True)
class Trace:
    """One exchange as this side logs it; ``record`` makes its log records.

    Not changed once made: ``with_peer`` gives a copy naming another peer."""

    side: Literal["consumer", "provider"]
    message_id: str
    client: str
    service: str
    method: str
    path: str
    started: float
    peer: str | None = None

    def with_peer(self, peer: str) -> Trace:
        return Trace(self.side, self.message_id, self.client, self.service, self.method,
                     self.path, self.started, peer)

    def record(self, direction: Literal["request", "response"], *, at: datetime,
               body: SpooledBody | None = None, status: int | None = None,
               error: SecServerError | None = None, reason: str | None = None,
               signed_document: bytes | None = None, signature: bytes | None = None,
               body_policy: str = "digest") -> MessageRecord:
        policy: BodyPolicy = "digest"
        stored: bytes | None = None
        if body_policy in ("store", "encrypt") and body is not None and body.in_memory:
            policy = "store" if body_policy == "store" else "encrypt"
            stored = body.read_all()
        return MessageRecord(
            message_id=self.message_id, direction=direction, side=self.side,
            client=self.client, service=self.service, method=self.method, path=self.path,
            body_size=body.size if body is not None else 0,
            body_digest=body.digest_b64 if body is not None else "",
            at=at, status=status,
            error_code=(qualified_code(error, "ClientProxy" if self.side == "consumer"
                                       else "ServerProxy") if error is not None else None),
            reason=reason if reason is not None else (error.message if error else None),
            body=stored, body_policy=policy, signed_document=signed_document,
            signature=signature, peer=self.peer,
            duration_ms=round((time.monotonic() - self.started) * 1000, 3)
            if direction == "response" else None,
        )


async def send_body(request: web.BaseRequest, status: int, headers: list[tuple[str, str]],
                    body: SpooledBody) -> web.StreamResponse:
    """Answer with ``headers`` (kept in order, repeats kept) and ``body``: in one write when
    the body is in memory, streamed from its spool file otherwise."""
    if body.in_memory:
        return web.Response(status=status, body=body.read_all(), headers=headers)
    out = web.StreamResponse(status=status, headers=headers)
    out.content_length = body.size
    await out.prepare(request)
    async for chunk in body.chunks():
        await out.write(chunk)
    await out.write_eof()
    return out
