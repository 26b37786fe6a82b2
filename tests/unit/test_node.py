from __future__ import annotations

import gc
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from secserver.node import (
    GC_YOUNG_THRESHOLD,
    allowed_hosts,
    peer_tls_context,
    server_tls_context,
    settle_garbage_collector,
)
from secserver.signing.pki import generate_key, issue_certificate, plain_subject


def credentials(tmp_path: Path) -> tuple[Path, Path, x509.Certificate]:
    now = datetime.now(UTC)
    ca_key = generate_key("ec-p256")
    ca = issue_certificate(subject=plain_subject("JP-DEV", "ca"), public_key=ca_key.public_key(),
                           issuer_key=ca_key, issuer=None, profile="ca",
                           not_before=now - timedelta(days=1), not_after=now + timedelta(days=9))
    key = generate_key("ec-p256")
    cert = issue_certificate(subject=plain_subject("JP-DEV", "node"),
                             public_key=key.public_key(), issuer_key=ca_key, issuer=ca,
                             profile="tls", not_before=now - timedelta(days=1),
                             not_after=now + timedelta(days=9))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, ca


def test_server_port_context_is_mutual_tls_1_2_or_later(tmp_path: Path) -> None:
    cert, key, ca = credentials(tmp_path)
    context = server_tls_context(cert, key, None, [ca], require_client=True)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    client_port = server_tls_context(cert, key, None, [ca], require_client=False)
    assert client_port.verify_mode == ssl.CERT_OPTIONAL
    # a connection's client certificate cannot change (the handlers learn it once)
    for listener in (context, client_port):
        assert listener.options & ssl.OP_NO_RENEGOTIATION


def test_peer_context_verifies_the_chain_and_presents_our_certificate(tmp_path: Path) -> None:
    cert, key, ca = credentials(tmp_path)
    context = peer_tls_context(cert, key, None, [ca])
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False  # the peer certificate is pinned instead
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1") >= {"127.0.0.1", "localhost", "::1"}
    assert "ss1.example" in allowed_hosts("10.0.0.5", ("SS1.example",))
    assert "evil.example" not in allowed_hosts("0.0.0.0")  # noqa: S104


def test_settled_collector_freezes_the_start_up_heap_and_still_collects_cycles() -> None:
    threshold = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])

        class Node:
            other: object = None

        first, second = Node(), Node()
        first.other, second.other = second, first  # a cycle made after start-up
        del first, second
        assert gc.collect() >= 2  # not frozen: still found and freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
