from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from lxml import etree

from secserver.routing.errors import AccessDenied, InvalidXml, Side
from secserver.routing.middleware import CONTEXT, coded_error, looks_like_soap_head
from secserver.routing.soap import SOAP_ENV


def run(request: web.Request, exc: Exception, side: Side) -> web.Response:
    response = coded_error(request, exc, side)
    assert isinstance(response, web.Response)
    return response


def test_rest_error_is_json_with_header_and_context() -> None:
    request = make_mocked_request("GET", "/r1/a/b/c/d/e")
    request[CONTEXT] = {"X-Road-Id": "m1"}
    response = run(request, AccessDenied("no right", detail="rule"), "ServerProxy")
    assert response.status == 403
    assert response.headers["X-Road-Error"] == "Server.ServerProxy.AccessDenied"
    assert response.headers["X-Road-Id"] == "m1"
    assert response.body is not None
    assert json.loads(bytes(response.body)) == {  # type: ignore[arg-type]
        "type": "Server.ServerProxy.AccessDenied", "message": "no right", "detail": "rule"}


def test_soap_error_is_a_fault() -> None:
    request = make_mocked_request("POST", "/")
    response = run(request, InvalidXml("bad xml"), "ClientProxy")
    assert response.status == 500
    assert response.headers["X-Road-Error"] == "Client.InvalidXml"
    assert response.body is not None
    root = etree.fromstring(bytes(response.body))  # type: ignore[arg-type]
    assert root.findtext(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault/faultcode") == \
        "Client.InvalidXml"


def test_unexpected_errors_leak_nothing() -> None:
    request = make_mocked_request("GET", "/r1/x")
    response = run(request, RuntimeError("secret /etc/key at 10.0.0.7:5432"), "ClientProxy")
    assert response.status == 500
    assert response.headers["X-Road-Error"] == "Server.ClientProxy.InternalError"
    assert response.body is not None
    text = bytes(response.body).decode()  # type: ignore[arg-type]
    assert "secret" not in text and "10.0.0.7" not in text and "Traceback" not in text
    assert "reference" in json.loads(text)["detail"]


def test_http_exceptions_become_coded() -> None:
    request = make_mocked_request("GET", "/nothing")
    response = run(request, web.HTTPNotFound(), "ClientProxy")
    assert response.status == 404
    assert response.headers["X-Road-Error"] == "Client.InvalidRequest"


@pytest.mark.parametrize("head,expected", [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: text/xml; charset=utf-8\r\n", True),
    (b"POST /?x=1 HTTP/1.1\r\ncontent-type:TEXT/XML\r\nX-Big: aaaa", True),
    # the last request head on the connection decides
    (b"GET /r1/x HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Type: text/xml\r\n", True),
    (b"POST / HTTP/1.1\r\nContent-Type: text/xml\r\n\r\nGET / HTTP/1.1\r\n", False),
    (b"POST / HTTP/1.1\r\nContent-Type: application/json\r\n", False),
    (b"POST /r1/x HTTP/1.1\r\nContent-Type: text/xml\r\n", False),
    (b"GET / HTTP/1.1\r\nContent-Type: text/xml\r\n", False),
    # Content-Type in the body, not the head
    (b"POST / HTTP/1.1\r\nHost: a\r\n\r\nContent-Type: text/xml\r\n", False),
    (b"POST / HTTP/1.1\r\nX-Content-Type: text/xml\r\n", False),
    (b"\x16\x03\x01 garbage", False),
])
def test_soap_head_is_recognised_from_raw_bytes(head: bytes, expected: bool) -> None:
    assert looks_like_soap_head(head) is expected
