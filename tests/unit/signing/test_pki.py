"""The development PKI layout and the identity binding in certificates."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_fixtures import dev_pki, make_ca, make_leaf  # noqa: F401

from secserver.identifiers import ClientId, ServerId
from secserver.signing.errors import SignerMismatch
from secserver.signing.keys import load_certificate, load_private_key
from secserver.signing.pki import (
    DEV_MEMBERS,
    DEV_SERVERS,
    DevPki,
    PkiError,
    init_dev_pki,
    member_id_from_certificate,
    member_subject,
    plain_subject,
    server_id_from_certificate,
    server_subject,
)
from secserver.signing.trust import Purpose, TrustStore

LAYOUT = [
    "ca/ca.crt", "ca/ca.key",
    "members/GOV.TOYONO/sign.crt", "members/GOV.TOYONO/sign.key",
    "members/COM.OTTA/sign.crt", "members/COM.OTTA/sign.key",
    "servers/GOV.TOYONO.SS1/tls.crt", "servers/GOV.TOYONO.SS1/tls.key",
    "servers/GOV.TOYONO.SS1/log.crt", "servers/GOV.TOYONO.SS1/log.key",
    "servers/COM.OTTA.SS1/tls.crt", "servers/COM.OTTA.SS1/tls.key",
    "servers/COM.OTTA.SS1/log.crt", "servers/COM.OTTA.SS1/log.key",
    "tsa/tsa.crt", "tsa/tsa.key",
    "directory/operator.crt", "directory/operator.key",
]


def test_layout_and_modes(dev_pki: DevPki) -> None:  # noqa: F811
    found = sorted(str(p.relative_to(dev_pki.directory)) for p in dev_pki.directory.rglob("*")
                   if p.is_file())
    assert found == sorted(LAYOUT)
    for name in LAYOUT:
        if name.endswith(".key"):
            path = dev_pki.directory / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
            assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
            assert isinstance(load_private_key(path), ec.EllipticCurvePrivateKey)


def test_identities(dev_pki: DevPki) -> None:  # noqa: F811
    trust = TrustStore.from_files([dev_pki.ca_cert])
    now = datetime.now(UTC)
    for member, _subsystem in DEV_MEMBERS:
        cert = load_certificate(dev_pki.member_dir(member) / "sign.crt")
        assert member_id_from_certificate(cert) == member
        trust.verify(cert, now=now, purpose=Purpose.SIGNING)
        with pytest.raises(SignerMismatch):
            server_id_from_certificate(cert)
    for server in DEV_SERVERS:
        tls = load_certificate(dev_pki.server_dir(server) / "tls.crt")
        log = load_certificate(dev_pki.server_dir(server) / "log.crt")
        assert server_id_from_certificate(tls) == server == server_id_from_certificate(log)
        with pytest.raises(SignerMismatch, match="names a subsystem or server"):
            member_id_from_certificate(tls)
        trust.verify(tls, now=now, purpose=Purpose.TLS_SERVER)
        trust.verify(tls, now=now, purpose=Purpose.TLS_CLIENT)
        trust.verify(log, now=now, purpose=Purpose.SIGNING)
        san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        eku = tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    tsa = load_certificate(dev_pki.tsa_cert)
    eku_ext = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku_ext.critical and list(eku_ext.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    trust.verify(tsa, now=now, purpose=Purpose.TIMESTAMPING)
    with pytest.raises(SignerMismatch, match="serialNumber"):
        member_id_from_certificate(tsa)
    trust.verify(load_certificate(dev_pki.operator_cert), now=now, purpose=Purpose.SIGNING)


def test_identity_binding_edge_cases() -> None:
    ca = make_ca()
    unicode_member = ClientId("JP-DEV", "GOV", "豊能町")
    cert = make_leaf(ca, member_subject(unicode_member)).cert
    assert member_id_from_certificate(cert) == unicode_member
    two = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "JP-DEV/GOV/A"),
                     x509.NameAttribute(NameOID.SERIAL_NUMBER, "JP-DEV/GOV/B")])
    with pytest.raises(SignerMismatch, match="2 serialNumber"):
        member_id_from_certificate(make_leaf(ca, two).cert)
    junk = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "12345")])
    with pytest.raises(SignerMismatch, match="not a member id"):
        member_id_from_certificate(make_leaf(ca, junk).cert)
    with pytest.raises(SignerMismatch, match="not a security server id"):
        server_id_from_certificate(make_leaf(ca, junk).cert)
    server = ServerId(ClientId("JP-DEV", "COM", "OTTA"), "SS9")
    assert server_id_from_certificate(make_leaf(ca, server_subject(server), "tls").cert) \
        == server
    with pytest.raises(SignerMismatch):
        member_id_from_certificate(make_leaf(ca, plain_subject("JP-DEV", "x")).cert)


def test_rsa_and_passphrase(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "p", key_type="rsa2048", passphrase=b"pw")
    key_path = pki.member_dir(DEV_MEMBERS[0][0]) / "sign.key"
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = load_private_key(key_path, b"pw")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    tls = load_certificate(pki.server_dir(DEV_SERVERS[0]) / "tls.crt")
    assert tls.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    before = pki.ca_cert.read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        init_dev_pki(tmp_path / "p")
    assert pki.ca_cert.read_bytes() == before
    replaced = init_dev_pki(tmp_path / "p", force=True)
    assert replaced.ca_cert.read_bytes() != before
    with pytest.raises(PkiError, match="unknown key type"):
        init_dev_pki(tmp_path / "q", key_type="dsa")  # type: ignore[arg-type]
