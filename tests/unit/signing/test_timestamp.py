"""RFC 3161 requests, responses and token verification against the development TSA code."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from pki_fixtures import Issued, ca_fixture, make_ca, make_leaf, trust_fixture  # noqa: F401
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc3161

from secserver.identifiers import ClientId
from secserver.signing import der
from secserver.signing.cms import ID_SHA256, CmsSigner, attribute
from secserver.signing.errors import (
    CertificateExpired,
    DigestMismatch,
    InvalidSignature,
    TimestampError,
    TimestampRejected,
    UntrustedCertificate,
    VerificationError,
    WrongKeyUsage,
)
from secserver.signing.pki import member_subject, plain_subject
from secserver.signing.timestamp import (
    ID_AA_SIGNING_CERTIFICATE_V2,
    ID_CT_TSTINFO,
    build_request,
    check_token_matches,
    parse_response,
    verify_timestamp,
)
from secserver.signing.trust import TrustStore
from secserver.signing.tsa import DEV_POLICY, DevTsa, SerialStore

NOW = datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
DATA = b"checkpoint 17: root ... head ..."


@pytest.fixture(scope="module")
def tsa_leaf(ca: Issued) -> Issued:
    return make_leaf(ca, plain_subject("JP-DEV", "Test TSA"), "tsa",
                     not_after=datetime(2031, 1, 1, tzinfo=UTC))


@pytest.fixture
def tsa(tsa_leaf: Issued, tmp_path: Path) -> DevTsa:
    return DevTsa(tsa_leaf.key, tsa_leaf.cert, SerialStore(tmp_path / "serial"))


def stamp(tsa: DevTsa, data: bytes = DATA, nonce: int = 12345, *, cert_req: bool = True) -> bytes:
    return parse_response(tsa.respond(build_request(data, nonce, cert_req=cert_req), NOW))


def test_request_structure() -> None:
    request, rest = decoder.decode(build_request(DATA, 99, policy="1.2.3.4"),
                                   asn1Spec=rfc3161.TimeStampReq())
    assert rest == b"" and int(request["version"]) == 1
    assert str(request["messageImprint"]["hashAlgorithm"]["algorithm"]) == ID_SHA256
    assert bytes(request["messageImprint"]["hashedMessage"]) == hashlib.sha256(DATA).digest()
    assert int(request["nonce"]) == 99 and bool(request["certReq"])
    assert str(request["reqPolicy"]) == "1.2.3.4"


def test_token_verifies(tsa: DevTsa, trust: TrustStore, tsa_leaf: Issued) -> None:
    token = stamp(tsa)
    info = verify_timestamp(token, DATA, trust, NOW, 12345, policy=DEV_POLICY)
    assert info.time == NOW and info.serial == 1 and info.policy == DEV_POLICY
    assert info.nonce == 12345 and info.tsa == tsa_leaf.cert
    check_token_matches(token, DATA, 12345)
    assert verify_timestamp(stamp(tsa), DATA, trust, NOW).serial == 2


def test_token_failures(tsa: DevTsa, trust: TrustStore) -> None:
    token = stamp(tsa)
    with pytest.raises(TimestampError, match="imprint does not match"):
        verify_timestamp(token, DATA + b"!", trust, NOW)
    with pytest.raises(TimestampError, match="nonce"):
        verify_timestamp(token, DATA, trust, NOW, 54321)
    with pytest.raises(TimestampError, match="nonce"):
        check_token_matches(token, DATA, 54321)
    with pytest.raises(TimestampError, match="policy"):
        verify_timestamp(token, DATA, trust, NOW, policy="1.2.3")
    with pytest.raises(UntrustedCertificate, match="timestamp token"):
        verify_timestamp(token, DATA, TrustStore([make_ca("Other").cert]), NOW)
    with pytest.raises(CertificateExpired):
        verify_timestamp(token, DATA, trust, datetime(2032, 1, 1, tzinfo=UTC))
    # Change the serial number inside the TSTInfo: the signed digest no longer matches.
    tampered = token.replace(b"\x02\x01\x01\x18", b"\x02\x01\x07\x18", 1)
    assert tampered != token
    with pytest.raises(DigestMismatch):
        verify_timestamp(tampered, DATA, trust, NOW)
    flipped = token[:-3] + bytes([token[-3] ^ 1]) + token[-2:]
    with pytest.raises((InvalidSignature, TimestampError)):
        verify_timestamp(flipped, DATA, trust, NOW)
    for junk in (b"", b"\x30\x00", token[:-5]):
        with pytest.raises(TimestampError):
            verify_timestamp(junk, DATA, trust, NOW)
    without_cert = stamp(tsa, cert_req=False)
    with pytest.raises(TimestampError, match="carries no TSA certificate"):
        verify_timestamp(without_cert, DATA, trust, NOW)


def _tst_info(data: bytes, serial: int = 1) -> bytes:
    imprint = der.sequence(der.sequence(der.oid(ID_SHA256)),
                           der.octet_string(hashlib.sha256(data).digest()))
    return der.sequence(der.integer(1), der.oid(DEV_POLICY), imprint, der.integer(serial),
                        der.generalized_time(NOW), der.integer(12345))


def _ess(cert_der: bytes) -> bytes:
    return attribute(ID_AA_SIGNING_CERTIFICATE_V2, der.sequence(der.sequence(der.sequence(
        der.octet_string(hashlib.sha256(cert_der).digest())))))


def test_forged_tokens(ca: Issued, trust: TrustStore, tsa_leaf: Issued) -> None:
    tsa_der = tsa_leaf.cert.public_bytes(serialization.Encoding.DER)
    signer = CmsSigner(tsa_leaf.key, tsa_leaf.cert)
    no_ess = signer.sign(_tst_info(DATA), signing_time=NOW, detached=False,
                         content_type=ID_CT_TSTINFO)
    with pytest.raises(TimestampError, match="ESS"):
        verify_timestamp(no_ess, DATA, trust, NOW)
    other = make_leaf(ca, plain_subject("JP-DEV", "Other TSA"), "tsa")
    wrong_ess = signer.sign(_tst_info(DATA), signing_time=NOW, detached=False,
                            content_type=ID_CT_TSTINFO,
                            extra_attributes=[_ess(other.cert.public_bytes(
                                serialization.Encoding.DER))])
    with pytest.raises(TimestampError, match="names another certificate"):
        verify_timestamp(wrong_ess, DATA, trust, NOW)
    good = signer.sign(_tst_info(DATA), signing_time=NOW, detached=False,
                       content_type=ID_CT_TSTINFO, extra_attributes=[_ess(tsa_der)])
    assert verify_timestamp(good, DATA, trust, NOW).serial == 1
    # A member signing key cannot issue timestamps.
    member = make_leaf(ca, member_subject(ClientId("JP-DEV", "GOV", "TOYONO")))
    member_der = member.cert.public_bytes(serialization.Encoding.DER)
    by_member = CmsSigner(member.key, member.cert).sign(
        _tst_info(DATA), signing_time=NOW, detached=False, content_type=ID_CT_TSTINFO,
        extra_attributes=[_ess(member_der)])
    with pytest.raises(WrongKeyUsage):
        verify_timestamp(by_member, DATA, trust, NOW)
    with pytest.raises(WrongKeyUsage):
        DevTsa(member.key, member.cert, SerialStore(Path("/nonexistent/serial")))
    # A plain CMS signature is not a timestamp token.
    with pytest.raises(TimestampError, match="id-ct-TSTInfo"):
        verify_timestamp(signer.sign(DATA, signing_time=NOW, detached=False), DATA, trust, NOW)


@pytest.mark.parametrize(("request_der", "failure"), [
    (b"garbage", "badDataFormat"),
    (der.sequence(der.integer(1), der.sequence(der.sequence(der.oid("1.3.14.3.2.26")),
                                               der.octet_string(b"\x00" * 20))), "badAlg"),
    (der.sequence(der.integer(1), der.sequence(der.sequence(der.oid(ID_SHA256)),
                                               der.octet_string(b"\x00" * 20))),
     "badDataFormat"),
    (der.sequence(der.integer(2), der.sequence(der.sequence(der.oid(ID_SHA256)),
                                               der.octet_string(b"\x00" * 32))), "badRequest"),
    (build_request(DATA, 1, policy="1.2.3.4"), "unacceptedPolicy"),
])
def test_rejections(tsa: DevTsa, request_der: bytes, failure: str) -> None:
    with pytest.raises(TimestampRejected, match=failure):
        parse_response(tsa.respond(request_der, NOW))


def test_parse_response_errors() -> None:
    with pytest.raises(TimestampError, match="not a TimeStampResp"):
        parse_response(b"\x30\x03\x02\x01\x00")
    with pytest.raises(TimestampError, match="no token"):
        parse_response(der.sequence(der.sequence(der.integer(0))))
    with pytest.raises(TimestampRejected, match="waiting"):
        parse_response(der.sequence(der.sequence(der.integer(3))))


@pytest.fixture(scope="module")
def sample_token(tsa_leaf: Issued, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    store = SerialStore(tmp_path_factory.mktemp("serial") / "serial")
    return parse_response(DevTsa(tsa_leaf.key, tsa_leaf.cert, store).respond(
        build_request(DATA, 12345), NOW))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_tokens_fail_cleanly(sample_token: bytes, trust: TrustStore,
                                     data: st.DataObject) -> None:
    """A corrupted token raises a VerificationError (never another exception)."""
    pos = data.draw(st.integers(min_value=0, max_value=len(sample_token) - 1))
    kind = data.draw(st.sampled_from(["flip", "truncate", "delete"]))
    if kind == "flip":
        token = sample_token[:pos] + bytes([sample_token[pos] ^ data.draw(
            st.integers(1, 255))]) + sample_token[pos + 1:]
    elif kind == "truncate":
        token = sample_token[:pos]
    else:
        token = sample_token[:pos] + sample_token[pos + 1:]
    try:
        info = verify_timestamp(token, DATA, trust, NOW, 12345)
    except VerificationError:
        return
    assert info.nonce == 12345
