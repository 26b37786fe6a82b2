from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from secserver.routing import documents
from secserver.routing.body import SpooledBody
from secserver.routing.errors import InconsistentResponse, InvalidMessage, InvalidRequest
from secserver.routing.rest import ExchangeRequest, parse_rest_request
from secserver.signing.document import SignedDocument, request_hash

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
TARGET = "/r1/JP-DEV/COM/OTTA/TAGS/echo/a/b?c=1"


def request(*extra: tuple[str, str], target: str = TARGET) -> ExchangeRequest:
    return parse_rest_request("POST", target, [("X-Road-Client", "JP-DEV/GOV/TOYONO/X"),
                                               ("X-Road-Id", "m1"), *extra])


def test_request_document_describes_the_request() -> None:
    body = SpooledBody.from_bytes(b"{}")
    data = documents.request_document(request(("Content-Type", "application/json")), "m1",
                                      body, NOW)
    document = SignedDocument.from_bytes(data)
    assert document.path_and_query == "/a/b?c=1"
    assert document.headers == (("content-type", "application/json"),)
    assert document.body_digest == body.digest_b64
    checked = documents.check_request(data, request(("Content-Type", "application/json")),
                                      body, NOW + timedelta(seconds=5), 600)
    assert checked == document


@pytest.mark.parametrize("other,body,field", [
    (request(target="/r1/JP-DEV/COM/OTTA/TAGS/echo/a/c?c=1"), b"{}", "path"),
    (request(("Content-Type", "text/plain")), b"{}", "headers"),
    (request(("Content-Type", "application/json")), b"[]", "body-sha512"),
])
def test_check_request_names_the_differing_field(other: ExchangeRequest, body: bytes,
                                                  field: str) -> None:
    data = documents.request_document(request(("Content-Type", "application/json")), "m1",
                                      SpooledBody.from_bytes(b"{}"), NOW)
    with pytest.raises(InvalidMessage, match=field):
        documents.check_request(data, other, SpooledBody.from_bytes(body), NOW, 600)


def test_check_request_window_and_garbage() -> None:
    body = SpooledBody.from_bytes(b"")
    data = documents.request_document(request(), "m1", body, NOW)
    with pytest.raises(InvalidMessage, match="window"):
        documents.check_request(data, request(), body, NOW + timedelta(seconds=601), 600)
    with pytest.raises(InvalidMessage, match="window"):
        documents.check_request(data, request(), body, NOW - timedelta(seconds=61), 600)
    with pytest.raises(InvalidMessage):
        documents.check_request(b"garbage\n", request(), body, NOW, 600)


@pytest.mark.parametrize("ahead", [0, 30, 59])
def test_ids_are_remembered_as_long_as_a_request_is_accepted(ahead: int) -> None:
    # a request signed up to 60 s ahead of the provider's clock (allowed skew) stays
    # acceptable 600 s after its signing time: its id must be remembered that long after
    # it was received, or it can be replayed once the replay store pruned it
    received = NOW
    body = SpooledBody.from_bytes(b"")
    data = documents.request_document(request(), "m1", body,
                                      received + timedelta(seconds=ahead))
    documents.check_request(data, request(), body, received, 600)
    forgotten = received + timedelta(seconds=documents.replay_retention(600) + 1)
    with pytest.raises(InvalidMessage, match="window"):
        documents.check_request(data, request(), body, forgotten, 600)


def test_control_characters_in_headers_are_the_callers_fault() -> None:
    with pytest.raises(InvalidRequest):
        documents.request_document(request(("X-Note", "a\x85b")), "m1",
                                   SpooledBody.from_bytes(b""), NOW)


def test_response_document_is_bound_to_the_request() -> None:
    exchange = request()
    body = SpooledBody.from_bytes(b"")
    request_bytes = documents.request_document(exchange, "m1", body, NOW)
    signed = SignedDocument.from_bytes(request_bytes)
    response_body = SpooledBody.from_bytes(b"ok")
    headers = [("Content-Type", "text/plain"), ("Date", "x"), ("Connection", "close")]
    response = documents.response_document(signed, request_bytes, 201,
                                           [("content-type", "text/plain")], response_body,
                                           NOW)
    parsed = documents.check_response(response, exchange, "m1", request_bytes, 201, headers,
                                      response_body)
    assert parsed.request_hash == request_hash(request_bytes)
    with pytest.raises(InconsistentResponse, match="status"):
        documents.check_response(response, exchange, "m1", request_bytes, 200, headers,
                                 response_body)
    other_request = documents.request_document(exchange, "m1", body, NOW + timedelta(1))
    with pytest.raises(InconsistentResponse, match="request-hash"):
        documents.check_response(response, exchange, "m1", other_request, 201, headers,
                                 response_body)
    with pytest.raises(InconsistentResponse, match="body"):
        documents.check_response(response, exchange, "m1", request_bytes, 201, headers,
                                 SpooledBody.from_bytes(b"ko"))


def test_request_hash_computed_once_gives_the_same_checks() -> None:
    exchange = request()
    body = SpooledBody.from_bytes(b"")
    request_bytes = documents.request_document(exchange, "m1", body, NOW)
    signed = SignedDocument.from_bytes(request_bytes)
    response_body = SpooledBody.from_bytes(b"ok")
    headers = [("content-type", "text/plain")]
    response = documents.response_document(signed, request_bytes, 200, headers,
                                           response_body, NOW)
    # the request's hash taken from the parsed document equals the hash of its bytes
    assert SignedDocument.from_bytes(response).request_hash == request_hash(request_bytes)
    assert signed.request_hash_value == request_hash(request_bytes)
    # bytes that are not the parsed document's: hashed as given
    other = documents.request_document(exchange, "m1", body, NOW + timedelta(1))
    unbound = documents.response_document(signed, other, 200, headers, response_body, NOW)
    assert SignedDocument.from_bytes(unbound).request_hash == request_hash(other)
    digest = request_hash(request_bytes)
    parsed = documents.check_response(response, exchange, "m1", request_bytes, 200, headers,
                                      response_body, request_digest=digest)
    assert parsed == documents.check_response(response, exchange, "m1", request_bytes, 200,
                                              headers, response_body)
    with pytest.raises(InconsistentResponse, match="request-hash"):
        documents.check_response(response, exchange, "m1", other, 200, headers,
                                 response_body, request_digest=request_hash(other))


def test_each_differing_field_is_named() -> None:
    """The all-fields-equal shortcut still names the first differing field, as before."""
    exchange = request(("Content-Type", "application/json"))
    body = SpooledBody.from_bytes(b"{}")
    data = documents.request_document(exchange, "m1", body, NOW)
    later = NOW + timedelta(seconds=1)
    other_client = parse_rest_request("POST", TARGET, [
        ("X-Road-Client", "JP-DEV/GOV/TOYONO/Y"), ("X-Road-Id", "m1"),
        ("Content-Type", "application/json")])
    for other, field in [
        (other_client, "client"),
        (parse_rest_request("PUT", TARGET, [("X-Road-Client", "JP-DEV/GOV/TOYONO/X"),
                                            ("X-Road-Id", "m1"),
                                            ("Content-Type", "application/json")]), "method"),
        (parse_rest_request("POST", "/r1/JP-DEV/COM/OTTA/TAGS/other/a/b?c=1", [
            ("X-Road-Client", "JP-DEV/GOV/TOYONO/X"), ("X-Road-Id", "m1"),
            ("Content-Type", "application/json")]), "service"),
        (parse_rest_request("POST", TARGET, [("X-Road-Client", "JP-DEV/GOV/TOYONO/X"),
                                             ("X-Road-Id", "m2"),
                                             ("Content-Type", "application/json")]),
         "message-id"),
    ]:
        with pytest.raises(InvalidMessage, match=f"the field {field} differs"):
            documents.check_request(data, other, body, later, 600)
    signed = SignedDocument.from_bytes(data)
    response_body = SpooledBody.from_bytes(b"ok")
    headers = [("content-type", "text/plain")]
    response = documents.response_document(signed, data, 200, headers, response_body, NOW)
    with pytest.raises(InvalidMessage, match="the field direction differs"):
        documents.check_request(response, exchange, body, later, 600)
    for args, field in [
        ((data, exchange, "m1", data, 200, headers, response_body), "direction"),
        ((response, exchange, "m2", data, 200, headers, response_body), "message-id"),
        ((response, other_client, "m1", data, 200, headers, response_body), "client"),
        ((response, exchange, "m1", data + b"x", 200, headers, response_body),
         "request-hash"),
        ((response, exchange, "m1", data, 204, headers, response_body), "status"),
        ((response, exchange, "m1", data, 200, [], response_body), "headers"),
        ((response, exchange, "m1", data, 200, headers, body), "body-sha512"),
    ]:
        with pytest.raises(InconsistentResponse, match=f"the field {field} differs"):
            documents.check_response(*args)
