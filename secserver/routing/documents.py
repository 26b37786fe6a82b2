"""Build the signed documents of an exchange and check them against what was received.

The document grammar is ``secserver.signing.document``; this module decides which values
of a request or response go into it and refuses a message whose signed document says
anything else than the message itself. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from secserver.identifiers import ClientId
from secserver.routing import headers as h
from secserver.routing.body import SpooledBody
from secserver.routing.errors import (
    ExchangeError,
    InconsistentResponse,
    InvalidMessage,
    InvalidRequest,
    ServiceInvalidResponse,
)
from secserver.routing.rest import ExchangeRequest
from secserver.signing.document import (
    VERSION,
    InvalidSignedDocument,
    SignedDocument,
    canonical_headers,
    request_hash,
)
from secserver.signing.signer import VerifiedMessage, verify_message
from secserver.signing.trust import TrustStore

MAX_CLOCK_SKEW = timedelta(seconds=60)


def request_document(exchange: ExchangeRequest, message_id: str, body: SpooledBody,
                     now: datetime) -> bytes:
    """The consumer's signed document for a request."""
    try:
        return SignedDocument(
            version=VERSION, message_id=message_id, direction="request",
            client=exchange.client, service=exchange.service, method=exchange.method,
            path_and_query=exchange.path_and_query, headers=exchange.headers, request_hash=None,
            status=None, body_digest=body.digest_b64, signing_time=now,
        ).to_bytes()
    except InvalidSignedDocument as exc:
        raise InvalidRequest(exc.message) from exc
    except UnicodeEncodeError as exc:
        raise InvalidRequest("a header value is not valid UTF-8") from exc


def response_document(request: SignedDocument, request_bytes: bytes, status: int,
                      headers: Iterable[tuple[str, str]], body: SpooledBody,
                      now: datetime) -> bytes:
    """The provider's signed document for the response to ``request``."""
    try:
        return SignedDocument(
            version=VERSION, message_id=request.message_id, direction="response",
            client=request.client, service=request.service, method=request.method,
            path_and_query=request.path_and_query, headers=tuple(headers),
            request_hash=request.request_hash_value if request.to_bytes() == request_bytes
            else request_hash(request_bytes), status=status,
            body_digest=body.digest_b64, signing_time=now,
        ).to_bytes()
    except InvalidSignedDocument as exc:
        raise ServiceInvalidResponse("the service's response cannot be signed: "
                                     f"{exc.message}") from exc
    except UnicodeEncodeError as exc:
        raise ServiceInvalidResponse("the service's response has a header value that is "
                                     "not valid UTF-8") from exc


def replay_retention(window: float) -> float:
    """How long (seconds after receipt) a message id must be remembered when requests are
    accepted up to ``window`` seconds after their signing time: one signed up to
    ``MAX_CLOCK_SKEW`` ahead of this node's clock stays acceptable that much longer."""
    return window + MAX_CLOCK_SKEW.total_seconds()


def _parse(data: bytes, error: type[ExchangeError]) -> SignedDocument:
    try:
        return SignedDocument.from_bytes(data)
    except InvalidSignedDocument as exc:
        raise error(f"the signed document is invalid: {exc.message}") from exc


def _compare(pairs: list[tuple[str, object, object]], error: type[ExchangeError],
             what: str) -> None:
    for name, signed, actual in pairs:
        if signed != actual:
            raise error(f"the {what} does not match its signed document: the field {name} "
                        "differs")


def check_request(data: bytes, exchange: ExchangeRequest, body: SpooledBody,
                  now: datetime, window: float) -> SignedDocument:
    """The request's signed document, if it describes exactly this request, else raise."""
    document = _parse(data, InvalidMessage)
    try:
        headers = canonical_headers(exchange.headers)
    except InvalidSignedDocument as exc:
        raise InvalidMessage(exc.message) from exc
    if not (document.direction == "request" and document.message_id == exchange.message_id
            and document.client == exchange.client and document.service == exchange.service
            and document.method == exchange.method
            and document.path_and_query == exchange.path_and_query
            and document.headers == headers and document.body_digest == body.digest_b64):
        # a field differs: name the first one (the same fields, in the same order)
        _compare([
            ("direction", document.direction, "request"),
            ("message-id", document.message_id, exchange.message_id),
            ("client", document.client, exchange.client),
            ("service", document.service, exchange.service),
            ("method", document.method, exchange.method),
            ("path", document.path_and_query, exchange.path_and_query),
            ("headers", document.headers, headers),
            ("body-sha512", document.body_digest, body.digest_b64),
        ], InvalidMessage, "request")
    age = now - document.signing_time
    if age > timedelta(seconds=window) or -age > MAX_CLOCK_SKEW:
        signed_at = document.signing_time.strftime("%Y-%m-%d %H:%M:%S")
        raise InvalidMessage(f"the request was signed at {signed_at} UTC, outside the "
                             f"accepted window of {int(window)} s; "
                             "check the clocks of both security servers")
    return document


def check_response(data: bytes, exchange: ExchangeRequest, message_id: str,
                   request_bytes: bytes, status: int, response_headers: list[tuple[str, str]],
                   body: SpooledBody, *, request_digest: str | None = None) -> SignedDocument:
    """The response's signed document, if it answers our request with this response.

    ``request_digest``: ``request_hash(request_bytes)`` when the caller has it already."""
    document = _parse(data, InconsistentResponse)
    try:
        headers = canonical_headers(h.end_to_end(response_headers))
    except InvalidSignedDocument as exc:
        raise InconsistentResponse(exc.message) from exc
    expected_hash = request_hash(request_bytes) if request_digest is None else request_digest
    if not (document.direction == "response" and document.message_id == message_id
            and document.client == exchange.client and document.service == exchange.service
            and document.request_hash == expected_hash and document.status == status
            and document.headers == headers and document.body_digest == body.digest_b64):
        # a field differs: name the first one (the same fields, in the same order)
        _compare([
            ("direction", document.direction, "response"),
            ("message-id", document.message_id, message_id),
            ("client", document.client, exchange.client),
            ("service", document.service, exchange.service),
            ("request-hash", document.request_hash, expected_hash),
            ("status", document.status, status),
            ("headers", document.headers, headers),
            ("body-sha512", document.body_digest, body.digest_b64),
        ], InconsistentResponse, "response")
    return document


def verify(document: bytes, signature: bytes, trust: TrustStore, now: datetime,
           signer: ClientId) -> VerifiedMessage:
    """Verify the signature blob over ``document``: chain, validity at ``now``, and that
    the certificate is bound to ``signer``'s member. Raises a ``VerificationError``."""
    return verify_message(document, signature, trust, now, expected_member=signer)
