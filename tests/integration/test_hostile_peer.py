"""Hostile security servers: requests sent straight to the provider's server port over real
mutual TLS, with tampered, missing, replayed or foreign signatures, wrong peers."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from exchange_harness import (
    CLIENT,
    ECHO,
    NO_RIGHT,
    UNREGISTERED,
    Exchange,
    exchange_fixture,  # noqa: F401
)
from sqlalchemy import text

from secserver.db.engine import make_engine
from secserver.routing import documents
from secserver.routing import headers as h
from secserver.routing.body import SpooledBody
from secserver.routing.directory import load_directory
from secserver.routing.peer import PeerPool, PeerResponse, ResponseLimits
from secserver.routing.rest import parse_rest_request
from secserver.signing.keys import load_certificate, load_private_key
from secserver.signing.pki import generate_key, issue_certificate, member_subject, plain_subject
from secserver.signing.signer import Signer

pytestmark = pytest.mark.integration

LIMITS = ResponseLimits(64 * 1024 * 1024, 1024 * 1024, None)


def tls_context(pki: Path, server_dir: str, *, key_name: str = "tls") -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(pki / "ca" / "ca.crt"))
    context.check_hostname = False
    folder = pki / "servers" / server_dir
    context.load_cert_chain(folder / f"{key_name}.crt", folder / f"{key_name}.key")
    return context


class Peer:
    """Plays TOYONO's security server, or a forger of it."""

    def __init__(self, exchange: Exchange, *, key_name: str = "tls",
                 server_dir: str = "GOV.TOYONO.SS1", signer_member: str = "GOV.TOYONO",
                 signer: Signer | None = None) -> None:
        pki = exchange.layout.pki
        self.exchange = exchange
        self.pool = PeerPool(tls_context(pki, server_dir, key_name=key_name))
        self.signer = signer or Signer.from_files(
            pki / "members" / signer_member / "sign.crt",
            pki / "members" / signer_member / "sign.key", batch="off")
        directory = load_directory(exchange.layout.directory_file)
        self.server = next(s for s in directory.servers.values()
                           if s.server_id.owner.member_code == "OTTA")

    async def send(self, method: str, target: str, body: bytes = b"", *,
                   message_id: str | None = None, tamper_document: bytes | None = None,
                   tamper_signature: bool = False, omit_signature: bool = False,
                   signature: bytes | None = None, signed_target: str | None = None,
                   signing_time: datetime | None = None,
                   extra_headers: list[tuple[str, str]] | None = None,
                   unsigned_headers: list[tuple[str, str]] | None = None,
                   sent_body: bytes | None = None, omit_id: bool = False) -> PeerResponse:
        """Sign a request as TOYONO's node would and send it; the keywords spoil it: a
        ``signature`` in place of the real one, ``unsigned_headers`` added after signing,
        a ``sent_body`` other than the signed one, ..."""
        message_id = message_id or str(uuid.uuid4())
        pairs = [("X-Road-Client", str(CLIENT)), ("X-Road-Id", message_id),
                 *(extra_headers or [])]
        spooled = SpooledBody.from_bytes(body)
        exchange = parse_rest_request(method, signed_target or target, pairs)
        document = documents.request_document(exchange, message_id, spooled,
                                              signing_time or datetime.now(UTC))
        if tamper_document is not None:
            document = tamper_document
        if signature is None:
            signature = await self.signer.sign(document)
        if tamper_signature:
            signature = signature[:-8] + bytes(b ^ 0xFF for b in signature[-8:])
        headers = [*exchange.headers, ("X-Road-Client", str(CLIENT)),
                   ("X-Road-Id", message_id), ("X-Road-Message-Kind", "rest"),
                   *(unsigned_headers or [])]
        if omit_id:
            headers = [(name, value) for name, value in headers if name != "X-Road-Id"]
        if not omit_signature:
            headers += [(h.X_SIGNED_DOCUMENT, base64.b64encode(document).decode()),
                        (h.X_SIGNATURE, base64.b64encode(signature).decode())]
        if sent_body is not None:
            spooled = SpooledBody.from_bytes(sent_body)
        return await self.pool.request(self.server, method, target, headers, spooled, LIMITS,
                                       30.0)

    async def close(self) -> None:
        await self.pool.close()
        await self.signer.close()

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def code_of(response: PeerResponse) -> str | None:
    return response.header("X-Road-Error")


async def test_honest_peer_is_served(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO, "/x"))
    assert response.status == 200, response.body.read_all()
    assert response.header(h.X_SIGNATURE) is not None
    assert response.header(h.X_REQUEST_HASH) is not None


async def test_request_without_message_id_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO), omit_id=True)
    assert code_of(response) == "Server.ServerProxy.MissingHeaderField"
    assert response.status == 400


async def test_tampered_signature_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO), tamper_signature=True)
    assert code_of(response) in ("Server.ServerProxy.InvalidSignatureValue",
                                 "Server.ServerProxy.MalformedSignature")


async def test_document_not_matching_the_request_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        # signed for /public, sent to /admin: a valid signature over another request
        response = await peer.send("GET", exchange.rest_target(ECHO, "/admin"),
                                   signed_target=exchange.rest_target(ECHO, "/public"))
    assert code_of(response) == "Server.ServerProxy.InvalidMessage"
    assert "path" in json.loads(response.body.read_all())["message"]


async def test_body_swapped_after_signing_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("POST", exchange.rest_target(ECHO, "/x"), b"original",
                                   sent_body=b"swapped!")
    assert code_of(response) == "Server.ServerProxy.InvalidMessage"


async def test_missing_signature_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO), omit_signature=True)
    assert code_of(response) == "Server.ServerProxy.MissingSignature"


async def test_signature_of_another_member_is_refused(exchange: Exchange) -> None:
    # OTTA's key claiming TOYONO's client
    async with Peer(exchange, signer_member="COM.OTTA") as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO))
    assert code_of(response) == "Server.ServerProxy.SignerMismatch"


async def test_replayed_message_id_is_refused(exchange: Exchange) -> None:
    message_id = str(uuid.uuid4())
    async with Peer(exchange) as peer:
        first = await peer.send("GET", exchange.rest_target(ECHO), message_id=message_id)
        second = await peer.send("GET", exchange.rest_target(ECHO), message_id=message_id)
    assert first.status == 200
    assert code_of(second) == "Server.ServerProxy.DuplicateMessageId"
    assert second.status == 409


def provider_records(exchange: Exchange, message_id: str) -> list[tuple[str, str]]:
    """(direction, error code) of the provider's log records of one message, in order."""
    config = exchange.config(exchange.layout.otta)
    engine = make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT content FROM log_records WHERE node_id = :node AND message_id = :id "
                "ORDER BY seq"), {"node": str(config.node.server_id), "id": message_id}).all()
    finally:
        engine.dispose()
    fields = [dict(line.split(": ", 1) for line in bytes(c).decode().splitlines()
                   if ": " in line) for (c,) in rows]
    return [(f["direction"], f["error-code"]) for f in fields]


@pytest.mark.parametrize("how", ["restart", "kill -9"])
async def test_replay_is_refused_after_provider_restart(exchange: Exchange, how: str) -> None:
    message_id = str(uuid.uuid4())
    async with Peer(exchange) as peer:
        first = await peer.send("GET", exchange.rest_target(ECHO), message_id=message_id)
    assert first.status == 200
    if how == "restart":
        exchange.restart_provider()
    else:  # the reservation was committed with the request record, before the backend
        assert exchange.provider is not None
        os.kill(exchange.provider.process.pid, signal.SIGKILL)
        exchange.provider.process.wait(10)
        exchange.provider = exchange.start_node(exchange.layout.otta)
    async with Peer(exchange) as peer:
        again = await peer.send("GET", exchange.rest_target(ECHO), message_id=message_id)
    assert code_of(again) == "Server.ServerProxy.DuplicateMessageId"
    # known from the database (memory was lost): the replayed request is logged, then
    # its refusal
    assert provider_records(exchange, message_id) == [
        ("request", ""), ("response", ""), ("request", ""),
        ("response", "Server.ServerProxy.DuplicateMessageId")]


async def test_old_signing_time_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO),
                                   signing_time=datetime.now(UTC) - timedelta(hours=2))
    assert code_of(response) == "Server.ServerProxy.InvalidMessage"


async def test_peer_not_in_directory_is_refused(exchange: Exchange) -> None:
    # a certificate of the right CA, but not the TLS certificate the directory lists
    async with Peer(exchange, key_name="log") as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO))
    assert code_of(response) == "Server.ServerProxy.SslAuthenticationFailed"


async def test_listed_server_of_another_member_is_refused(exchange: Exchange) -> None:
    # OTTA's own security server (listed, but serving OTTA only) speaking for TOYONO
    async with Peer(exchange, server_dir="COM.OTTA.SS1") as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO))
    assert code_of(response) == "Server.ServerProxy.SslAuthenticationFailed"
    assert "does not serve" in json.loads(response.body.read_all())["message"]


async def test_no_right_and_unregistered_service(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        denied = await peer.send("GET", exchange.rest_target(NO_RIGHT))
        unknown = await peer.send("GET", exchange.rest_target(UNREGISTERED))
    assert code_of(denied) == "Server.ServerProxy.AccessDenied"
    assert code_of(unknown) == "Server.ServerProxy.UnknownService"
    assert unknown.status == 404


async def test_header_added_after_signing_is_refused(exchange: Exchange) -> None:
    async with Peer(exchange) as peer:
        response = await peer.send("GET", exchange.rest_target(ECHO),
                                   unsigned_headers=[("X-Road-UserId", "injected")])
    assert code_of(response) == "Server.ServerProxy.InvalidMessage"


async def test_client_alias_from_a_peer_never_reaches_the_service(exchange: Exchange) -> None:
    # signed or not, an underscore spelling of X-Road-Client is not passed on
    async with Peer(exchange) as peer:
        unsigned = await peer.send("GET", exchange.rest_target(ECHO),
                                   unsigned_headers=[("X_Road_Client", "JP-DEV/GOV/X/Y")])
        signed = await peer.send("GET", exchange.rest_target(ECHO),
                                 extra_headers=[("X_Road_Client", "JP-DEV/GOV/X/Y")])
    assert unsigned.status == 200, unsigned.body.read_all()
    seen = json.loads(unsigned.body.read_all())["headers"]
    assert seen["x-road-client"] == str(CLIENT) and "x_road_client" not in seen
    assert signed.status == 200, signed.body.read_all()
    assert "x_road_client" not in json.loads(signed.body.read_all())["headers"]


def forged_signer(exchange: Exchange, kind: str) -> Signer:
    """A signing key for TOYONO's member that must be refused, of the given ``kind``."""
    pki = exchange.layout.pki
    now = datetime.now(UTC)
    key = generate_key("ec-p256")
    issuer_key = load_private_key(pki / "ca" / "ca.key")
    issuer = load_certificate(pki / "ca" / "ca.crt")
    if kind == "foreign-ca":
        issuer_key = generate_key("ec-p256")
        issuer = issue_certificate(subject=plain_subject("JP-DEV", "rogue CA"),
                                   public_key=issuer_key.public_key(), issuer_key=issuer_key,
                                   issuer=None, profile="ca", not_before=now - timedelta(days=1),
                                   not_after=now + timedelta(days=30))
    if kind == "tls-key":  # a TLS-only certificate of the right member
        certificate = issue_certificate(
            subject=member_subject(CLIENT.member), public_key=key.public_key(),
            issuer_key=issuer_key, issuer=issuer, profile="tls",
            not_before=now - timedelta(days=1), not_after=now + timedelta(days=30))
        return Signer(key, certificate, batch="off")
    start, end = now - timedelta(days=30), now + timedelta(days=30)
    if kind == "expired":
        end = now - timedelta(days=1)
    if kind == "not-yet-valid":
        start = now + timedelta(days=1)
    certificate = issue_certificate(
        subject=member_subject(CLIENT.member), public_key=key.public_key(),
        issuer_key=issuer_key, issuer=issuer, profile="sign", not_before=start, not_after=end)
    return Signer(key, certificate, batch="off")


@pytest.mark.parametrize("kind,code", [
    ("foreign-ca", "Server.ServerProxy.UntrustedCertificate"),
    ("expired", "Server.ServerProxy.CertificateExpired"),
    ("not-yet-valid", "Server.ServerProxy.CertificateNotYetValid"),
    ("tls-key", "Server.ServerProxy.WrongKeyUsage"),
])
async def test_forged_signing_certificates_are_refused(exchange: Exchange, kind: str,
                                                       code: str) -> None:
    peer = Peer(exchange, signer=forged_signer(exchange, kind))
    try:
        response = await peer.send("GET", exchange.rest_target(ECHO))
        assert code_of(response) == code, response.body.read_all()
    finally:
        await peer.close()


@pytest.mark.parametrize("signature,code", [
    (b"\x30\x03\x02\x01\x01", "MalformedSignature"),
    (None, "DigestMismatch"),  # a valid CMS signature over other content
])
async def test_malformed_and_misdirected_signatures(exchange: Exchange, signature: bytes | None,
                                                    code: str) -> None:
    async with Peer(exchange) as peer:
        if signature is None:
            signature = await peer.signer.sign(b"another document")
        response = await peer.send("GET", exchange.rest_target(ECHO), signature=signature)
    assert code_of(response) == f"Server.ServerProxy.{code}", response.body.read_all()


async def test_server_port_requires_a_client_certificate(exchange: Exchange) -> None:
    import asyncio

    context = ssl.create_default_context(cafile=str(exchange.layout.pki / "ca" / "ca.crt"))
    context.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", exchange.provider_server_port, ssl=context)
        try:  # TLS 1.3: the refusal arrives with the first read
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            data = await reader.read(100)
            if not data:
                raise ConnectionError("closed without an answer")
        finally:
            writer.close()

