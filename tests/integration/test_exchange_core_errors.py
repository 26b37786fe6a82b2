"""Every failure the exchange reports, produced for real: backend down, slow or garbage;
SOAP services that do not echo; wrong provider certificate; provider unreachable; a
provider whose responses are tampered with; the log failing; the TSA overdue."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from exchange_harness import (
    CLIENT,
    DESYNC,
    DOWN,
    ECHO,
    GARBAGE,
    PINNED,
    SLOW,
    SOAP_NO_ECHO,
    STATUS,
    Exchange,
    exchange_fixture,  # noqa: F401
    free_port,
    running_exchange,
)

from secserver.demo.layout import NodeFiles
from secserver.routing import headers as h
from secserver.routing.body import SpooledBody
from secserver.routing.directory import load_directory
from secserver.routing.peer import PeerPool, ResponseLimits
from secserver.routing.soap import SoapHeader, render_envelope

pytestmark = pytest.mark.integration


def code(answer_body: bytes) -> str:
    value = json.loads(answer_body)["type"]
    assert isinstance(value, str)
    return value


def test_backend_down(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(DOWN))
    assert answer.status == 502
    assert answer.header("X-Road-Error") == "Server.ServerProxy.ServiceFailed.NetworkError"
    assert code(answer.body) == "Server.ServerProxy.ServiceFailed.NetworkError"
    assert str(exchange.closed_port) not in answer.body.decode()  # no internal addresses


def test_backend_slow(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(SLOW))
    assert answer.status == 504
    assert answer.header("X-Road-Error") == "Server.ServerProxy.ServiceFailed.Timeout"


def test_backend_garbage(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(GARBAGE))
    assert answer.status == 502
    assert answer.header("X-Road-Error") == "Server.ServerProxy.ServiceFailed.InvalidResponse"


def test_unasked_for_backend_bytes_never_answer_the_next_request(exchange: Exchange) -> None:
    # the service sends a second response after the first; a connection kept with those
    # bytes would hand them, signed, to whoever calls next
    for _ in range(3):
        answer = exchange.call("GET", exchange.rest_target(DESYNC))
        assert answer.status == 200, answer.body
        assert answer.body == b"first"


def test_backend_error_status_is_a_signed_answer_not_a_failure(exchange: Exchange) -> None:
    answer = exchange.call("POST", exchange.rest_target(STATUS, "/503"), body=b"{}",
                           headers={"Content-Type": "application/json"})
    assert answer.status == 503
    assert answer.header("X-Road-Error") is None
    assert answer.header("X-Road-Request-Hash") is not None
    assert json.loads(answer.body) == {"status": 503}


def test_soap_service_that_does_not_echo_the_header(exchange: Exchange) -> None:
    envelope = render_envelope(SoapHeader(CLIENT, SOAP_NO_ECHO, "noecho-1", "4.0"),
                               "<e xmlns=\"urn:test\"/>")
    answer = exchange.call("POST", "/", body=envelope, client=None,
                           headers={"Content-Type": "text/xml"})
    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ServerProxy.InconsistentResponse"
    assert b"<faultcode>Server.ServerProxy.InconsistentResponse</faultcode>" in answer.body


def test_pinned_client_without_certificate(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO), client=PINNED)
    assert answer.status == 403
    assert answer.header("X-Road-Error") == "Server.ClientProxy.SslAuthenticationFailed"


def test_replayed_id_from_the_information_system(exchange: Exchange) -> None:
    first = exchange.call("GET", exchange.rest_target(ECHO), headers={"X-Road-Id": "dup-1"})
    assert first.status == 200
    second = exchange.call("GET", exchange.rest_target(ECHO), headers={"X-Road-Id": "dup-1"})
    assert second.status == 409
    assert second.header("X-Road-Error") == "Server.ServerProxy.DuplicateMessageId"


def wrong_directory(exchange: Exchange, address: str | None = None,
                    cert: str | None = None) -> Path:
    """A copy of the directory with OTTA's server at another address or certificate."""
    text = exchange.layout.directory_file.read_text()
    port = exchange.layout.ports.otta_server
    if address is not None:
        text = text.replace(f"127.0.0.1:{port}", address)
    if cert is not None:
        text = text.replace('tls_cert_file = "pki/servers/COM.OTTA.SS1/tls.crt"',
                            f'tls_cert_file = "{cert}"')
    path = exchange.layout.root / f"directory-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(text)
    return path


def test_wrong_provider_certificate(exchange: Exchange) -> None:
    # the directory lists another certificate of the same CA for OTTA's server
    directory = wrong_directory(exchange, cert="pki/servers/COM.OTTA.SS1/log.crt")
    consumer = exchange.consumer
    assert consumer is not None
    exchange.stop_node(consumer)
    try:
        exchange.consumer = exchange.start_node(
            exchange.layout.toyono, {"SECSERVER_DIRECTORY_FILE": str(directory)})
        answer = exchange.call("GET", exchange.rest_target(ECHO))
        assert answer.status == 403
        assert answer.header("X-Road-Error") == "Server.ClientProxy.SslAuthenticationFailed"
    finally:
        exchange.stop_node(exchange.consumer)
        exchange.consumer = exchange.start_node(exchange.layout.toyono)


def test_provider_unreachable(exchange: Exchange) -> None:
    provider = exchange.provider
    assert provider is not None
    exchange.stop_node(provider)
    try:
        answer = exchange.call("GET", exchange.rest_target(ECHO))
        assert answer.status == 502
        assert answer.header("X-Road-Error") == "Server.ClientProxy.NetworkError"
    finally:
        exchange.provider = exchange.start_node(exchange.layout.otta)


@contextlib.contextmanager
def log_table_hidden(exchange: Exchange, node: NodeFiles) -> Iterator[None]:
    """The node's message log table renamed away for a while: every append fails."""
    database = exchange.config(node).node.data_dir / "secserver.db"
    connection = sqlite3.connect(database, timeout=30)
    try:
        connection.execute("ALTER TABLE log_records RENAME TO log_records_hidden")
        connection.commit()
        yield
    finally:
        connection.execute("ALTER TABLE log_records_hidden RENAME TO log_records")
        connection.commit()
        connection.close()


def test_logging_failure_fails_closed(exchange: Exchange) -> None:
    with log_table_hidden(exchange, exchange.layout.toyono):
        answer = exchange.call("GET", exchange.rest_target(ECHO),
                               headers={"X-Road-Id": "never-forwarded"})
    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ClientProxy.LoggingFailed"
    provider_db = exchange.config(exchange.layout.otta).node.data_dir / "secserver.db"
    with sqlite3.connect(provider_db) as provider:
        seen = provider.execute("SELECT count(*) FROM log_records WHERE message_id = ?",
                                ("never-forwarded",)).fetchone()[0]
    assert seen == 0, "a message the consumer could not log reached the provider"
    again = exchange.call("GET", exchange.rest_target(ECHO))
    assert again.status == 200, again.body


def test_provider_logging_failure_fails_closed(exchange: Exchange) -> None:
    with log_table_hidden(exchange, exchange.layout.otta):
        answer = exchange.call("POST", exchange.rest_target(ECHO), body=b"x")
    assert answer.status == 500
    assert answer.header("X-Road-Error") == "Server.ServerProxy.LoggingFailed"
    again = exchange.call("GET", exchange.rest_target(ECHO))
    assert again.status == 200, again.body


@pytest.mark.parametrize("side", ["ClientProxy", "ServerProxy"])
def test_timestamp_overdue_refuses_messages(tmp_path: Path, side: str) -> None:
    env = {"SECSERVER_TSA_URL": f"http://127.0.0.1:{free_port()}/",
           "SECSERVER_TSA_GRACE_PERIOD": "0", "SECSERVER_TSA_TIMEOUT": "1",
           "SECSERVER_LOG_CHECKPOINT_INTERVAL": "0.2"}
    with running_exchange(tmp_path, consumer_env=env if side == "ClientProxy" else None,
                          provider_env=env if side == "ServerProxy" else None) as exchange:
        codes = []
        for _ in range(100):
            answer = exchange.call("GET", exchange.rest_target(ECHO))
            codes.append(answer.header("X-Road-Error"))
            if codes[-1] is not None:
                break
            time.sleep(0.1)
        assert codes[-1] == f"Server.{side}.LogTimestampOverdue", codes
        assert answer.status == 503


class TamperingProvider:
    """Sits where the directory says OTTA's server is, with OTTA's TLS key, passes each
    request to the real provider and tampers with the answer."""

    def __init__(self, exchange: Exchange, mode: str) -> None:
        pki = exchange.layout.pki
        self.exchange = exchange
        self.mode = mode
        client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                    cafile=str(pki / "ca/ca.crt"))
        client_context.check_hostname = False
        client_context.load_cert_chain(pki / "servers/GOV.TOYONO.SS1/tls.crt",
                                       pki / "servers/GOV.TOYONO.SS1/tls.key")
        self.pool = PeerPool(client_context)
        directory = load_directory(exchange.layout.directory_file)
        self.real = next(s for s in directory.servers.values()
                         if s.server_id.owner.member_code == "OTTA")
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH,
                                                         cafile=str(pki / "ca/ca.crt"))
        self.server_context.verify_mode = ssl.CERT_REQUIRED
        self.server_context.load_cert_chain(pki / "servers/COM.OTTA.SS1/tls.crt",
                                            pki / "servers/COM.OTTA.SS1/tls.key")
        self.first: tuple[int, list[tuple[str, str]], bytes] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = SpooledBody.from_bytes(await request.read())
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length")]
        answer = await self.pool.request(self.real, request.method, request.raw_path, headers,
                                         body, ResponseLimits(1 << 26, 1 << 20, None), 30.0)
        out_headers = [(k, v) for k, v in answer.headers
                       if k not in ("content-length", "date", "server")]
        data = answer.body.read_all()
        if self.mode == "body":
            data = data[:-1] + bytes([data[-1] ^ 1])
        elif self.mode == "signature":
            out_headers = [(k, v) for k, v in out_headers if k != h.X_SIGNATURE.lower()]
            signature = bytearray(base64.b64decode(answer.header(h.X_SIGNATURE) or ""))
            signature[-3] ^= 0xFF
            out_headers.append((h.X_SIGNATURE, base64.b64encode(bytes(signature)).decode()))
        elif self.mode == "unsigned":
            out_headers = [(k, v) for k, v in out_headers
                           if k not in (h.X_SIGNATURE.lower(), h.X_SIGNED_DOCUMENT.lower())]
        status = answer.status
        if self.mode == "stale":  # the first genuine answer, signed, for every request
            self.first = self.first or (status, out_headers, data)
            status, out_headers, data = self.first
        response = web.Response(status=status, body=data)
        for name, value in out_headers:
            response.headers.add(name, value)
        return response


@pytest.mark.parametrize("mode,expected", [
    ("body", "Server.ClientProxy.InconsistentResponse"),
    ("signature", "Server.ClientProxy.InvalidSignatureValue"),
    ("unsigned", "Server.ClientProxy.InconsistentResponse"),
    ("stale", "Server.ClientProxy.InconsistentResponse"),  # signed, for another request
])
async def test_tampered_responses_are_refused(exchange: Exchange, mode: str,
                                              expected: str) -> None:
    fake = TamperingProvider(exchange, mode)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=fake.server_context).start()
    directory = wrong_directory(exchange, address=f"127.0.0.1:{port}")
    consumer = exchange.consumer
    assert consumer is not None
    await asyncio.to_thread(exchange.stop_node, consumer)
    try:
        exchange.consumer = await asyncio.to_thread(
            exchange.start_node, exchange.layout.toyono,
            {"SECSERVER_DIRECTORY_FILE": str(directory)})
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{exchange.consumer_port}{exchange.rest_target(ECHO, '/t')}"
            if mode == "stale":
                async with session.get(url, headers={"X-Road-Client": str(CLIENT)}) as first:
                    assert first.status == 200, await first.text()
            async with session.get(url, headers={"X-Road-Client": str(CLIENT)}) as answer:
                assert answer.headers.get("X-Road-Error") == expected, await answer.text()
                assert answer.status == 502
    finally:
        await asyncio.to_thread(exchange.stop_node, exchange.consumer)
        exchange.consumer = await asyncio.to_thread(exchange.start_node,
                                                    exchange.layout.toyono)
        await fake.pool.close()
        await runner.cleanup()


def test_unreachable_server_of_a_member_is_skipped(exchange: Exchange) -> None:
    text = exchange.layout.directory_file.read_text()
    first = text.index("[[servers]]")
    dead = (f'[[servers]]\nid = "JP-DEV/COM/OTTA/SS0"\naddress = "127.0.0.1:{free_port()}"\n'
            'tls_cert_file = "pki/servers/COM.OTTA.SS1/log.crt"\n'
            'members = ["JP-DEV/COM/OTTA"]\n\n')
    directory = exchange.layout.root / "directory-failover.toml"
    directory.write_text(text[:first] + dead + text[first:])
    exchange.stop_node(exchange.consumer)
    try:
        exchange.consumer = exchange.start_node(
            exchange.layout.toyono, {"SECSERVER_DIRECTORY_FILE": str(directory)})
        answer = exchange.call("GET", exchange.rest_target(ECHO, "/failover"))
        assert answer.status == 200, answer.body
    finally:
        exchange.stop_node(exchange.consumer)
        exchange.consumer = exchange.start_node(exchange.layout.toyono)
