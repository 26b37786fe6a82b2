"""Loading and writing keys and certificates."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from secserver.signing.errors import KeyUnavailable
from secserver.signing.keys import (
    load_certificate,
    load_certificates,
    load_private_key,
    public_key_matches,
    write_private_key,
)
from secserver.signing.pki import DevPki, init_dev_pki


def test_write_and_load_encrypted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "k" / "sign.key"
    write_private_key(path, key, b"s3cret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_bytes()
    assert text.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = load_private_key(path, b"s3cret")
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    with pytest.raises(KeyUnavailable, match="is encrypted"):
        load_private_key(path, None)
    with pytest.raises(KeyUnavailable, match="wrong passphrase"):
        load_private_key(path, b"wrong")


def test_plain_and_der_keys(tmp_path: Path) -> None:
    key = rsa.generate_private_key(65537, 2048)
    write_private_key(tmp_path / "a.key", key, None)
    assert (tmp_path / "a.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(KeyUnavailable, match="not encrypted"):
        load_private_key(tmp_path / "a.key", b"pass")
    (tmp_path / "b.der").write_bytes(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert isinstance(load_private_key(tmp_path / "b.der"), rsa.RSAPrivateKey)


def test_rejected_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailable, match="does not exist"):
        load_private_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nxx\n")
    with pytest.raises(KeyUnavailable, match="cannot load"):
        load_private_key(tmp_path / "junk.key")
    small = rsa.generate_private_key(65537, 1024)  # noqa: S505 - must be rejected
    (tmp_path / "small.key").write_bytes(small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(KeyUnavailable, match="at least 2048"):
        load_private_key(tmp_path / "small.key")
    edkey = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.key").write_bytes(edkey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(KeyUnavailable, match="use EC P-256 or RSA"):
        load_private_key(tmp_path / "ed.key")


def test_certificates(tmp_path: Path) -> None:
    pki: DevPki = init_dev_pki(tmp_path / "pki")
    ca = load_certificate(pki.ca_cert)
    tsa = load_certificate(pki.tsa_cert)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca_cert.read_bytes() + pki.tsa_cert.read_bytes())
    assert load_certificates(bundle) == [ca, tsa]
    (tmp_path / "ca.der").write_bytes(ca.public_bytes(serialization.Encoding.DER))
    assert load_certificate(tmp_path / "ca.der") == ca
    (tmp_path / "bad.crt").write_bytes(b"nonsense")
    with pytest.raises(KeyUnavailable, match=r"valid X\.509"):
        load_certificate(tmp_path / "bad.crt")
    assert public_key_matches(load_private_key(pki.tsa_key), tsa)
    assert not public_key_matches(load_private_key(pki.tsa_key), ca)
