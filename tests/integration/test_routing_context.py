"""The handlers' connection glue on a real mutual-TLS aiohttp server on 127.0.0.1: what a
connection says about its caller is learnt once per connection, and request bodies read
alike whether they arrived with their head or trickled in later."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from pki_fixtures import Issued, make_ca, make_leaf

from secserver.config import LimitsSection
from secserver.node import server_tls_context
from secserver.routing.context import PeerFacts, peer_facts, read_request_body
from secserver.routing.middleware import coded_error, use_coded_errors
from secserver.signing.document import body_digest
from secserver.signing.pki import plain_subject

pytestmark = pytest.mark.integration

LIMITS = LimitsSection(max_message_bytes=16384, spool_threshold_bytes=4096, body_timeout=5.0)


def write_pair(directory: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return cert, key


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    client_der: bytes


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca()
    server_cert, server_key = write_pair(
        directory, "server", make_leaf(ca, plain_subject("JP-DEV", "server"), "tls"))
    client = make_leaf(ca, plain_subject("JP-DEV", "client"), "tls")
    client_cert, client_key = write_pair(directory, "client", client)
    server = server_tls_context(server_cert, server_key, None, [ca.cert], require_client=True)
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cadata=ca.cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    context.check_hostname = False
    context.load_cert_chain(client_cert, client_key)
    return Tls(server, context, client.cert.public_bytes(serialization.Encoding.DER))


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: Tls) -> AsyncIterator[int]:
    """A low-level aiohttp server with the node's coded request handler, as the node runs
    its exchange ports; yields the port."""

    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            return coded_error(request, exc, "ServerProxy")

    server = web.Server(guarded, access_log=None)
    use_coded_errors(server, "ServerProxy")
    runner = web.ServerRunner(server)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


class Connection:
    """One keep-alive client connection speaking raw HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split(" ")[1]), headers, body


@contextlib.asynccontextmanager
async def connect(port: int, tls: Tls) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client)
    try:
        yield Connection(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def post(body: bytes, *, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = f"POST /r1/x HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n\r\n".encode()
    if chunked:
        return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return head + body


async def describe(request: web.BaseRequest, spool_dir: Path) -> web.Response:
    known = isinstance(getattr(request.protocol, "peer_facts", None), PeerFacts)
    facts = peer_facts(request)
    body = await read_request_body(request, LIMITS, spool_dir)
    try:
        return web.json_response({
            "known": known, "kept": getattr(request.protocol, "peer_facts", None) is facts,
            "sha256": facts.cert_sha256, "der": facts.cert_der == body.read_all(),
            "address": str(facts.address), "size": body.size, "digest": body.digest_b64,
            "in_memory": body.in_memory})
    finally:
        body.close()


async def test_peer_facts_are_learnt_once_per_connection(tls: Tls, tmp_path: Path) -> None:
    async with serving(lambda request: describe(request, tmp_path), tls) as port:
        async with connect(port, tls) as first:
            answers = []
            for _ in range(3):
                await first.send(post(tls.client_der))
                status, _, body = await first.answer()
                assert status == 200
                answers.append(json.loads(body))
        async with connect(port, tls) as second:
            await second.send(post(b"x"))
            answers.append(json.loads((await second.answer())[2]))
    assert [a["known"] for a in answers] == [False, True, True, False]
    assert all(a["kept"] for a in answers)
    assert {a["sha256"] for a in answers} == {hashlib.sha256(tls.client_der).hexdigest()}
    assert all(a["der"] for a in answers[:3])
    assert {a["address"] for a in answers} == {"127.0.0.1"}


async def test_a_body_reads_alike_whole_or_trickled(tls: Tls, tmp_path: Path) -> None:
    body = bytes(range(256)) * 4
    async with serving(lambda request: describe(request, tmp_path), tls) as port, \
            connect(port, tls) as connection:
        await connection.send(post(body))  # head and body in one write
        whole = json.loads((await connection.answer())[2])
        message = post(body)
        head_end = message.index(b"\r\n\r\n") + 4
        await connection.send(message[:head_end])
        for part in (message[head_end:head_end + 100], message[head_end + 100:]):
            await asyncio.sleep(0.2)  # the handler is already waiting for the body
            await connection.send(part)
        trickled = json.loads((await connection.answer())[2])
        await connection.send(post(body, chunked=True))
        chunked = json.loads((await connection.answer())[2])
    for answer in (whole, trickled, chunked):
        assert (answer["size"], answer["digest"], answer["in_memory"]) == (
            len(body), body_digest(body), True)


async def test_a_whole_body_keeps_the_spool_threshold_and_the_limit(
        tls: Tls, tmp_path: Path) -> None:
    spooled = b"s" * (LIMITS.spool_threshold_bytes + 1)
    too_large = b"L" * (LIMITS.max_message_bytes + 1)
    async with serving(lambda request: describe(request, tmp_path), tls) as port:
        async with connect(port, tls) as connection:
            await connection.send(post(spooled))
            status, _, answer = await connection.answer()
            assert status == 200
            assert json.loads(answer)["in_memory"] is False  # in a spool file
            assert json.loads(answer)["digest"] == body_digest(spooled)
        async with connect(port, tls) as connection:
            # chunked: no Content-Length to refuse it by before it is read
            await connection.send(post(too_large, chunked=True))
            status, headers, answer = await connection.answer()
    assert status == 413
    assert headers["x-road-error"] == "Server.ServerProxy.MessageTooLarge"
    assert "larger than the limit" in json.loads(answer)["message"]
    assert not list(tmp_path.iterdir())  # the spool files are gone
