"""Hostile information systems against the client port of a real node: malformed and
ambiguous HTTP, smuggling attempts, slow clients, oversized input, XML bombs, path tricks."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from exchange_harness import CLIENT, ECHO, LIMITED, SOAP_ECHO, Exchange, running_exchange
from lxml import etree

from secserver.routing.soap import SOAP_ENV, XROAD, SoapHeader, render_envelope

pytestmark = pytest.mark.integration

MAX_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    env = {"SECSERVER_LIMITS_MAX_MESSAGE_BYTES": str(MAX_BYTES),
           "SECSERVER_LIMITS_HEADER_TIMEOUT": "1.5", "SECSERVER_LIMITS_BODY_TIMEOUT": "1.5",
           "SECSERVER_LIMITS_MAX_HEADER_COUNT": "40", "SECSERVER_LIMITS_XML_MAX_DEPTH": "32",
           "SECSERVER_LIMITS_XML_MAX_ELEMENTS": "500"}
    with running_exchange(tmp_path_factory.mktemp("hostile"), env=env) as running:
        yield running


class Raw:
    """A raw HTTP/1.1 answer: status, lower-case headers, body."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def code(self) -> str | None:
        return self.headers.get("x-road-error")


def raw(port: int, data: bytes, *, timeout: float = 20.0) -> Raw:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # the server may answer and close before reading everything
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
        return Raw(b"".join(chunks))


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def head(exchange: Exchange, target: str, extra: str = "", *, method: str = "GET",
         host: str = "127.0.0.1") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nX-Road-Client: {CLIENT}\r\n"
            f"{extra}").encode()


def test_absolute_form_target_is_refused(exchange: Exchange) -> None:
    target = f"http://evil.example{exchange.rest_target(ECHO)}"
    answer = raw(exchange.consumer_port, head(exchange, target) + b"\r\n")
    assert answer.status == 400
    assert answer.code == "Client.InvalidRequest"


def test_foreign_host_is_refused(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), host="evil.example") + b"\r\n")
    assert answer.status == 400
    assert answer.code == "Client.InvalidRequest"
    assert "Host" in json.loads(answer.body)["message"]


def test_content_length_with_transfer_encoding_is_refused(exchange: Exchange) -> None:
    smuggled = (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /r1/x HTTP/1.1\r\n\r\n")
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), method="POST") + smuggled)
    assert answer.status == 400
    assert answer.code == "Client.InvalidRequest"


def test_two_content_lengths_are_refused(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), method="POST")
                 + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
    assert answer.status == 400
    assert answer.code == "Client.InvalidRequest"


@pytest.mark.parametrize("framing", [b"Transfer-Encoding: identity, chunked",
                                     b"Transfer-Encoding: chunked;q=1",
                                     b"Transfer-Encoding: gzip, chunked"])
def test_transfer_codings_other_than_chunked_are_refused(exchange: Exchange,
                                                         framing: bytes) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), method="POST") + framing
                 + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert answer.status == 400, answer.body
    assert answer.code == "Client.InvalidRequest"


def test_transfer_encoding_in_http_1_0_is_refused(exchange: Exchange) -> None:
    request = head(exchange, exchange.rest_target(ECHO), method="POST").replace(
        b"HTTP/1.1", b"HTTP/1.0", 1)
    answer = raw(exchange.consumer_port, request + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n")
    assert answer.status == 400, answer.body
    assert answer.code == "Client.InvalidRequest"


@pytest.mark.parametrize("host", ["localhost:80@evil.example", "[::1]evil.example",
                                  "127.0.0.1:8o"])
def test_host_with_trailing_garbage_is_refused(exchange: Exchange, host: str) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), host=host) + b"\r\n")
    assert answer.status == 400, answer.body
    assert answer.code == "Client.InvalidRequest"


def test_framing_refusals_are_logged_with_their_code(exchange: Exchange) -> None:
    raw(exchange.consumer_port, head(exchange, exchange.rest_target(ECHO), method="POST")
        + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
    time.sleep(0.3)
    refused = [line for line in exchange.node_log(exchange.consumer).splitlines()
               if "exchange refused" in line and "Content-Length" in line]
    assert refused and "code=Client.InvalidRequest" in refused[-1], refused


def test_too_many_headers_are_refused(exchange: Exchange) -> None:
    extra = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(60))
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), extra) + b"\r\n")
    assert answer.status in (400, 431)
    assert answer.code == "Client.InvalidRequest"


def test_oversized_header_is_refused(exchange: Exchange) -> None:
    extra = f"X-Big: {'a' * 20000}\r\n"
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), extra) + b"\r\n")
    assert answer.status in (400, 431)
    assert answer.code == "Client.InvalidRequest"


def test_declared_oversized_body_gets_413(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), method="POST")
                 + f"Content-Length: {MAX_BYTES + 1}\r\n\r\n".encode() + b"x" * 1000)
    assert answer.status == 413
    assert answer.code == "Client.MessageTooLarge"


def test_streamed_oversized_body_gets_413(exchange: Exchange) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n"
                    for _ in range(MAX_BYTES // len(chunk) + 2)) + b"0\r\n\r\n"
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), method="POST")
                 + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert answer.status == 413
    assert answer.code == "Client.MessageTooLarge"


def test_trickling_headers_are_cut_off(exchange: Exchange) -> None:
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for _ in range(60):  # at most ~30 s of trickling
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.5)
                sock.settimeout(0.01)
                data = sock.recv(1024)
                if data == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            finally:
                sock.settimeout(30)
        assert closed, "the server kept a trickling client's connection open"


@pytest.mark.parametrize("opening", [b"", b"\x16\x03\x01\x02\x00\x01"])
def test_stalled_tls_handshake_on_the_server_port_is_cut_off(exchange: Exchange,
                                                             opening: bytes) -> None:
    # nothing, or the start of a ClientHello that never ends: the request head deadline
    # covers the handshake too (asyncio alone waits 60 s)
    with socket.create_connection(("127.0.0.1", exchange.provider_server_port),
                                  timeout=20) as sock:
        sock.sendall(opening)
        try:
            assert sock.recv(1024) == b""
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail("the server port kept a connection with a stalled TLS handshake")


def test_slow_body_gets_408(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), method="POST")
                 + b"Content-Length: 1000\r\n\r\n" + b"x" * 10, timeout=30)
    assert answer.status == 408
    assert answer.code == "Client.RequestTimeout"


@pytest.mark.parametrize("name", ["X_Road_Client", "x_road_client", "X-Road_Client",
                                  "X_Road_UserId", "Content_Length"])
def test_underscore_spellings_cannot_pose_as_x_road_headers(exchange: Exchange,
                                                           name: str) -> None:
    # CGI and WSGI servers map "_" and "-" to the same variable (HTTP_X_ROAD_CLIENT):
    # an alias that reached the service could pass for the client the provider vouches for
    answer = exchange.call("GET", exchange.rest_target(ECHO),
                           headers={name: "JP-DEV/GOV/TOYONO/SPOOFED"})
    assert answer.status == 200, answer.body
    seen = json.loads(answer.body)["headers"]
    assert seen["x-road-client"] == str(CLIENT)
    assert not [k for k in seen if "_" in k], seen


def test_slow_body_on_the_server_port_gets_408(exchange: Exchange) -> None:
    # a peer with the right TLS certificate that trickles its body
    pki = exchange.layout.pki
    context = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(pki / "servers/GOV.TOYONO.SS1/tls.crt",
                            pki / "servers/GOV.TOYONO.SS1/tls.key")
    request = (f"POST {exchange.rest_target(ECHO)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"X-Road-Client: {CLIENT}\r\nX-Road-Id: slow-body\r\n"
               "X-Road-Signed-Document: AAAA\r\nX-Road-Signature: AAAA\r\n"
               "Content-Length: 1000\r\n\r\n").encode() + b"x" * 10
    with socket.create_connection(("127.0.0.1", exchange.provider_server_port),
                                  timeout=20) as plain, \
            context.wrap_socket(plain) as sock:
        sock.sendall(request)
        answer = Raw(sock.recv(65536))
    assert answer.status == 408, answer.body
    assert answer.code == "Server.ServerProxy.RequestTimeout"


def test_garbage_request_line_gets_coded_error(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert answer.status == 400
    assert answer.code == "Client.InvalidRequest"


@pytest.mark.parametrize("path", [
    "/public/../private/x", "/public/%2e%2e/private/x", "/public/%2E%2e/private/x",
    "/public%2f..%2fprivate/x", "/public/..%2fprivate", "/public//private",
    "/public/.%2e/private", "/public/..;/private/x", "/public\\..\\private",
    "/public/%00/x", "/public/%zz",
])
def test_path_tricks_never_reach_other_endpoints(exchange: Exchange, path: str) -> None:
    answer = raw(exchange.consumer_port, head(exchange, exchange.rest_target(LIMITED, path))
                 + b"\r\n")
    assert answer.status in (400, 403), (path, answer.status, answer.body)
    assert answer.code in ("Client.InvalidRequest", "Server.ServerProxy.AccessDenied")


def test_encoded_public_path_is_the_same_path(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(LIMITED, "/%70ublic/a"))
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("headers,code", [
    ({}, "Client.MissingHeaderField"),
    ({"X-Road-Client": "JP-DEV/GOV"}, "Client.InvalidClientIdentifier"),
    ({"X-Road-Client": "JP-DEV/GOV/TOYONO"}, "Client.InvalidClientIdentifier"),
    ({"X-Road-Client": "JP-DEV/GOV/TOYONO/NOBODY"}, "Client.UnknownMember"),
    ({"X-Road-Client": "JP-DEV/COM/OTTA/TAGS"}, "Client.UnknownMember"),
])
def test_client_header_problems(exchange: Exchange, headers: dict[str, str],
                                code: str) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO), headers=headers, client=None)
    assert answer.header("X-Road-Error") == code, answer.body
    assert json.loads(answer.body)["type"] == code


def test_duplicate_client_header(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), f"X-Road-Client: {CLIENT}\r\n")
                 + b"\r\n")
    assert answer.code == "Client.DuplicateHeaderField"


def test_bad_service_path(exchange: Exchange) -> None:
    answer = exchange.call("GET", "/r1/JP-DEV/COM/OTTA/TAGS")
    assert answer.header("X-Road-Error") == "Client.InvalidServiceIdentifier"
    answer = exchange.call("GET", "/r1/JP-DEV/COM/NOBODY/X/svc")
    assert answer.header("X-Road-Error") == "Client.UnknownMember"


def test_method_not_allowed(exchange: Exchange) -> None:
    answer = exchange.call("TRACE", exchange.rest_target(ECHO))
    assert answer.header("X-Road-Error") == "Client.InvalidRequest"


def soap_post(exchange: Exchange, body: bytes, content_type: str = "text/xml") -> Raw:
    return raw(exchange.consumer_port,
               f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def valid_envelope(body_xml: str = "<e xmlns=\"urn:test\"/>", message_id: str = "s1") -> bytes:
    return render_envelope(SoapHeader(CLIENT, SOAP_ECHO, message_id, "4.0"), body_xml)


def test_soap_doctype_and_entity_bombs_are_refused(exchange: Exchange) -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            b'<lolz>&lol2;</lolz>')
    for document in (bomb, b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://evil/x"><x/>'):
        answer = soap_post(exchange, document)
        assert answer.status == 500  # SOAP faults are HTTP 500
        assert answer.code == "Client.InvalidXml"
        assert b"<faultcode>Client.InvalidXml</faultcode>" in answer.body


def test_soap_depth_and_size_limits(exchange: Exchange) -> None:
    deep = "<a>" * 40 + "</a>" * 40
    assert soap_post(exchange, valid_envelope(deep)).code == "Client.InvalidXml"
    wide = "<w>" + "<i/>" * 600 + "</w>"
    assert soap_post(exchange, valid_envelope(wide)).code == "Client.InvalidXml"


@pytest.mark.parametrize("document,content_type,code", [
    (b"<not-closed>", "text/xml", "Client.InvalidXml"),
    (f"<x xmlns=\"{SOAP_ENV}\"/>".encode(), "text/xml", "Client.InvalidSoap"),
    (f"<s:Envelope xmlns:s=\"{SOAP_ENV}\"><s:Body><a/></s:Body></s:Envelope>".encode(),
     "text/xml", "Client.MissingHeaderField"),
    (b"{}", "application/json", "Client.InvalidContentType"),
])
def test_soap_structure_errors(exchange: Exchange, document: bytes, content_type: str,
                               code: str) -> None:
    answer = soap_post(exchange, document, content_type)
    assert answer.code == code, answer.body


def test_soap_charset_of_content_type_decides(exchange: Exchange) -> None:
    # RFC 7303 and X-Road: the charset parameter wins over the XML declaration, and the
    # service reads it that way, so the node must read the header the same way
    latin1 = render_envelope(SoapHeader(CLIENT, SOAP_ECHO, "latin-1", "4.0",
                                        user_id="Jürgen"), "<e xmlns=\"urn:test\"/>")
    latin1 = latin1.split(b"?>", 1)[1].decode().encode("iso-8859-1")  # no declaration
    answer = soap_post(exchange, latin1, "text/xml; charset=ISO-8859-1")
    assert answer.status == 200, answer.body
    echoed = etree.fromstring(answer.body).findtext(f".//{{{XROAD}}}userId")
    assert echoed == "Jürgen"
    utf8 = valid_envelope(message_id="utf-16-claimed").split(b"?>", 1)[1]
    answer = soap_post(exchange, utf8, "text/xml; charset=UTF-16")
    assert answer.code == "Client.InvalidXml", answer.body
    answer = soap_post(exchange, valid_envelope(message_id="c3"), "text/xml; charset=x-nope")
    assert answer.code == "Client.InvalidContentType", answer.body


def test_soap_protocol_version(exchange: Exchange) -> None:
    document = valid_envelope().replace(b">4.0<", b">3.1<")
    assert soap_post(exchange, document).code == "Client.InvalidProtocolVersion"


def test_soap_duplicate_header_element(exchange: Exchange) -> None:
    document = valid_envelope().replace(b"<xrd:id>s1</xrd:id>",
                                        b"<xrd:id>s1</xrd:id><xrd:id>s2</xrd:id>")
    assert soap_post(exchange, document).code == "Client.DuplicateHeaderField"


def test_soap_bad_object_type(exchange: Exchange) -> None:
    document = valid_envelope().replace(b'id:objectType="SUBSYSTEM"', b'id:objectType="X"')
    assert soap_post(exchange, document).code == "Client.InvalidSoap"


def test_callers_that_vanish_mid_body_are_not_internal_errors(exchange: Exchange) -> None:
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=10) as sock:
        sock.sendall(head(exchange, exchange.rest_target(ECHO), method="POST")
                     + b"Content-Length: 100000\r\n\r\n" + b"x" * 100)
        time.sleep(0.3)
    time.sleep(0.5)
    answer = exchange.call("GET", exchange.rest_target(ECHO))
    assert answer.status == 200  # the node goes on serving
    log = exchange.node_log(exchange.consumer)
    assert "Traceback" not in log and "internal error" not in log


def test_non_ascii_header_values(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port, head(exchange, exchange.rest_target(ECHO))
                 + "X-Name: 豊野 é\r\n\r\n".encode())
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["headers"]["x-name"] == "豊野 é"
    assert answer.headers["x-town"].encode("latin-1").decode() == "豊野"  # UTF-8 on the wire
    broken = raw(exchange.consumer_port, head(exchange, exchange.rest_target(ECHO))
                 + b"X-Name: \xff\xfe\r\n\r\n")
    assert broken.status == 400, broken.body
    assert broken.code == "Client.InvalidRequest"


def test_expect_100_continue_is_met(exchange: Exchange) -> None:
    body = b"e" * 3000
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=20) as sock:
        sock.sendall(head(exchange, exchange.rest_target(ECHO, "/expect"), method="POST")
                     + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(65536)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        data = interim.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        while not (b"\r\n\r\n" in data and _complete(data)):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    answer = Raw(data)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["body_size"] == len(body)


def test_unknown_expectation_gets_417(exchange: Exchange) -> None:
    answer = raw(exchange.consumer_port,
                 head(exchange, exchange.rest_target(ECHO), "Expect: teapot\r\n") + b"\r\n")
    assert answer.status == 417, answer.body
    assert answer.code == "Client.InvalidRequest"
