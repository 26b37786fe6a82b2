"""The consumer proxy: the client port where local information systems call services.

Per request: check the head (origin-form target, Host, framing), parse REST or SOAP, make
sure the client is a local subsystem the caller may speak for, read the body (hashed,
spooled), build and sign the request's signed document, log it, send it over mutual TLS to
the provider's security server, verify the signed response and its request hash, log it,
and answer with the X-Road response headers. Refused and failed exchanges are logged too.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import json
import os
import re
import time
from dataclasses import replace
from datetime import UTC, datetime

from aiohttp import web

from secserver.acl.snapshot import SubsystemEntry
from secserver.errors import SecServerError
from secserver.routing import documents
from secserver.routing import headers as h
from secserver.routing.body import SpooledBody
from secserver.routing.context import (
    ExchangeNode,
    Trace,
    check_request_head,
    peer_facts,
    read_request_body,
    send_body,
)
from secserver.routing.directory import ServerEntry
from secserver.routing.errors import (
    AccessDenied,
    InconsistentResponse,
    PeerUnreachable,
    RelayedError,
    SslAuthenticationFailed,
    UnknownMember,
)
from secserver.routing.middleware import CONTEXT, is_soap
from secserver.routing.peer import PeerResponse
from secserver.routing.rest import ExchangeRequest, parse_rest_request
from secserver.routing.soap import SOAP_ENV, XmlLimits, parse_soap_request, parse_xml
from secserver.signing.document import request_hash
from secserver.signing.errors import VerificationError


def authorise_caller(entry: SubsystemEntry | None, client: str, cert_der: bytes | None,
                     address: ipaddress.IPv4Address | ipaddress.IPv6Address, *,
                     cert_sha256: str | None = None) -> None:
    """Raise unless the caller may speak for ``client`` (a local subsystem, ``entry``).

    ``cert_sha256``: the SHA-256 (hex) of ``cert_der`` when already known."""
    if entry is None:
        raise UnknownMember(f"client {client} is not a subsystem registered on this "
                            "security server")
    if entry.auth == "tls":
        if cert_der is None:
            raise SslAuthenticationFailed(f"client {client} must call over HTTPS with its "
                                          "registered TLS client certificate")
        if cert_sha256 is None:
            cert_sha256 = hashlib.sha256(cert_der).hexdigest()
        if cert_sha256 != (entry.tls_cert_sha256 or "").lower():
            raise SslAuthenticationFailed(f"the TLS client certificate is not the one "
                                          f"registered for {client}")
        return
    if entry.auth == "allowlist":
        for allowed in entry.allowlist:
            try:
                if address in ipaddress.ip_network(allowed, strict=False):
                    return
            except ValueError:
                continue
        raise AccessDenied(f"this address may not call as {client}; the subsystem accepts "
                           "calls only from its registered addresses")
    if entry.auth == "none":
        if address.is_loopback:
            return
        raise AccessDenied(f"subsystem {client} has no client authentication, which is "
                           "accepted only from loopback (development)")
    raise AccessDenied(f"subsystem {client} has an unknown authentication mode")


def new_message_id() -> str:
    """The id of a call whose information system sent none: a random (version 4) RFC 4122
    UUID in its canonical text form, what ``str(uuid.uuid4())`` gives, in half the time."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def provider_servers(node: ExchangeNode, exchange: ExchangeRequest) -> tuple[ServerEntry, ...]:
    """The provider member's security servers, in directory order (tried in turn)."""
    servers = node.directory.servers_for(exchange.service.provider)
    if not servers:
        raise UnknownMember(f"no security server in the member directory serves "
                            f"{exchange.service.provider.member}")
    return servers


RELAYED_CODE = re.compile(r"Server\.ServerProxy\.[A-Za-z0-9_.-]{1,100}")


def relayed_error(response: PeerResponse, code: str) -> RelayedError:
    """The provider's coded error, passed on with its code, message and detail; a code
    that is not the provider's own (``Server.ServerProxy.*``) is InconsistentResponse:
    the error is unsigned, so a provider must not pose as this node or blame the caller."""
    if not RELAYED_CODE.fullmatch(code):
        return RelayedError("Server.ClientProxy.InconsistentResponse", 502,
                            "the provider's security server answered an error with a code "
                            "that is not a provider's", repr(code[:60]))
    text = response.body.read_all() if response.body.size <= 65536 else b""
    message, detail = "the provider's security server refused the request", None
    try:
        if text.lstrip().startswith(b"{"):
            parsed = json.loads(text)
            message = str(parsed.get("message") or message)
            detail = parsed.get("detail")
        elif text:
            root = parse_xml(text, XmlLimits())
            fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
            if fault is not None:
                message = (fault.findtext("faultstring") or message).strip()
                detail = fault.findtext("detail/faultDetail")
    except (ValueError, AttributeError, SecServerError):
        pass
    status = response.status if 400 <= response.status < 600 else 502
    return RelayedError(code, status, message[:1000],
                        detail[:1000] if isinstance(detail, str) else None)


async def handle(request: web.BaseRequest, node: ExchangeNode) -> web.StreamResponse:
    """Serve one call of a local information system (the client port)."""
    started = time.monotonic()
    check_request_head(request, node.client_hosts)
    now = datetime.now(UTC)
    node.check_accepting(now)
    pairs = list(request.headers.items())
    body: SpooledBody | None = None
    try:
        if is_soap(request):
            body = await read_request_body(request, node.limits, node.spool_dir)
            exchange = parse_soap_request(
                body.read_all(), request.headers.get("Content-Type"), pairs,
                XmlLimits(node.limits.xml_max_depth, node.limits.xml_max_elements))
        else:
            exchange = parse_rest_request(request.method, request.raw_path, pairs,
                                          new_message_id=new_message_id)
        if exchange.message_id is None:  # (a SOAP header always carries its id)
            exchange = replace(exchange, message_id=new_message_id())
        message_id = exchange.message_id
        assert message_id is not None
        client, service = str(exchange.client), str(exchange.service)
        request[CONTEXT] = {h.X_CLIENT: client, h.X_SERVICE: service, h.X_ID: message_id}
        trace = Trace("consumer", message_id, client, service, exchange.method,
                      exchange.path_and_query, started)
        try:
            entry = node.registry().local_subsystem(exchange.client)
            caller = peer_facts(request)
            authorise_caller(entry, client, caller.cert_der, caller.address,
                             cert_sha256=caller.cert_sha256)
            if exchange.client.member != node.owner:
                raise UnknownMember(f"client {exchange.client} belongs to another member than "
                                    f"this security server's owner {node.owner}")
            servers = provider_servers(node, exchange)
            trace = trace.with_peer(str(servers[0].server_id))
            if body is None:
                body = await read_request_body(request, node.limits, node.spool_dir)
            return await _exchange(request, node, exchange, message_id, body, trace, servers)
        except SecServerError as exc:
            if not getattr(exc, "logged", False):
                await _log_failure(node, trace, exc)
            raise
    finally:
        if body is not None:
            body.close()


async def _exchange(request: web.BaseRequest, node: ExchangeNode, exchange: ExchangeRequest,
                    message_id: str, body: SpooledBody, trace: Trace,
                    servers: tuple[ServerEntry, ...]) -> web.StreamResponse:
    now = datetime.now(UTC)
    document = documents.request_document(exchange, message_id, body, now)
    signature = await node.sign(document)
    await node.append_log(trace.record("request", at=now, body=body,
                                       signed_document=document, signature=signature))
    headers = list(exchange.headers)
    headers += [(h.X_CLIENT, trace.client), (h.X_ID, message_id),
                (h.X_MESSAGE_KIND, exchange.kind),
                (h.X_SIGNED_DOCUMENT, binascii.b2a_base64(document, newline=False).decode()),
                (h.X_SIGNATURE, binascii.b2a_base64(signature, newline=False).decode())]
    for index, server in enumerate(servers):
        try:
            response = await node.peers.request(
                server, exchange.method, exchange.target(), headers, body,
                node.response_limits, node.limits.backend_timeout + 10.0)
            break
        except PeerUnreachable:
            if index == len(servers) - 1:
                raise  # nothing was sent to any of them
    trace = trace.with_peer(str(server.server_id))
    try:
        return await _answer(request, node, exchange, message_id, document, response, trace)
    finally:
        response.body.close()


async def _answer(request: web.BaseRequest, node: ExchangeNode, exchange: ExchangeRequest,
                  message_id: str, document: bytes, response: PeerResponse,
                  trace: Trace) -> web.StreamResponse:
    error_code = response.header(h.X_ERROR)
    signed = response.header(h.X_SIGNED_DOCUMENT)
    signature_b64 = response.header(h.X_SIGNATURE)
    now = datetime.now(UTC)
    if error_code is not None and signed is None:
        relayed = relayed_error(response, error_code)
        await _log_failure(node, trace, relayed, status=relayed.http_status)
        relayed.logged = True
        raise relayed
    if signed is None or signature_b64 is None:
        raise InconsistentResponse("the provider's response carries no signature")
    try:
        # what base64.b64decode(text, validate=True) does
        response_document = binascii.a2b_base64(signed, strict_mode=True)
        response_signature = binascii.a2b_base64(signature_b64, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InconsistentResponse("the provider's response signature headers are not "
                                   "base64") from exc
    try:
        documents.verify(response_document, response_signature, node.trust, now,
                         exchange.service.provider)
    except VerificationError as exc:  # the provider's fault, not the caller's: 502
        raise SecServerError(f"the provider's response signature is not valid: "
                             f"{exc.message}", detail=exc.detail, code=exc.code,
                             http_status=502) from exc
    document_hash = request_hash(document)
    documents.check_response(response_document, exchange, message_id, document,
                             response.status, response.headers, response.body,
                             request_digest=document_hash)
    await node.append_log(trace.record(
        "response", at=now, body=response.body, status=response.status,
        signed_document=response_document, signature=response_signature))
    headers = [*h.end_to_end(response.headers), (h.X_CLIENT, trace.client),
               (h.X_SERVICE, trace.service), (h.X_ID, message_id),
               (h.X_REQUEST_HASH, document_hash)]
    return await send_body(request, response.status, headers, response.body)


async def _log_failure(node: ExchangeNode, trace: Trace, error: SecServerError, *,
                       status: int | None = None) -> None:
    """Log a refused or failed exchange (best effort: the caller gets an error anyway)."""
    try:
        await node.append_log(trace.record("response", at=datetime.now(UTC),
                                           status=status or error.http_status, error=error))
    except SecServerError:
        return
