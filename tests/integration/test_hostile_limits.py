"""Limits against hostile callers on real `secserver serve` processes: open connections
per listener, the SOAP envelope size cap (request and service response), and SOAP faults
for requests refused at the HTTP level."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from exchange_harness import CLIENT, ECHO, SOAP_ECHO, Exchange, running_exchange, wait_until

from secserver.routing.soap import SoapHeader, render_envelope

MAX_SOAP_BYTES = 64 * 1024
MAX_CONNECTIONS = 4
PROVIDER_MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    env = {"SECSERVER_LIMITS_MAX_SOAP_BYTES": str(MAX_SOAP_BYTES),
           "SECSERVER_LIMITS_MAX_HEADER_COUNT": "40"}
    with running_exchange(tmp_path_factory.mktemp("limits"), env=env,
                          consumer_env={"SECSERVER_LIMITS_MAX_CONNECTIONS":
                                        str(MAX_CONNECTIONS)},
                          provider_env={"SECSERVER_LIMITS_MAX_CONNECTIONS":
                                        str(PROVIDER_MAX_CONNECTIONS)}) as running:
        yield running


def envelope(body_xml: str, message_id: str) -> bytes:
    return render_envelope(SoapHeader(CLIENT, SOAP_ECHO, message_id, "4.0"), body_xml)


def exchange_raw(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data``, read until the server closes (every answer here closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def status_and_code(answer: bytes) -> tuple[int, str | None]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    code = next((line.split(":", 1)[1].strip() for line in head[1:]
                 if line.lower().startswith("x-road-error:")), None)
    return int(head[0].split(" ")[1]), code


# -- SOAP size cap --------------------------------------------------------------------

def test_soap_envelope_over_the_soap_limit_is_message_too_large(exchange: Exchange) -> None:
    big = envelope("<e xmlns=\"urn:test\">" + "x" * (MAX_SOAP_BYTES + 1000) + "</e>", "big1")
    answer = exchange.call("POST", "/", headers={"Content-Type": "text/xml"}, body=big)
    assert answer.status == 500  # SOAP faults are HTTP 500
    assert answer.header("X-Road-Error") == "Client.MessageTooLarge"
    assert b"<faultcode>Client.MessageTooLarge</faultcode>" in answer.body
    # the same size streamed without Content-Length
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    raw = exchange_raw(exchange.consumer_port,
                       b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status_and_code(raw) == (500, "Client.MessageTooLarge")
    # a REST body of that size is fine: only XML is parsed whole
    rest = exchange.call("POST", exchange.rest_target(ECHO), body=big,
                         headers={"Content-Type": "application/octet-stream"})
    assert rest.status == 200, rest.body
    # and a SOAP envelope under the limit passes
    small = exchange.call("POST", "/", headers={"Content-Type": "text/xml"},
                          body=envelope("<e xmlns=\"urn:test\"/>", "small1"))
    assert small.status == 200, small.body


def test_service_soap_response_over_the_soap_limit_is_refused(exchange: Exchange) -> None:
    request = envelope(f"<pad xmlns=\"urn:test\">{MAX_SOAP_BYTES + 1000}</pad>", "pad1")
    answer = exchange.call("POST", "/", headers={"Content-Type": "text/xml"}, body=request)
    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ServerProxy.ServiceFailed.InvalidResponse"
    fine = exchange.call("POST", "/", headers={"Content-Type": "text/xml"},
                         body=envelope("<pad xmlns=\"urn:test\">1000</pad>", "pad2"))
    assert fine.status == 200, fine.body


# -- SOAP faults for HTTP-level refusals ----------------------------------------------

@pytest.mark.parametrize("extra", [
    b"Content-Length: 3\r\nContent-Length: 5\r\n",  # ambiguous framing
    b"".join(b"X-Filler-%d: %d\r\n" % (i, i) for i in range(60)),  # too many headers
    b"X-Big: " + b"a" * 20000 + b"\r\n",  # a header line too long
])
def test_http_level_refusal_of_a_soap_call_is_a_soap_fault(exchange: Exchange,
                                                           extra: bytes) -> None:
    raw = exchange_raw(exchange.consumer_port,
                       b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Type: text/xml; charset=utf-8\r\n" + extra + b"\r\nabcde")
    assert status_and_code(raw) == (500, "Client.InvalidRequest"), raw[:300]
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: text/xml" in head.lower()
    assert b"<faultcode>Client.InvalidRequest</faultcode>" in body


def test_http_level_refusal_of_a_soap_call_after_a_kept_alive_request(
        exchange: Exchange) -> None:
    first = (b"GET " + exchange.rest_target(ECHO).encode() + b" HTTP/1.1\r\n"
             b"Host: 127.0.0.1\r\nX-Road-Client: " + str(CLIENT).encode() + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=20) as sock:
        sock.sendall(first)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        time.sleep(0.2)  # the rest of the first answer, if any, is read below
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                     b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    rest = b"".join(chunks)
    assert b"<faultcode>Client.InvalidRequest</faultcode>" in rest, rest[-400:]


def test_http_level_refusal_of_other_calls_stays_json(exchange: Exchange) -> None:
    raw = exchange_raw(exchange.consumer_port,
                       b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                       b"\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde")
    assert status_and_code(raw) == (400, "Client.InvalidRequest")
    assert b'"type": "Client.InvalidRequest"' in raw


# -- open connections per listener ----------------------------------------------------

def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _served(exchange: Exchange) -> bool:
    try:
        return exchange.call("GET", exchange.rest_target(ECHO), timeout=5).status == 200
    except OSError:
        return False


def test_connections_beyond_the_cap_are_closed(exchange: Exchange) -> None:
    port = exchange.consumer_port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5)
            for _ in range(MAX_CONNECTIONS)]
    extra: list[socket.socket] = []
    try:
        time.sleep(0.5)  # the node has accepted them
        for _ in range(3):  # one burst
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            extra.append(sock)
            assert _closed_by_server(sock, 3.0)
        # the connections within the cap still work
        request = (b"GET " + exchange.rest_target(ECHO).encode() + b" HTTP/1.1\r\n"
                   b"Host: 127.0.0.1\r\nX-Road-Client: " + str(CLIENT).encode()
                   + b"\r\nConnection: close\r\n\r\n")
        idle[0].sendall(request)
        assert idle[0].recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in idle + extra:
            sock.close()
    # once they are gone, new connections are served again
    wait_until(lambda: _served(exchange), timeout=10)
    log = exchange.node_log(exchange.consumer)
    assert log.count("connection limit reached") == 1, log[-2000:]
    resumed = [line for line in log.splitlines() if "accepting connections again" in line]
    assert resumed and "refused=3" in resumed[-1], resumed


def test_connections_beyond_the_cap_on_the_tls_server_port_are_closed_before_tls(
        exchange: Exchange) -> None:
    """The cap counts connections still in their TLS handshake, and refuses more
    before reading a byte (a waiting ClientHello would otherwise hold each one)."""
    opened: list[socket.socket] = []
    refused = False
    try:
        for _ in range(PROVIDER_MAX_CONNECTIONS + 4):  # the consumer's pool may hold some
            sock = socket.create_connection(("127.0.0.1", exchange.provider_server_port),
                                            timeout=5)
            opened.append(sock)
            if _closed_by_server(sock, 0.5):  # no ClientHello was ever sent
                refused = True
                break
    finally:
        for sock in opened:
            sock.close()
    assert refused
    log = exchange.node_log(exchange.provider)
    assert "connection limit reached" in log and "listener=server" in log, log[-2000:]
