"""CMS SignedData: structure (checked with pyasn1-modules), algorithms, every failure."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pki_fixtures import Issued, ca_fixture, make_ca, make_leaf, trust_fixture  # noqa: F401
from pyasn1.codec.der import decoder, encoder
from pyasn1_modules import rfc5652

from secserver.identifiers import ClientId, ServerId
from secserver.signing import cms, der
from secserver.signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    DigestMismatch,
    InvalidSignature,
    KeyUnavailable,
    MalformedSignature,
    SignerMismatch,
    UntrustedCertificate,
    WrongKeyUsage,
)
from secserver.signing.pki import KeyType, member_subject, server_subject
from secserver.signing.trust import Purpose, TrustStore

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
TOYONO = ClientId("JP-DEV", "GOV", "TOYONO")
OTTA = ClientId("JP-DEV", "COM", "OTTA")
ELDERCARE = ClientId("JP-DEV", "GOV", "TOYONO", "ELDERCARE")
DOC = b"secserver-signed-document: 1\nmessage-id: x\n"


@pytest.fixture(scope="module", params=["ec", "rsa", "rsa-pss"])
def signer(request: pytest.FixtureRequest, ca: Issued) -> cms.CmsSigner:
    key_type: KeyType = "ec-p256" if request.param == "ec" else "rsa2048"
    leaf = make_leaf(ca, member_subject(TOYONO), key_type=key_type)
    return cms.CmsSigner(leaf.key, leaf.cert,
                         rsa_padding="pss" if request.param == "rsa-pss" else "pkcs1v15")


def test_structure_with_pyasn1(signer: cms.CmsSigner) -> None:
    signature = signer.sign(DOC, signing_time=NOW)
    info, rest = decoder.decode(signature, asn1Spec=rfc5652.ContentInfo())
    assert rest == b"" and encoder.encode(info) == signature  # canonical DER
    assert info["contentType"] == rfc5652.id_signedData
    signed, _ = decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
    assert int(signed["version"]) == 1
    assert signed["encapContentInfo"]["eContentType"] == rfc5652.id_data
    assert not signed["encapContentInfo"]["eContent"].isValue  # detached
    certs = signed["certificates"]
    assert len(certs) == 1 and encoder.encode(certs[0]["certificate"]) == \
        signer.certificate.public_bytes(serialization.Encoding.DER)
    (signer_info,) = signed["signerInfos"]
    assert int(signer_info["version"]) == 1
    assert int(signer_info["sid"]["issuerAndSerialNumber"]["serialNumber"]) == \
        signer.certificate.serial_number
    attrs = {str(a["attrType"]): a["attrValues"] for a in signer_info["signedAttrs"]}
    assert set(attrs) == {cms.ID_CONTENT_TYPE, cms.ID_SIGNING_TIME, cms.ID_MESSAGE_DIGEST}
    alg = str(signer_info["signatureAlgorithm"]["algorithm"])
    expected = {"pkcs1v15": cms.ID_RSA_ENCRYPTION, "pss": cms.ID_RSASSA_PSS}[
        signer.rsa_padding] if alg != cms.ID_ECDSA_SHA256 else cms.ID_ECDSA_SHA256
    assert alg == expected


def test_round_trip(signer: cms.CmsSigner, trust: TrustStore) -> None:
    signature = signer.sign(DOC, signing_time=NOW)
    result = cms.verify_detached(signature, DOC, trust, NOW,
                                 expected_member=ClientId("JP-DEV", "GOV", "TOYONO", "ELDERCARE"))
    assert result.member == TOYONO
    assert result.signing_time == NOW
    assert result.certificate == signer.certificate
    assert cms.verify_detached(signature, DOC, trust, NOW).member == TOYONO


def test_tampering(signer: cms.CmsSigner, trust: TrustStore) -> None:
    signature = signer.sign(DOC, signing_time=NOW)
    with pytest.raises(DigestMismatch):
        cms.verify_detached(signature, DOC + b"x", trust, NOW)
    # Flip one bit in the signature value (the last bytes of the DER).
    flipped = signature[:-3] + bytes([signature[-3] ^ 0x01]) + signature[-2:]
    with pytest.raises((InvalidSignature, MalformedSignature)):
        cms.verify_detached(flipped, DOC, trust, NOW)
    # Change the signing time inside the signed attributes: the signature breaks.
    stamp = b"300601120000Z"
    assert signature.count(stamp) == 1
    with pytest.raises(InvalidSignature):
        cms.verify_detached(signature.replace(stamp, b"300601120001Z"), DOC, trust, NOW)
    # Swap the certificate for another one of the same member: signature check fails.
    cert_der = signer.certificate.public_bytes(serialization.Encoding.DER)
    other = make_leaf(make_ca(), member_subject(TOYONO)).cert
    other_der = other.public_bytes(serialization.Encoding.DER)
    if len(other_der) == len(cert_der):
        with pytest.raises((InvalidSignature, MalformedSignature)):
            cms.verify_detached(signature.replace(cert_der, other_der), DOC, trust, NOW)
    # Corrupt a byte inside the certificate's TBS: parse fails or the chain breaks.
    pos = signature.index(cert_der) + 200
    broken = signature[:pos] + bytes([signature[pos] ^ 0x40]) + signature[pos + 1:]
    with pytest.raises((UntrustedCertificate, MalformedSignature, InvalidSignature)):
        cms.verify_detached(broken, DOC, trust, NOW)


def test_truncated_and_garbage(signer: cms.CmsSigner, trust: TrustStore) -> None:
    signature = signer.sign(DOC, signing_time=NOW)
    for bad in (b"", b"\x30\x00", signature[:-1], signature + b"\x00", b"hello"):
        with pytest.raises(MalformedSignature):
            cms.verify_detached(bad, DOC, trust, NOW)
    encapsulated = signer.sign(DOC, signing_time=NOW, detached=False)
    with pytest.raises(MalformedSignature, match="encapsulates"):
        cms.verify_detached(encapsulated, DOC, trust, NOW)
    result, content = cms.verify_encapsulated(encapsulated, trust, NOW,
                                              content_type=cms.ID_DATA)
    assert content == DOC and result.member == TOYONO
    no_certs = signer.sign(DOC, signing_time=NOW, certificates=False)
    with pytest.raises(MalformedSignature, match="not included"):
        cms.verify_detached(no_certs, DOC, trust, NOW)


def test_member_binding(ca: Issued, trust: TrustStore) -> None:
    leaf = make_leaf(ca, member_subject(TOYONO))
    signature = cms.sign_detached(DOC, leaf.key, leaf.cert, signing_time=NOW)
    with pytest.raises(SignerMismatch, match="claims member JP-DEV/COM/OTTA"):
        cms.verify_detached(signature, DOC, trust, NOW, expected_member=OTTA)
    log = make_leaf(ca, server_subject(ServerId(TOYONO, "SS1"), role="log"), "log")
    log_sig = cms.sign_detached(DOC, log.key, log.cert, signing_time=NOW)
    assert cms.verify_detached(log_sig, DOC, trust, NOW).member is None
    with pytest.raises(SignerMismatch):
        cms.verify_detached(log_sig, DOC, trust, NOW, expected_member=TOYONO)


def test_certificate_checks(ca: Issued, trust: TrustStore) -> None:
    old = make_leaf(ca, member_subject(TOYONO), not_after=NOW - timedelta(seconds=1))
    with pytest.raises(CertificateExpired):
        cms.verify_detached(cms.sign_detached(DOC, old.key, old.cert, signing_time=NOW), DOC,
                            trust, NOW)
    young = make_leaf(ca, member_subject(TOYONO), not_before=NOW + timedelta(seconds=1))
    with pytest.raises(CertificateNotYetValid):
        cms.verify_detached(cms.sign_detached(DOC, young.key, young.cert, signing_time=NOW),
                            DOC, trust, NOW)
    tls = make_leaf(ca, member_subject(TOYONO), "tls")
    with pytest.raises(WrongKeyUsage):
        cms.verify_detached(cms.sign_detached(DOC, tls.key, tls.cert, signing_time=NOW), DOC,
                            trust, NOW)
    stranger = make_leaf(make_ca("Elsewhere"), member_subject(TOYONO))
    with pytest.raises(UntrustedCertificate):
        cms.verify_detached(cms.sign_detached(DOC, stranger.key, stranger.cert,
                                              signing_time=NOW), DOC, trust, NOW)


def test_key_must_match_certificate(ca: Issued) -> None:
    a, b = make_leaf(ca, member_subject(TOYONO)), make_leaf(ca, member_subject(TOYONO))
    with pytest.raises(KeyUnavailable, match="does not belong"):
        cms.CmsSigner(a.key, b.cert)


def test_signing_time_forms(ca: Issued, trust: TrustStore) -> None:
    leaf = make_leaf(ca, member_subject(TOYONO), not_after=datetime(2060, 1, 1, tzinfo=UTC))
    late = datetime(2051, 3, 4, 5, 6, 7, tzinfo=UTC)
    signature = cms.sign_detached(DOC, leaf.key, leaf.cert, signing_time=late)
    assert b"\x18\x0f20510304050607Z" in signature  # GeneralizedTime after 2049
    assert cms.verify_detached(signature, DOC, trust, NOW).signing_time == late


def test_fast_parser_agrees_with_general_parser(signer: cms.CmsSigner) -> None:
    for i in range(20):
        signature = signer.sign(DOC + bytes([i]), signing_time=NOW + timedelta(seconds=i))
        fast = cms._parse_common(signature)
        is_pss = signer.rsa_padding == "pss" and isinstance(signer.key, rsa.RSAPrivateKey)
        assert (fast is None) == is_pss
        assert fast is None or fast == cms._parse(signature)
    # Anything unusual takes the general path.
    assert cms._parse_common(signer.sign(DOC, signing_time=NOW, detached=False)) is None
    assert cms._parse_common(signer.sign(DOC, signing_time=NOW, extra_attributes=[
        cms.attribute("1.2.3.4", der.null())])) is None


def test_fast_signing_equals_general_assembly(signer: cms.CmsSigner, trust: TrustStore) -> None:
    for when in (NOW, NOW + timedelta(microseconds=999999), datetime(2051, 1, 1, tzinfo=UTC)):
        for content in (b"", DOC, DOC * 100):
            signature = signer.sign_detached_data(content, when)
            parsed = cms.parse_signed_data(signature)
            attrs = signer.signed_attributes(content, when)
            assert signature == signer.assemble(attrs, parsed.signature)
            if when.year < 2040:
                assert cms.verify_detached(signature, content, trust, NOW).signing_time == \
                    when.replace(microsecond=0)


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa2048"])
def test_known_layout_runs_every_check(key_type: KeyType, ca: Issued, trust: TrustStore) -> None:
    """After one signature of a signer verified, the next ones take the template path,
    which gives what the general path gives and still finds every failure."""
    leaf = make_leaf(ca, member_subject(TOYONO), key_type=key_type,
                     not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1))
    signer = cms.CmsSigner(leaf.key, leaf.cert)
    # ECDSA signatures vary in length by a byte or two, and the shorter ones are rare: start
    # from the most common length so that more signatures of it come quickly
    samples = [signer.sign(DOC, signing_time=NOW) for _ in range(16)]
    lengths = Counter(len(sample) for sample in samples)
    first = next(s for s in samples if len(s) == lengths.most_common(1)[0][0])
    assert cms._verify_known(first, DOC, trust, NOW, Purpose.SIGNING) is None  # not seen yet
    cms.verify_detached(first, DOC, trust, NOW)

    def sign(content: bytes, when: datetime) -> bytes:
        """A signature as long as the first (ECDSA values vary by a byte or two, and each
        length has its own template)."""
        for _attempt in range(100):
            signature = signer.sign(content, signing_time=when)
            if len(signature) == len(first):
                return signature
        raise AssertionError("no signature of the first one's length")

    for i in range(5):
        content, when = DOC + bytes([i]), NOW + timedelta(seconds=i)
        signature = sign(content, when)
        fast = cms._verify_known(signature, content, trust, NOW, Purpose.SIGNING)
        assert fast is not None
        assert fast == cms._verify_parsed(cms._parse(signature), content, trust, NOW,
                                           Purpose.SIGNING)
        assert cms.verify_detached(signature, content, trust, NOW, expected_member=ELDERCARE) \
            == cms.VerifiedSignature(TOYONO, leaf.cert, when)

    signature = sign(DOC, NOW)

    def known(sig: bytes, content: bytes = DOC, at: datetime = NOW,
              store: TrustStore = trust, purpose: Purpose = Purpose.SIGNING) -> None:
        assert cms._verify_known(sig, content, store, at, purpose) is not None

    known(signature)
    with pytest.raises(DigestMismatch):
        known(signature, DOC + b"x")
    for pos in (len(signature) - 1, len(signature) - 20):
        with pytest.raises(InvalidSignature):
            known(signature[:pos] + bytes([signature[pos] ^ 0x01]) + signature[pos + 1:])
    stamp = b"300601120000Z"
    assert signature.count(stamp) == 1
    with pytest.raises(InvalidSignature):  # another valid signing time: signature breaks
        known(signature.replace(stamp, b"300601120001Z"))
    for bad in (b"301301120000Z", b"30060112000xZ", b"3006011200000"):
        with pytest.raises(MalformedSignature):
            known(signature.replace(stamp, bad))
    with pytest.raises(CertificateExpired):
        known(signature, at=NOW + timedelta(days=2))
    with pytest.raises(CertificateNotYetValid):
        known(signature, at=NOW - timedelta(days=2))
    with pytest.raises(UntrustedCertificate):
        known(signature, store=TrustStore([make_ca("Elsewhere").cert]))
    with pytest.raises(WrongKeyUsage):
        known(signature, purpose=Purpose.TIMESTAMPING)
    with pytest.raises(SignerMismatch):
        cms.verify_detached(signature, DOC, trust, NOW, expected_member=OTTA)
    known(signature)  # and it still verifies after all that


def test_known_layout_checks_every_certificate_of_the_path() -> None:
    """The cached path validation holds only while every certificate of the path is valid:
    here the intermediate CA expires long before the signer certificate."""
    root = make_ca("Root", path_length=1)
    inter = make_ca("Intermediate", issuer=root, not_after=NOW + timedelta(days=1))
    leaf = make_leaf(inter, member_subject(TOYONO))
    store = TrustStore([root.cert])
    signer = cms.CmsSigner(leaf.key, leaf.cert, chain=[inter.cert])
    signature = signer.sign(DOC, signing_time=NOW)
    assert cms.verify_detached(signature, DOC, store, NOW).member == TOYONO
    # a new message, as long as the first (each length of ECDSA value has its own template)
    again = next(sig for sig in (signer.sign(DOC, signing_time=NOW + timedelta(seconds=1))
                                 for _ in range(100)) if len(sig) == len(signature))
    assert cms._verify_known(again, DOC, store, NOW, Purpose.SIGNING) is not None
    with pytest.raises(CertificateExpired, match="CA certificate"):
        cms._verify_known(again, DOC, store, NOW + timedelta(days=2), Purpose.SIGNING)
    with pytest.raises(UntrustedCertificate):  # the intermediate alone is not a trust anchor
        cms._verify_known(again, DOC, TrustStore([make_ca("Root").cert]), NOW, Purpose.SIGNING)


def test_failed_signatures_leave_no_template(ca: Issued, trust: TrustStore) -> None:
    stranger = make_leaf(make_ca("Elsewhere"), member_subject(TOYONO))
    signature = cms.sign_detached(DOC, stranger.key, stranger.cert, signing_time=NOW)
    with pytest.raises(UntrustedCertificate):
        cms.verify_detached(signature, DOC, trust, NOW)
    leaf = make_leaf(ca, member_subject(TOYONO))
    other = cms.sign_detached(DOC, leaf.key, leaf.cert, signing_time=NOW)
    with pytest.raises(DigestMismatch):
        cms.verify_detached(other, DOC + b"x", trust, NOW)
    for sig in (signature, other):
        assert cms._templates.get(sig[:cms._TEMPLATE_KEY]) is None
        assert cms._verify_known(sig, DOC, trust, NOW, Purpose.SIGNING) is None
    cms.verify_detached(other, DOC, trust, NOW)
    assert cms._verify_known(other, DOC, trust, NOW, Purpose.SIGNING) is not None
