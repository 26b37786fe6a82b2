"""The provider proxy: the server port where other security servers deliver requests.

Per request: the TLS peer must be a security server of the member directory that serves
the client's member; the signature must verify (chain, validity, certificate bound to the
client's member) over a signed document that describes exactly this request; the message
id must be new for that client (replay); the registry must allow the call (consent
included). Then the request is logged, forwarded to the service's registered backend URL
only, and the response is bound to the request (``X-Road-Request-Hash``), signed, logged
and returned. Refused and failed exchanges are logged too.
"""

from __future__ import annotations

import binascii
import time
from dataclasses import replace
from datetime import UTC, datetime

from aiohttp import web

from secserver.acl.decision import decide
from secserver.errors import SecServerError
from secserver.routing import documents
from secserver.routing import headers as h
from secserver.routing.backend import BackendResponse
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
    InvalidMessage,
    MissingHeaderField,
    MissingSignature,
    ServiceInvalidResponse,
    SslAuthenticationFailed,
    UnknownService,
)
from secserver.routing.middleware import CONTEXT, is_soap
from secserver.routing.replay import REPLAY_WINDOW
from secserver.routing.rest import ExchangeRequest, backend_target, parse_rest_request
from secserver.routing.soap import (
    InconsistentHeader,
    XmlLimits,
    check_content_type,
    check_response,
    parse_soap_request,
)
from secserver.signing.document import SignedDocument


def peer_server(node: ExchangeNode, request: web.BaseRequest) -> ServerEntry:
    sha256 = peer_facts(request).cert_sha256
    entry = node.directory.server_by_cert_sha256(sha256) if sha256 is not None else None
    if entry is None:
        raise SslAuthenticationFailed("the TLS client is not a security server listed in the "
                                      "member directory")
    return entry


def _signature_headers(pairs: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    document_b64 = h.single(pairs, h.X_SIGNED_DOCUMENT)
    signature_b64 = h.single(pairs, h.X_SIGNATURE)
    if document_b64 is None or signature_b64 is None:
        raise MissingSignature(f"the request carries no {h.X_SIGNED_DOCUMENT} and "
                               f"{h.X_SIGNATURE} headers")
    try:
        # what base64.b64decode(text, validate=True) does
        return (binascii.a2b_base64(document_b64, strict_mode=True),
                binascii.a2b_base64(signature_b64, strict_mode=True))
    except (binascii.Error, ValueError) as exc:
        raise InvalidMessage("the signed document or signature header is not base64") from exc


async def handle(request: web.BaseRequest, node: ExchangeNode) -> web.StreamResponse:
    """Serve one call of another security server (the server port)."""
    started = time.monotonic()
    peer = peer_server(node, request)
    check_request_head(request, node.server_hosts)
    now = datetime.now(UTC)
    node.check_accepting(now)
    pairs: list[tuple[str, str]] = list(request.headers.items())
    document, signature = _signature_headers(pairs)
    body = await read_request_body(request, node.limits, node.spool_dir)
    try:
        if is_soap(request):
            exchange = parse_soap_request(
                body.read_all(), request.headers.get("Content-Type"), pairs,
                XmlLimits(node.limits.xml_max_depth, node.limits.xml_max_elements))
        else:
            exchange = parse_rest_request(request.method, request.raw_path, pairs)
            if exchange.message_id is None:  # the X-Road-Id header (checked when present)
                raise MissingHeaderField(f"the request has no {h.X_ID} header")
        message_id = exchange.message_id
        assert message_id is not None
        client, service = str(exchange.client), str(exchange.service)
        request[CONTEXT] = {h.X_CLIENT: client, h.X_SERVICE: service, h.X_ID: message_id}
        trace = Trace("provider", message_id, client, service, exchange.method,
                      exchange.path_and_query, started, str(peer.server_id))
        try:
            return await _serve(request, node, peer, exchange, document, signature, body,
                                trace, now)
        except SecServerError as exc:
            if not getattr(exc, "logged", False):
                await _log_failure(node, trace, exc, body)
            raise
    finally:
        body.close()


async def _serve(request: web.BaseRequest, node: ExchangeNode, peer: ServerEntry,
                 exchange: ExchangeRequest, document: bytes, signature: bytes,
                 body: SpooledBody, trace: Trace, now: datetime) -> web.StreamResponse:
    if exchange.client.member not in peer.members:
        raise SslAuthenticationFailed(f"security server {peer.server_id} does not serve "
                                      f"member {exchange.client.member}")
    documents.verify(document, signature, node.trust, now, exchange.client)
    signed = documents.check_request(document, exchange, body, now, REPLAY_WINDOW)
    assert exchange.message_id is not None
    snapshot = node.registry()
    service = snapshot.service(exchange.service)
    if service is None or snapshot.local_subsystem(exchange.service.provider) is None:
        raise UnknownService(f"service {exchange.service} is not registered on this security "
                             "server")
    decision = decide(snapshot, exchange.client, exchange.service, exchange.method,
                      exchange.path, exchange.data_subject, now)
    if not decision.allowed:
        raise AccessDenied(f"access denied: {decision.reason}")
    # one commit for the request record and the id's reservation, before the backend
    await node.replay.log_request(
        trace.record("request", at=now, body=body, reason=decision.reason,
                     signed_document=document, signature=signature,
                     body_policy=service.log_body),
        trace.client, exchange.message_id, time.time())
    headers = list(exchange.headers)
    headers += [(h.X_CLIENT, trace.client), (h.X_ID, exchange.message_id)]
    url = service.backend_url if exchange.kind == "soap" \
        else backend_target(service.backend_url, exchange)
    timeout = service.timeout if service.timeout > 0 else node.limits.backend_timeout
    limits = node.response_limits
    if exchange.kind == "soap":  # parsed whole (lxml) to check it: the SOAP cap applies
        limits = replace(limits, max_bytes=min(limits.max_bytes, node.limits.max_soap_bytes))
    response = await node.backend.forward(exchange.method, url, headers, body, timeout,
                                          limits)
    try:
        if exchange.kind == "soap":
            _check_soap_response(node, exchange, response)
        return await _answer(request, node, signed, document, response, trace,
                             service.log_body)
    finally:
        response.body.close()


def _check_soap_response(node: ExchangeNode, exchange: ExchangeRequest,
                         response: BackendResponse) -> None:
    content_type = next((v for k, v in response.headers if k == "content-type"), None)
    try:
        check_response(response.body.read_all(), exchange,
                       XmlLimits(node.limits.xml_max_depth, node.limits.xml_max_elements),
                       check_content_type(content_type))
    except InconsistentHeader as exc:
        raise InconsistentResponse(exc.message) from exc
    except SecServerError as exc:
        raise ServiceInvalidResponse(f"the service's answer is not a SOAP response: "
                                     f"{exc.message}") from exc


async def _answer(request: web.BaseRequest, node: ExchangeNode, signed: SignedDocument,
                  document: bytes, response: BackendResponse, trace: Trace,
                  log_body: str) -> web.StreamResponse:
    now = datetime.now(UTC)
    response_headers = h.end_to_end(response.headers)
    if response.body.size and not any(k == "content-type" for k, _ in response_headers):
        # what the HTTP layer would add anyway (RFC 9110 8.3): sign what is sent
        response_headers.append(("content-type", "application/octet-stream"))
    response_document = documents.response_document(signed, document, response.status,
                                                    response_headers, response.body, now)
    response_signature = await node.sign(response_document)
    await node.append_log(trace.record(
        "response", at=now, body=response.body, status=response.status,
        signed_document=response_document, signature=response_signature,
        body_policy=log_body))
    headers = [*response_headers, (h.X_REQUEST_HASH, signed.request_hash_value),
               (h.X_SIGNED_DOCUMENT,
                binascii.b2a_base64(response_document, newline=False).decode()),
               (h.X_SIGNATURE, binascii.b2a_base64(response_signature, newline=False).decode())]
    return await send_body(request, response.status, headers, response.body)


async def _log_failure(node: ExchangeNode, trace: Trace, error: SecServerError,
                       body: SpooledBody) -> None:
    """Log a refused or failed exchange (best effort: the caller gets an error anyway)."""
    try:
        await node.append_log(trace.record("response", at=datetime.now(UTC),
                                           status=error.http_status, error=error))
    except SecServerError:
        return
