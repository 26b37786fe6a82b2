"""The development TSA as a real process on 127.0.0.1, and the client's network failures."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pki_fixtures import dev_pki, start_tsa  # noqa: F401

from secserver.signing.errors import TimestampUnavailable
from secserver.signing.pki import DevPki, init_dev_pki
from secserver.signing.timestamp import (
    QUERY_TYPE,
    REPLY_TYPE,
    TimestampClient,
    build_request,
    request_timestamp,
    verify_timestamp,
)
from secserver.signing.trust import TrustStore
from secserver.signing.tsa import DevTsa

pytestmark = pytest.mark.integration
DATA = b"checkpoint data\n"


async def stamp_many(url: str, trust: TrustStore, count: int) -> list[int]:
    serials = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            data = DATA + str(i).encode()
            token = await request_timestamp(url, data, timeout=10, session=session, trust=trust)
            serials.append(verify_timestamp(token, data, trust, datetime.now(UTC)).serial)
    return serials


async def test_serve_verify_and_restart(dev_pki: DevPki, tmp_path: Path) -> None:  # noqa: F811
    directory = tmp_path / "pki"
    shutil.copytree(dev_pki.directory, directory)
    trust = TrustStore.from_files([dev_pki.ca_cert])
    with start_tsa(directory) as tsa:
        first = await stamp_many(tsa.url, trust, 3)
        token = await request_timestamp(tsa.url, DATA, timeout=10)
        async with aiohttp.ClientSession() as session:
            async with session.get(tsa.url + "healthz") as health:
                assert health.status == 200
            async with session.post(tsa.url, data=b"x",
                                    headers={"Content-Type": "text/plain"}) as wrong:
                assert wrong.status == 415
            async with session.post(tsa.url, data=build_request(DATA, 1),
                                    headers={"Content-Type": QUERY_TYPE}) as ok:
                assert ok.status == 200 and ok.content_type == REPLY_TYPE
    assert tsa.process.returncode == 0  # clean stop on SIGTERM
    with start_tsa(directory) as tsa:
        second = await stamp_many(tsa.url, trust, 3)
    serials = first + second
    assert len(set(serials)) == len(serials) and serials == sorted(serials)
    if shutil.which("openssl"):
        (tmp_path / "data").write_bytes(DATA)
        (tmp_path / "token").write_bytes(token)
        result = subprocess.run(
            ["openssl", "ts", "-verify", "-data", str(tmp_path / "data"), "-in",
             str(tmp_path / "token"), "-token_in", "-CAfile", str(dev_pki.ca_cert),
             "-untrusted", str(dev_pki.tsa_cert)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


@contextlib.asynccontextmanager
async def serving_post(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                       ) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 answering ``POST /`` with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_client_keeps_one_connection(dev_pki: DevPki, tmp_path: Path) -> None:  # noqa: F811
    """``TimestampClient`` asks over one kept-alive connection (the TSA, served over HTTP on
    127.0.0.1 by the development TSA code, sees one peer port for several tokens); plain
    ``request_timestamp`` connects anew each time."""
    shutil.copytree(dev_pki.directory, tmp_path / "pki")
    tsa = DevTsa.from_directory(tmp_path / "pki")
    trust = TrustStore.from_files([dev_pki.ca_cert])
    peers: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(body=tsa.respond(await request.read(), datetime.now(UTC)),
                            content_type=REPLY_TYPE)

    async with serving_post(handler) as url:
        client = TimestampClient(url, timeout=10, trust=trust)
        serials = []
        for i in range(3):
            data = DATA + str(i).encode()
            serials.append(verify_timestamp(await client.stamp(data), data, trust,
                                            datetime.now(UTC)).serial)
        assert len(set(peers)) == 1 and serials == sorted(set(serials))
        await client.close()
        again = await client.stamp(DATA)  # a closed client opens a new session when used
        verify_timestamp(again, DATA, trust, datetime.now(UTC))
        await client.close()
        assert len(set(peers)) == 2
        for _ in range(2):
            await request_timestamp(url, DATA, timeout=10, trust=trust)
        assert len(set(peers)) == 4  # without a session: a new connection per token


async def test_two_processes_one_directory(dev_pki: DevPki, tmp_path: Path) -> None:  # noqa: F811
    directory = tmp_path / "pki"
    shutil.copytree(dev_pki.directory, directory)
    trust = TrustStore.from_files([dev_pki.ca_cert])
    with start_tsa(directory) as one, start_tsa(directory) as two:
        serials = await stamp_many(one.url, trust, 2) + await stamp_many(two.url, trust, 2)
    assert len(set(serials)) == 4


async def test_encrypted_tsa_key(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", passphrase=b"tsa pass")
    (tmp_path / "pass").write_text("tsa pass\n")
    trust = TrustStore.from_files([pki.ca_cert])
    with start_tsa(pki.directory, passphrase_file=tmp_path / "pass") as tsa:
        assert len(await stamp_many(tsa.url, trust, 1)) == 1
    with pytest.raises(RuntimeError, match="is encrypted"), start_tsa(pki.directory):
        pass


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable() -> None:
    with pytest.raises(TimestampUnavailable, match="unreachable"):
        await request_timestamp(f"http://127.0.0.1:{closed_port()}/", DATA, timeout=5)


async def test_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimestampUnavailable, match=r"did not answer within 0\.3 s"):
            await request_timestamp(f"http://127.0.0.1:{port}/", DATA, timeout=0.3)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("status", "content_type", "message"), [
    (503, REPLY_TYPE, "HTTP 503"),
    (200, "text/html", "text/html"),
])
async def test_http_errors(status: int, content_type: str, message: str) -> None:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=b"<html/>", content_type=content_type)

    async with serving_post(handler) as url:
        with pytest.raises(TimestampUnavailable, match=message):
            await request_timestamp(url, DATA, timeout=5)
