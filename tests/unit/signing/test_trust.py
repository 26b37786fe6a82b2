"""Certificate path validation: trust anchors, intermediates, time, purpose, cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pki_fixtures import Issued, ca_fixture, make_ca, make_leaf  # noqa: F401

from secserver.identifiers import ClientId
from secserver.signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    KeyUnavailable,
    UntrustedCertificate,
    WrongKeyUsage,
)
from secserver.signing.keys import write_certificate
from secserver.signing.pki import member_subject, plain_subject
from secserver.signing.trust import Purpose, TrustStore

NOW = datetime(2030, 6, 1, tzinfo=UTC)
MEMBER = member_subject(ClientId("JP-DEV", "GOV", "TOYONO"))


def test_valid_chain_and_cache(ca: Issued) -> None:
    leaf = make_leaf(ca, MEMBER, not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=1))
    trust = TrustStore([ca.cert])
    assert trust.verify(leaf.cert, now=NOW) == (leaf.cert, ca.cert)
    assert trust.verify(leaf.cert, now=NOW) == (leaf.cert, ca.cert)  # cached
    # The cache never extends validity: a later check still fails.
    with pytest.raises(CertificateExpired, match="expired at"):
        trust.verify(leaf.cert, now=NOW + timedelta(days=2))
    with pytest.raises(CertificateNotYetValid, match="not valid before"):
        trust.verify(leaf.cert, now=NOW - timedelta(days=2))


def test_untrusted(ca: Issued) -> None:
    other = make_ca("Other CA")
    leaf = make_leaf(other, MEMBER)
    with pytest.raises(UntrustedCertificate, match="does not chain"):
        TrustStore([ca.cert]).verify(leaf.cert, now=NOW)
    # Same issuer name, different key: the signature check catches the impostor.
    impostor = make_ca("Test CA")
    with pytest.raises(UntrustedCertificate):
        TrustStore([ca.cert]).verify(make_leaf(impostor, MEMBER).cert, now=NOW)
    with pytest.raises(UntrustedCertificate, match="empty"):
        TrustStore([])


def test_intermediates(ca: Issued) -> None:
    root = make_ca("Root", path_length=1)
    inter = make_ca("Intermediate", issuer=root)
    leaf = make_leaf(inter, MEMBER)
    trust = TrustStore([root.cert])
    with pytest.raises(UntrustedCertificate):
        trust.verify(leaf.cert, now=NOW)
    assert trust.verify(leaf.cert, now=NOW, intermediates=[inter.cert]) == \
        (leaf.cert, inter.cert, root.cert)
    # A root that allows no intermediate CA rejects the chain.
    strict_root = make_ca("Strict root", path_length=0)
    strict_inter = make_ca("Intermediate 2", issuer=strict_root)
    with pytest.raises(UntrustedCertificate, match="allows 0"):
        TrustStore([strict_root.cert]).verify(make_leaf(strict_inter, MEMBER).cert, now=NOW,
                                             intermediates=[strict_inter.cert])
    # An expired intermediate fails the chain.
    old_inter = make_ca("Old intermediate", issuer=root, not_after=NOW - timedelta(days=1))
    with pytest.raises(CertificateExpired, match="CA certificate"):
        trust.verify(make_leaf(old_inter, MEMBER).cert, now=NOW,
                     intermediates=[old_inter.cert])


def test_leaf_cannot_issue(ca: Issued) -> None:
    leaf = make_leaf(ca, MEMBER)
    # A certificate "issued" by an end-entity certificate.
    key = make_leaf(ca, MEMBER).key
    forged = (x509.CertificateBuilder().subject_name(MEMBER).issuer_name(leaf.cert.subject)
              .public_key(key.public_key()).serial_number(7)
              .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
              .sign(leaf.key, hashes.SHA256()))
    with pytest.raises(UntrustedCertificate, match="not a CA"):
        TrustStore([ca.cert]).verify(forged, now=NOW, intermediates=[leaf.cert])


def test_purposes(ca: Issued) -> None:
    trust = TrustStore([ca.cert])
    tls = make_leaf(ca, MEMBER, "tls").cert
    sign = make_leaf(ca, MEMBER, "sign").cert
    tsa = make_leaf(ca, plain_subject("JP-DEV", "TSA"), "tsa").cert
    with pytest.raises(WrongKeyUsage, match="cannot sign documents"):
        trust.verify(tls, now=NOW, purpose=Purpose.SIGNING)
    with pytest.raises(WrongKeyUsage, match="cannot sign documents"):
        trust.verify(tsa, now=NOW, purpose=Purpose.SIGNING)
    with pytest.raises(WrongKeyUsage, match="not a TSA certificate"):
        trust.verify(sign, now=NOW, purpose=Purpose.TIMESTAMPING)
    with pytest.raises(WrongKeyUsage, match="serverAuth"):
        trust.verify(tsa, now=NOW, purpose=Purpose.TLS_SERVER)
    with pytest.raises(WrongKeyUsage, match="CA certificate"):
        trust.verify(ca.cert, now=NOW, purpose=Purpose.SIGNING)
    trust.verify(tsa, now=NOW, purpose=Purpose.TIMESTAMPING)
    trust.verify(tls, now=NOW, purpose=Purpose.TLS_CLIENT)
    # Key usage without digitalSignature/nonRepudiation, and a non-critical timeStamping EKU.
    key = make_leaf(ca, MEMBER).key
    base = (x509.CertificateBuilder().subject_name(MEMBER).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(9)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1)))
    encipher_only = base.add_extension(x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False), critical=True).sign(ca.key, hashes.SHA256())
    with pytest.raises(WrongKeyUsage, match="neither digitalSignature"):
        trust.verify(encipher_only, now=NOW, purpose=Purpose.SIGNING)
    soft_tsa = base.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                                  critical=False).sign(ca.key, hashes.SHA256())
    with pytest.raises(WrongKeyUsage, match="non-critical"):
        trust.verify(soft_tsa, now=NOW, purpose=Purpose.TIMESTAMPING)
    # No extensions at all: acceptable for signing (key usage unrestricted).
    trust.verify(base.sign(ca.key, hashes.SHA256()), now=NOW, purpose=Purpose.SIGNING)
    assert ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)


def test_from_files(tmp_path: Path, ca: Issued) -> None:
    other = make_ca("Second")
    write_certificate(tmp_path / "a.crt", ca.cert)
    (tmp_path / "bundle.pem").write_bytes((tmp_path / "a.crt").read_bytes())
    write_certificate(tmp_path / "b.crt", other.cert)
    trust = TrustStore.from_files([tmp_path / "bundle.pem", tmp_path / "b.crt"])
    assert trust.cas == (ca.cert, other.cert)
    trust.verify(make_leaf(other, MEMBER).cert, now=NOW)
    with pytest.raises(KeyUnavailable, match="does not exist"):
        TrustStore.from_files([tmp_path / "missing.crt"])
