"""Signer (single, batch, auto/off) and verify_message, including the golden signatures."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from pki_fixtures import Issued, ca_fixture, make_ca, make_leaf, trust_fixture  # noqa: F401

from secserver.config import load_config
from secserver.identifiers import ClientId
from secserver.signing import cms, der
from secserver.signing import signer as signer_module
from secserver.signing.cms import verify_detached
from secserver.signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    DigestMismatch,
    InvalidSignature,
    KeyUnavailable,
    MalformedSignature,
    SignerMismatch,
    UntrustedCertificate,
    VerificationError,
)
from secserver.signing.merkle import InclusionProofError, merkle_root, root_from_path
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


def openssl_verifies(ca: Issued, signature: bytes, content: bytes, tmp: Path) -> bool:
    """``openssl cms -verify`` of a detached DER signature (the docs/protocol.md check)."""
    (tmp / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "sig.der").write_bytes(signature)
    (tmp / "content").write_bytes(content)
    result = subprocess.run(["openssl", "cms", "-verify", "-binary", "-content", tmp / "content",
                             "-inform", "DER", "-in", tmp / "sig.der", "-CAfile", tmp / "ca.pem",
                             "-out", "/dev/null"], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="openssl is not installed")


@needs_openssl
async def test_ec_batches_one_loop_iteration(ec_leaf: Issued, ca: Issued, trust: TrustStore,
                                            tmp_path: Path) -> None:
    """Concurrent ``sign()`` calls of one loop iteration share one signature (a batch)."""
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    assert signer.inline and signer.batch == "auto"
    documents = docs(20)
    blobs = await asyncio.gather(*(signer.sign(d) for d in documents))
    assert signer.batches_signed == 1 and signer.signatures_made == 1
    assert signer.documents_signed == 20
    parsed = [SignatureBlob.from_bytes(b) for b in blobs]
    assert len({p.cms for p in parsed}) == 1
    for i, (doc, blob, sig) in enumerate(zip(documents, blobs, parsed, strict=True)):
        verified = verify_message(doc, blob, trust, NOW, ELDERCARE)
        assert verified.member == TOYONO and verified.batch == sig.batch
        assert sig.batch is not None and (sig.batch.index, sig.batch.size) == (i, 20)
    # The hand procedure of docs/protocol.md: the root from the audit path, then openssl.
    sig = parsed[7]
    assert sig.batch is not None
    root = root_from_path(documents[7], sig.batch.index, sig.batch.size, sig.batch.path)
    assert root == merkle_root(documents)
    assert openssl_verifies(ca, sig.cms, batch_root_document(root, 20), tmp_path)
    assert not openssl_verifies(ca, sig.cms, batch_root_document(root, 19), tmp_path)
    assert not openssl_verifies(ca, sig.cms, documents[7], tmp_path)
    await signer.close()


@needs_openssl
async def test_ec_alone_is_a_single_signature(ec_leaf: Issued, ca: Issued, trust: TrustStore,
                                             tmp_path: Path) -> None:
    """One call at a time (concurrency 1): a plain detached CMS, exactly as before."""
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    for doc in docs(3):
        blob = await signer.sign(doc)
        assert blob[4] == der.OID  # a ContentInfo (its OID first), not a batch SEQUENCE
        assert SignatureBlob.from_bytes(blob) == SignatureBlob(blob)
        assert verify_message(doc, blob, trust, NOW, TOYONO).batch is None
        assert verify_detached(blob, doc, trust, NOW).member == TOYONO
        assert openssl_verifies(ca, blob, doc, tmp_path)
        assert len(blob) - len(signer.sign_now(doc)) in range(-2, 3)  # same layout; ECDSA
        # values vary in length by a byte or two
    assert signer.batches_signed == 0 and signer.signatures_made == 6
    await signer.close()


async def test_ec_batches_follow_loop_iterations(ec_leaf: Issued, trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW, max_batch=16)
    first = await asyncio.gather(*(signer.sign(d) for d in docs(3)))
    second = await asyncio.gather(*(signer.sign(d) for d in docs(2)))
    assert signer.batches_signed == 2 and signer.signatures_made == 2
    sizes = [SignatureBlob.from_bytes(b).batch for b in (first[0], second[0])]
    assert [s.size if s else 0 for s in sizes] == [3, 2]
    # 40 in one iteration, at most 16 per batch: 16 + 16 + 8, all in the same drain.
    documents = docs(40)
    blobs = await asyncio.gather(*(signer.sign(d) for d in documents))
    assert signer.batches_signed == 5 and signer.signatures_made == 5
    for doc, blob in zip(documents, blobs, strict=True):
        verified = verify_message(doc, blob, trust, NOW, TOYONO)
        assert verified.batch is not None and verified.batch.size in (16, 8)
    # A handler that signs twice in a row waits for each drain in turn.
    await signer.sign(b"a")
    await signer.sign(b"b")
    assert signer.signatures_made == 7 and signer.batches_signed == 5
    assert signer.documents_signed == 3 + 2 + 40 + 2
    await signer.close()


async def test_ec_off_signs_each_document(ec_leaf: Issued, trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, batch="off", clock=lambda: NOW)
    blobs = await asyncio.gather(*(signer.sign(d) for d in docs(6)))
    assert signer.batches_signed == 0 and signer.signatures_made == 6
    for doc, blob in zip(docs(6), blobs, strict=True):
        assert verify_message(doc, blob, trust, NOW).batch is None
    await signer.close()


async def test_ec_failure_reaches_every_waiter(ec_leaf: Issued, trust: TrustStore) -> None:
    broken = [True]

    def clock() -> datetime:
        if broken[0]:
            raise RuntimeError("clock broke")
        return NOW

    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=clock, max_batch=3)
    results = await asyncio.gather(*(signer.sign(d) for d in docs(7)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "clock broke" for r in results)
    broken[0] = False  # the signer recovers: nothing is left queued or scheduled
    blobs = await asyncio.gather(*(signer.sign(d) for d in docs(2)))
    for doc, blob in zip(docs(2), blobs, strict=True):
        verify_message(doc, blob, trust, NOW, TOYONO)
    assert signer.signatures_made == 1 and signer.documents_signed == 2  # failures: none
    await signer.close()


async def test_ec_cancelled_waiters_do_not_break_the_batch(ec_leaf: Issued,
                                                           trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    documents = docs(8)
    tasks = [asyncio.create_task(signer.sign(d)) for d in documents]
    await asyncio.sleep(0)  # every task has queued its document; the drain comes next
    tasks[3].cancel()
    tasks[6].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert isinstance(results[6], asyncio.CancelledError)
    assert signer.signatures_made == 1 and signer.batches_signed == 1
    for i, blob in enumerate(results):
        if i not in (3, 6):
            assert isinstance(blob, bytes)
            verified = verify_message(documents[i], blob, trust, NOW, TOYONO)
            assert verified.batch is not None and verified.batch.size == 6
    # All waiters gone: the drain signs nothing.
    tasks = [asyncio.create_task(signer.sign(d)) for d in documents[:2]]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert signer.signatures_made == 1 and not signer._queue and signer._tick is None
    assert signer.documents_signed == 6
    await signer.close()


async def test_ec_close_finishes_queued_work(ec_leaf: Issued, trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    documents = docs(5)
    tasks = [asyncio.create_task(signer.sign(d)) for d in documents]
    await asyncio.sleep(0)
    assert len(signer._queue) == 5 and signer._tick is not None  # queued, drain pending
    await signer.close()
    # signed by close() itself, before the loop ran the drain
    assert signer._tick is None and not signer._queue and signer.batches_signed == 1
    for doc, blob in zip(documents, await asyncio.gather(*tasks), strict=True):
        verify_message(doc, blob, trust, NOW, TOYONO)
    assert signer.signatures_made == 1


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


def _cache_key(documents: list[bytes], blob: bytes) -> tuple[bytes, bytes]:
    """The verified-batch cache key of a batch blob: its CMS and the batch root document."""
    return (SignatureBlob.from_bytes(blob).cms,
            batch_root_document(merkle_root(documents), len(documents)))


def test_batch_cache_hit_checks_each_message(ca: Issued, trust: TrustStore) -> None:
    """After the first message of a batch, the others cost no parsing and no signature
    check, but each is still checked for its own audit path, claimed member and time."""
    leaf = make_leaf(ca, member_subject(TOYONO), not_before=NOW - timedelta(days=1),
                     not_after=NOW + timedelta(days=1))
    signer = Signer(leaf.key, leaf.cert, clock=lambda: NOW)
    documents = docs(6)
    blobs = signer.sign_many(documents)
    assert verify_message(documents[0], blobs[0], trust, NOW, TOYONO).member == TOYONO
    assert _cache_key(documents, blobs[0]) in cms._verified_cache
    # Hits parse no certificate again (the parsed-certificate caches stay empty).
    cms._cert_cache.clear()
    cms._signer_cache.clear()
    for i in range(1, 6):
        verified = verify_message(documents[i], blobs[i], trust, NOW, ELDERCARE)
        assert verified.member == TOYONO and verified.batch is not None
        assert verified.batch.index == i and verified.signing_time == NOW
    assert not cms._cert_cache and not cms._signer_cache
    # The claimed member differs per message: a hit claiming another member fails...
    for other in (ClientId("JP-DEV", "COM", "OTTA"), ClientId("JP-DEV", "COM", "OTTA", "X"),
                  ClientId("JP-DEV", "GOV", "TOYONO2")):
        with pytest.raises(SignerMismatch):
            verify_message(documents[2], blobs[2], trust, NOW, other)
    # ... and time is checked at each message's ``now``: expired, not yet valid.
    with pytest.raises(CertificateExpired):
        verify_message(documents[3], blobs[3], trust, NOW + timedelta(days=2), TOYONO)
    with pytest.raises(CertificateNotYetValid):
        verify_message(documents[3], blobs[3], trust, NOW - timedelta(days=2), TOYONO)
    with pytest.raises(UntrustedCertificate):
        verify_message(documents[3], blobs[3], TrustStore([make_ca("Stranger").cert]), NOW)
    # A tampered document, or another document of the batch, misses the cached root.
    for doc, blob in ((documents[4] + b" ", blobs[4]), (documents[4][:-1], blobs[4]),
                      (documents[5], blobs[4]), (b"", blobs[4])):
        with pytest.raises((DigestMismatch, InclusionProofError)):
            verify_message(doc, blob, trust, NOW, TOYONO)
    parsed = SignatureBlob.from_bytes(blobs[4])
    assert parsed.batch is not None
    path = parsed.batch.path
    for proof in (BatchProof(5, 6, path), BatchProof(4, 7, path), BatchProof(4, 5, path),
                  BatchProof(4, 6, (bytes(32), *path[1:])), BatchProof(4, 6, path[:-1])):
        with pytest.raises((DigestMismatch, InclusionProofError)):
            verify_message(documents[4], SignatureBlob(parsed.cms, proof).to_bytes(), trust,
                           NOW, TOYONO)
    # Failures leave the cache sound: the genuine messages still verify.
    for doc, blob in zip(documents, blobs, strict=True):
        assert verify_message(doc, blob, trust, NOW, TOYONO).member == TOYONO


def test_batch_cache_first_failure_is_not_remembered(ec_leaf: Issued,
                                                     trust: TrustStore) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    documents = docs(3)
    blobs = signer.sign_many(documents)
    with pytest.raises(CertificateExpired):  # the first sight fails: nothing is kept
        verify_message(documents[0], blobs[0], trust, datetime(2041, 1, 1, tzinfo=UTC))
    assert _cache_key(documents, blobs[0]) not in cms._verified_cache
    flipped = bytearray(blobs[1])
    flipped[-3] ^= 0x01  # in the ECDSA signature value
    with pytest.raises((InvalidSignature, MalformedSignature)):
        verify_message(documents[1], bytes(flipped), trust, NOW)
    assert (bytes(SignatureBlob.from_bytes(bytes(flipped)).cms),
            _cache_key(documents, blobs[1])[1]) not in cms._verified_cache
    with pytest.raises(SignerMismatch):  # the binding fails, the signature is still good
        verify_message(documents[1], blobs[1], trust, NOW, ClientId("JP-DEV", "COM", "OTTA"))
    assert verify_message(documents[2], blobs[2], trust, NOW, TOYONO).member == TOYONO


def test_batch_cache_is_bounded_lru(ec_leaf: Issued, trust: TrustStore,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cms, "_VERIFIED_CACHE_SIZE", 3)
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    batches = [[f"batch {b} doc {i}".encode() for i in range(2)] for b in range(4)]
    signed = [signer.sign_many(batch) for batch in batches]
    for batch, blobs in zip(batches[:3], signed[:3], strict=True):
        verify_message(batch[0], blobs[0], trust, NOW, TOYONO)
    verify_message(batches[0][1], signed[0][1], trust, NOW, TOYONO)  # a hit: most recent now
    verify_message(batches[3][0], signed[3][0], trust, NOW, TOYONO)  # evicts batch 1
    keys = [_cache_key(batch, blobs[0]) for batch, blobs in zip(batches, signed, strict=True)]
    assert len(cms._verified_cache) == 3
    assert [k in cms._verified_cache for k in keys] == [True, False, True, True]
    # an evicted batch is verified in full again
    assert verify_message(batches[1][1], signed[1][1], trust, NOW, TOYONO).member == TOYONO
    assert keys[1] in cms._verified_cache and len(cms._verified_cache) == 3


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


# --- the batch blob's fast reader and writer against the general DER code ----------------

def _general(blob: bytes) -> SignatureBlob | str:
    try:
        return SignatureBlob._from_bytes_general(blob)
    except MalformedSignature as exc:
        return exc.message


def _parsed(blob: bytes) -> SignatureBlob | str:
    try:
        return SignatureBlob.from_bytes(blob)
    except MalformedSignature as exc:
        return exc.message


def _sample_batch(index: int, size: int, entries: int, cms_len: int) -> bytes:
    path = tuple(bytes([i]) * 32 for i in range(entries))
    cms_der = der.sequence(der.oid("1.2.840.113549.1.7.2"), der.octet_string(b"c" * cms_len))
    return SignatureBlob(cms_der, BatchProof(index, size, path)).to_bytes()


@pytest.mark.parametrize(("index", "size", "entries", "cms_len"), [
    (0, 1, 0, 10), (0, 2, 1, 100), (3, 7, 3, 700), (127, 128, 7, 700), (128, 300, 9, 700),
    (511, 512, 9, 2000), (40000, 70000, 17, 700), (0, 2, 1, 70000),
])
def test_batch_blob_writer_and_fast_reader(index: int, size: int, entries: int,
                                           cms_len: int) -> None:
    blob = _sample_batch(index, size, entries, cms_len)
    parsed = _general(blob)
    assert isinstance(parsed, SignatureBlob) and parsed.batch is not None
    assert signer_module._batch_blob(index, size, parsed.batch.path, parsed.cms) == blob
    fast = signer_module._batch_fields(blob)
    if len(blob) < 0x10000:  # the fast reader takes lengths of up to two bytes
        assert fast == (index, size, parsed.batch.path, parsed.cms)
    assert SignatureBlob.from_bytes(blob) == parsed


def test_sign_many_blobs_are_the_general_layout(ec_leaf: Issued) -> None:
    signer = Signer(ec_leaf.key, ec_leaf.cert, clock=lambda: NOW)
    for n in (2, 3, 9, 64):
        blobs = signer.sign_many(docs(n))
        for blob in blobs:
            parsed = _general(blob)
            assert isinstance(parsed, SignatureBlob) and parsed.to_bytes() == blob
            assert signer_module._batch_fields(blob) is not None


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_fast_blob_reader_equals_general(data: st.DataObject) -> None:
    """``from_bytes`` (fast reader first) gives the general parse's result or error for
    valid and mutated batch blobs; whatever the fast reader accepts, the general parse
    reads to the same values."""
    blob = _sample_batch(*data.draw(st.sampled_from([
        (0, 2, 1, 100), (3, 7, 3, 300), (128, 300, 9, 120), (0, 1, 0, 5)])))
    kind = data.draw(st.sampled_from(["none", "flip", "truncate", "insert", "delete"]))
    pos = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    if kind == "flip":
        blob = blob[:pos] + bytes([blob[pos] ^ data.draw(st.integers(1, 255))]) + blob[pos + 1:]
    elif kind == "truncate":
        blob = blob[:pos]
    elif kind == "insert":
        blob = blob[:pos] + bytes([data.draw(st.integers(0, 255))]) + blob[pos:]
    elif kind == "delete":
        blob = blob[:pos] + blob[pos + 1:]
    general = _general(blob)
    fast = signer_module._batch_fields(blob)
    if fast is not None:
        assert isinstance(general, SignatureBlob) and general.batch is not None
        assert fast == (general.batch.index, general.batch.size, general.batch.path,
                        general.cms)
    assert _parsed(blob) == general


def test_fast_blob_reader_refuses_what_general_refuses() -> None:
    cms_der = der.sequence(der.oid("1.2.840.113549.1.7.2"), der.context(0, der.sequence()))
    entry = der.octet_string(b"\x01" * 32)
    not_minimal = [
        # INTEGER 0 written in two bytes, a length in the long form for a short one
        der.sequence(b"\x02\x01\x01", b"\x02\x02\x00\x00", der.integer(2),
                     der.sequence(entry), cms_der),
        b"\x30\x81\x10" + b"\x00" * 0x10,
        der.sequence(der.integer(1), der.integer(0), der.integer(2),
                     b"\x30\x81\x22" + entry, cms_der),
        der.sequence(der.integer(1), der.integer(-1), der.integer(2), der.sequence(entry),
                     cms_der),
        der.sequence(der.integer(1), der.integer(0), der.integer(2), der.sequence(entry),
                     cms_der, b"\x05\x00"),
        der.sequence(der.integer(1), der.integer(0), der.integer(2), der.sequence(entry),
                     der.octet_string(cms_der)),
    ]
    for blob in not_minimal:
        assert signer_module._batch_fields(blob) is None
        with pytest.raises(MalformedSignature):
            SignatureBlob.from_bytes(blob)


def test_result_types_are_still_frozen_dataclasses() -> None:
    import dataclasses

    proof = BatchProof(1, 2, (b"\x00" * 32,))
    blob = SignatureBlob(b"cms", proof)
    assert SignatureBlob(b"cms").batch is None
    assert blob == SignatureBlob(cms=b"cms", batch=BatchProof(index=1, size=2,
                                                               path=(b"\x00" * 32,)))
    assert hash(blob) == hash(SignatureBlob(b"cms", BatchProof(1, 2, (b"\x00" * 32,))))
    assert dataclasses.astuple(proof) == (1, 2, (b"\x00" * 32,))
    assert [f.name for f in dataclasses.fields(signer_module.VerifiedMessage)] == [
        "member", "certificate", "signing_time", "batch"]
    for value, field in ((proof, "index"), (blob, "cms")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, 0)
    assert dataclasses.replace(proof, index=0) == BatchProof(0, 2, proof.path)
