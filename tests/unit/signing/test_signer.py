"""Signer (single, batch, auto/off) and verify_message, including the golden signatures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pki_fixtures import Issued, ca_fixture, make_ca, make_leaf, trust_fixture  # noqa: F401

from secserver.config import load_config
from secserver.identifiers import ClientId
from secserver.signing import der
from secserver.signing.cms import verify_detached
from secserver.signing.errors import (
    CertificateExpired,
    DigestMismatch,
    InvalidSignature,
    KeyUnavailable,
    MalformedSignature,
    SignerMismatch,
    UntrustedCertificate,
    VerificationError,
)
from secserver.signing.merkle import InclusionProofError, merkle_root
from secserver.signing.pki import init_dev_pki, member_subject
from secserver.signing.signer import (
    BatchProof,
    SignatureBlob,
    Signer,
    batch_root_document,
    verify_message,
)
from secserver.signing.trust import TrustStore

ASSETS = Path(__file__).parents[2] / "assets" / "signing"
NOW = datetime(2030, 6, 1, tzinfo=UTC)
TOYONO = ClientId("JP-DEV", "GOV", "TOYONO")
ELDERCARE = ClientId("JP-DEV", "GOV", "TOYONO", "ELDERCARE")


@pytest.fixture(scope="module")
def ec_leaf(ca: Issued) -> Issued:
    return make_leaf(ca, member_subject(TOYONO))


@pytest.fixture(scope="module")
def rsa_leaf(ca: Issued) -> Issued:
    return make_leaf(ca, member_subject(TOYONO), key_type="rsa2048")


def docs(n: int) -> list[bytes]:
    return [f"document {i}\n".encode() for i in range(n)]


def test_golden_signatures() -> None:
    trust = TrustStore.from_files([ASSETS / "ca.crt"])
    at = datetime(2026, 1, 15, 9, 31, tzinfo=UTC)
    request = (ASSETS / "request.sdoc").read_bytes()
    response = (ASSETS / "response.sdoc").read_bytes()
    single = verify_message(request, (ASSETS / "request.p7s").read_bytes(), trust, at, ELDERCARE)
    assert single.member == TOYONO and single.batch is None
    assert single.signing_time == datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    for index, (doc, name) in enumerate([(request, "request"), (response, "response")]):
        blob = (ASSETS / f"{name}.batch.sig").read_bytes()
        verified = verify_message(doc, blob, trust, at, ELDERCARE)
        assert verified.batch == BatchProof(index, 2, verified.batch.path if verified.batch
                                            else ())
        # The CMS inside covers the documented batch root document.
        parsed = SignatureBlob.from_bytes(blob)
        root_doc = batch_root_document(merkle_root([request, response]), 2)
        assert verify_detached(parsed.cms, root_doc, trust, at).member == TOYONO
    with pytest.raises((DigestMismatch, InclusionProofError)):
        verify_message(response, (ASSETS / "request.batch.sig").read_bytes(), trust, at)
    with pytest.raises(DigestMismatch):
        verify_message(response, (ASSETS / "request.p7s").read_bytes(), trust, at)


def test_blob_format() -> None:
    cms_der = der.sequence(der.oid("1.2.840.113549.1.7.2"), der.context(0, der.sequence()))
    plain = SignatureBlob(cms_der)
    assert plain.to_bytes() == cms_der and SignatureBlob.from_bytes(cms_der) == plain
    proof = BatchProof(3, 7, (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32))
    batched = SignatureBlob(cms_der, proof)
    assert SignatureBlob.from_bytes(batched.to_bytes()) == batched
    bad_blobs = [
        b"", b"\x04\x00", cms_der + b"\x00",
        der.sequence(der.integer(2), der.integer(0), der.integer(1), der.sequence(), cms_der),
        der.sequence(der.integer(1), der.integer(5), der.integer(5), der.sequence(), cms_der),
        der.sequence(der.integer(1), der.integer(0), der.integer(2),
                     der.sequence(der.octet_string(b"short")), cms_der),
        der.sequence(der.integer(1), der.integer(0), der.integer(1), der.sequence()),
    ]
    for bad in bad_blobs:
        with pytest.raises(MalformedSignature):
            SignatureBlob.from_bytes(bad)


@pytest.mark.parametrize("leaf_name", ["ec_leaf", "rsa_leaf"])
def test_sign_many_and_tampering(leaf_name: str, request: pytest.FixtureRequest,
                                 trust: TrustStore) -> None:
    leaf: Issued = request.getfixturevalue(leaf_name)
    signer = Signer(leaf.key, leaf.cert, clock=lambda: NOW)
    documents = docs(5)
    blobs = signer.sign_many(documents)
    assert signer.batches_signed == 1
    for i, (doc, blob) in enumerate(zip(documents, blobs, strict=True)):
        verified = verify_message(doc, blob, trust, NOW, ELDERCARE)
        assert verified.batch is not None and verified.batch.index == i
        assert verified.batch.size == 5 and verified.member == TOYONO
    with pytest.raises(DigestMismatch):  # another document of the batch, wrong index
        verify_message(documents[1], blobs[0], trust, NOW)
    parsed = SignatureBlob.from_bytes(blobs[2])
    assert parsed.batch is not None
    for proof in (BatchProof(2, 6, parsed.batch.path), BatchProof(3, 5, parsed.batch.path),
                  BatchProof(2, 5, (parsed.batch.path[0][::-1], *parsed.batch.path[1:]))):
        with pytest.raises((DigestMismatch, InclusionProofError)):
            verify_message(documents[2], SignatureBlob(parsed.cms, proof).to_bytes(), trust, NOW)
    single = signer.sign_many([b"alone"])[0]
    assert SignatureBlob.from_bytes(single).batch is None
    assert verify_message(b"alone", single, trust, NOW).batch is None
    # A batch CMS does not verify as a single signature of a document.
    with pytest.raises(DigestMismatch):
        verify_message(documents[2], parsed.cms, trust, NOW)
    with pytest.raises(SignerMismatch):
        verify_message(documents[2], blobs[2], trust, NOW, ClientId("JP-DEV", "COM", "OTTA"))
    flipped = bytearray(blobs[2])
    flipped[-3] ^= 0x01
    with pytest.raises((InvalidSignature, MalformedSignature)):
        verify_message(documents[2], bytes(flipped), trust, NOW)


async def test_ec_signs_inline(ec_leaf: Issued, trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    assert signer.inline
    blobs = await asyncio.gather(*(signer.sign(d) for d in docs(20)))
    assert signer.batches_signed == 0 and signer.signatures_made == 20
    for doc, blob in zip(docs(20), blobs, strict=True):
        assert verify_message(doc, blob, trust, NOW).batch is None
    await signer.close()


async def test_auto_batches_when_queued(rsa_leaf: Issued, trust: TrustStore) -> None:
    signer = Signer(rsa_leaf.key, rsa_leaf.cert, clock=lambda: NOW, max_batch=16)
    assert not signer.inline
    documents = docs(40)
    blobs = await asyncio.gather(*(signer.sign(d) for d in documents))
    # 40 queued requests, at most 16 per batch: 3 signatures, all batches.
    assert signer.signatures_made == 3 and signer.batches_signed == 3
    for doc, blob in zip(documents, blobs, strict=True):
        assert verify_message(doc, blob, trust, NOW, TOYONO).member == TOYONO
    # One request at a time never batches.
    for doc in documents[:3]:
        blob = await signer.sign(doc)
        assert SignatureBlob.from_bytes(blob).batch is None
    await signer.close()


async def test_off_never_batches(rsa_leaf: Issued, trust: TrustStore) -> None:
    signer = Signer(rsa_leaf.key, rsa_leaf.cert, batch="off", clock=lambda: NOW)
    blobs = await asyncio.gather(*(signer.sign(d) for d in docs(6)))
    assert signer.batches_signed == 0 and signer.signatures_made == 6
    assert all(SignatureBlob.from_bytes(b).batch is None for b in blobs)
    await signer.close()


async def test_failure_reaches_every_waiter(ec_leaf: Issued) -> None:
    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    signer = Signer(ec_leaf.key, ec_leaf.cert, inline=False, clock=broken_clock)
    results = await asyncio.gather(*(signer.sign(d) for d in docs(4)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await signer.close()


async def test_cancelled_waiter_does_not_break_batch(rsa_leaf: Issued,
                                                     trust: TrustStore) -> None:
    signer = Signer(rsa_leaf.key, rsa_leaf.cert, clock=lambda: NOW)
    tasks = [asyncio.create_task(signer.sign(d)) for d in docs(8)]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    for i, blob in enumerate(results):
        if i != 3:
            assert isinstance(blob, bytes)
            verify_message(docs(8)[i], blob, trust, NOW)
    await signer.close()


def test_from_config_and_errors(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", passphrase=b"pw")
    (tmp_path / "pass").write_text("pw\n")
    config_file = tmp_path / "node.toml"
    config_file.write_text(
        '[node]\nserver_id = "JP-DEV/GOV/TOYONO/SS1"\n'
        '[signing]\ncert_file = "pki/members/GOV.TOYONO/sign.crt"\n'
        'key_file = "pki/members/GOV.TOYONO/sign.key"\nkey_passphrase_file = "pass"\n'
        'batch = "off"\n')
    signer = Signer.from_config(load_config(config_file))
    assert signer.batch == "off" and signer.member == TOYONO
    trust = TrustStore.from_files([pki.ca_cert])
    now = datetime.now(UTC)
    assert verify_message(b"x", signer.sign_now(b"x"), trust, now + timedelta(seconds=1)).member \
        == TOYONO
    empty = tmp_path / "empty.toml"
    empty.write_text('[node]\nserver_id = "JP-DEV/GOV/TOYONO/SS1"\n')
    with pytest.raises(KeyUnavailable, match=r"\[signing\] cert_file"):
        Signer.from_config(load_config(empty))
    with pytest.raises(KeyUnavailable, match="batch mode"):
        Signer(signer._cms.key, signer.certificate, batch="sometimes")  # type: ignore[arg-type]


def test_batch_reuse_still_checks_time_trust_and_member(ec_leaf: Issued,
                                                        trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    documents = docs(4)
    blobs = signer.sign_many(documents)
    for doc, blob in zip(documents, blobs, strict=True):  # the first fills the cache
        assert verify_message(doc, blob, trust, NOW, TOYONO).member == TOYONO
    with pytest.raises(UntrustedCertificate):
        verify_message(documents[1], blobs[1], TrustStore([make_ca("Stranger").cert]), NOW)
    with pytest.raises(CertificateExpired):
        verify_message(documents[1], blobs[1], trust, datetime(2041, 1, 1, tzinfo=UTC))
    with pytest.raises(SignerMismatch):
        verify_message(documents[1], blobs[1], trust, NOW, ClientId("JP-DEV", "COM", "OTTA"))
    with pytest.raises(DigestMismatch):
        verify_message(documents[2], blobs[1], trust, NOW)


@pytest.fixture(scope="module")
def sample_blobs(ec_leaf: Issued, trust: TrustStore) -> list[bytes]:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    blobs = [signer.sign_now(b"doc"), signer.sign_many([b"doc", b"other"])[0]]
    for blob in blobs:  # verified once, so mutations also meet the path for known layouts
        verify_message(b"doc", blob, trust, NOW, TOYONO)
    return blobs


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutations_fail_cleanly(sample_blobs: list[bytes], trust: TrustStore,
                                data: st.DataObject) -> None:
    """Any corrupted signature blob raises a VerificationError (never another exception);
    when a mutation happens to leave it valid, the signer is still the same member."""
    blob = data.draw(st.sampled_from(sample_blobs))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    pos = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    if kind == "flip":
        mutated = blob[:pos] + bytes([blob[pos] ^ data.draw(st.integers(1, 255))]) + \
            blob[pos + 1:]
    elif kind == "truncate":
        mutated = blob[:pos]
    elif kind == "insert":
        mutated = blob[:pos] + bytes([data.draw(st.integers(0, 255))]) + blob[pos:]
    else:
        mutated = blob[:pos] + blob[pos + 1:]
    try:
        result = verify_message(b"doc", mutated, trust, NOW, TOYONO)
    except VerificationError:
        return
    assert result.member == TOYONO
