"""Signing and verifying signed documents, one by one or in Merkle batches.

A message signature (the ``signature blob``) has one of two forms (docs/protocol.md,
"Signature"):

* **single**: exactly a detached CMS SignedData DER over the signed-document bytes, so
  ``openssl cms -verify -binary -content DOC -inform DER`` checks it;
* **batch**: a DER ``SEQUENCE { version INTEGER (1), index INTEGER, size INTEGER,
  path SEQUENCE OF OCTET STRING, signature ContentInfo }`` where ``signature`` is a
  detached CMS SignedData over the *batch root document*
  ``b"secserver-batch-root: 1\\nsize: <size>\\nroot: <hex SHA-256 root>\\n"`` and the root
  is the RFC 6962 Merkle tree head of the batch's signed documents (leaf data = document
  bytes), ``path`` the audit path of this document (leaf ``index`` of ``size``).

The two forms differ in the first element of the outer SEQUENCE (OID vs INTEGER).
``Signer`` signs EC keys inline, in the event loop: in ``auto`` mode the documents queued
by every handler that ran in one loop iteration are signed together, in the next one, as
one batch (a lone document gets a single signature). RSA keys sign in a worker thread, and
in ``auto`` mode requests that queue while the key is busy are signed together as one
batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from secserver.config import NodeConfig, read_secret
from secserver.identifiers import ClientId
from secserver.signing import der
from secserver.signing.cms import (
    CmsSigner,
    RsaPadding,
    utc_now,
    verify_detached,
    verify_single,
)
from secserver.signing.errors import KeyUnavailable, MalformedSignature
from secserver.signing.keys import PrivateKey, load_certificate, load_private_key
from secserver.signing.merkle import HASH_SIZE, audit_paths, root_from_path
from secserver.signing.pki import member_id_from_certificate
from secserver.signing.trust import TrustStore

BatchMode = Literal["auto", "off"]
MAX_BATCH = 512


def batch_root_document(root: bytes, size: int) -> bytes:
    """The bytes a batch's CMS signature covers."""
    return f"secserver-batch-root: 1\nsize: {size}\nroot: {root.hex()}\n".encode("ascii")


@dataclass(frozen=True)
class BatchProof:
    """Where one signed document sits in a signed batch."""

    index: int
    size: int
    path: tuple[bytes, ...]


@dataclass(frozen=True)
class SignatureBlob:
    """A message signature: a CMS SignedData DER, with a batch proof when batched."""

    cms: bytes
    batch: BatchProof | None = None

    def to_bytes(self) -> bytes:
        if self.batch is None:
            return self.cms
        proof = self.batch
        return der.sequence(
            der.integer(1), der.integer(proof.index), der.integer(proof.size),
            der.sequence(*(der.octet_string(p) for p in proof.path)),
            self.cms,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureBlob:
        fast = _batch_fields(data)
        if fast is not None:
            index, size, path, cms = fast
            return cls(cms, BatchProof(index, size, path))
        return cls._from_bytes_general(data)

    @classmethod
    def _from_bytes_general(cls, data: bytes) -> SignatureBlob:
        """The general parse (``der``): any layout, naming what is wrong."""
        try:
            start, end = der.expect(data, 0, der.SEQUENCE, "signature")
            if end != len(data):
                raise der.DerError("trailing bytes after the signature")
            if start < end and data[start] == der.OID:
                return cls(data)  # a CMS ContentInfo; parsed when verified
            items = der.children(data, start, end)
            if len(items) != 5 or [t[0] for t in items[:4]] != [der.INTEGER] * 3 + [der.SEQUENCE]:
                raise der.DerError("neither a CMS ContentInfo nor a batch signature")
            version, index, size = (der.read_integer(data[t[2]:t[3]]) for t in items[:3])
            if version != 1:
                raise der.DerError(f"batch signature version {version} is not supported")
            path = []
            for tag, _s, c_start, c_end in der.children(data, items[3][2], items[3][3]):
                if tag != der.OCTET_STRING or c_end - c_start != HASH_SIZE:
                    raise der.DerError("audit path entries must be 32-byte OCTET STRINGs")
                path.append(data[c_start:c_end])
            if not 0 <= index < size or items[4][0] != der.SEQUENCE:
                raise der.DerError(f"batch index {index} of size {size} is impossible")
            return cls(data[items[4][1]:items[4][3]], BatchProof(index, size, tuple(path)))
        except der.DerError as exc:
            raise MalformedSignature(f"message signature is malformed: {exc}") from exc


_PATH_ENTRY = bytes((der.OCTET_STRING, HASH_SIZE))
_ENTRY_SIZE = 2 + HASH_SIZE


def _sequence_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """The content bounds of a SEQUENCE at ``pos`` in minimal DER with a length of at most
    two bytes, or ``None`` (anything else: the general parse decides)."""
    if pos + 2 > len(data) or data[pos] != der.SEQUENCE:
        return None
    first = data[pos + 1]
    if first < 0x80:
        return pos + 2, pos + 2 + first
    if first == 0x81 and pos + 3 <= len(data) and data[pos + 2] >= 0x80:
        return pos + 3, pos + 3 + data[pos + 2]
    if first == 0x82 and pos + 4 <= len(data) and data[pos + 2]:
        return pos + 4, pos + 4 + (data[pos + 2] << 8 | data[pos + 3])
    return None


def _small_uint_at(data: bytes, pos: int) -> tuple[int, int] | None:
    """A non-negative INTEGER of 1-4 content bytes in minimal form at ``pos``: its value
    and the position after it, or ``None``."""
    if pos + 3 > len(data) or data[pos] != der.INTEGER:
        return None
    size = data[pos + 1]
    if not 1 <= size <= 4 or pos + 2 + size > len(data):
        return None
    lead = data[pos + 2]
    if lead & 0x80 or (lead == 0 and size > 1 and not data[pos + 3] & 0x80):
        return None  # negative or not minimal
    return int.from_bytes(data[pos + 2:pos + 2 + size], "big"), pos + 2 + size


def _batch_blob(index: int, size: int, path: Sequence[bytes], cms: bytes) -> bytes:
    """``SignatureBlob(cms, BatchProof(index, size, path)).to_bytes()`` (32-byte path
    entries), without the intermediate objects."""
    entries = b"".join([_PATH_ENTRY + entry for entry in path])
    return der.tlv(der.SEQUENCE, b"".join((b"\x02\x01\x01", der.integer(index), der.integer(size),
                                           der.tlv(der.SEQUENCE, entries), cms)))


def _batch_fields(data: bytes) -> tuple[int, int, tuple[bytes, ...], bytes] | None:
    """``(index, size, path, cms)`` of a batch blob in the layout ``to_bytes`` writes, read
    with a few byte checks; ``None`` for anything else (a single signature, another
    length form, anything malformed), which ``_from_bytes_general`` then reads or refuses.
    Whatever this accepts, the general parse reads to the same values (tested)."""
    outer = _sequence_at(data, 0)
    if outer is None or outer[1] != len(data) or data[outer[0]:outer[0] + 3] != b"\x02\x01\x01":
        return None
    read = _small_uint_at(data, outer[0] + 3)
    if read is None:
        return None
    index, pos = read
    read = _small_uint_at(data, pos)
    if read is None:
        return None
    size, pos = read
    bounds = _sequence_at(data, pos)
    if bounds is None or not 0 <= index < size:
        return None
    start, end = bounds
    if (end - start) % _ENTRY_SIZE or end > len(data):
        return None
    path = []
    for entry in range(start, end, _ENTRY_SIZE):
        if data[entry:entry + 2] != _PATH_ENTRY:
            return None
        path.append(data[entry + 2:entry + _ENTRY_SIZE])
    cms = _sequence_at(data, end)
    if cms is None or cms[1] != len(data):
        return None
    return index, size, tuple(path), data[end:]


@dataclass(frozen=True)
class VerifiedMessage:
    """A verified message signature: who signed, with which certificate, when, how."""

    member: ClientId | None
    certificate: x509.Certificate
    signing_time: datetime | None
    batch: BatchProof | None


def verify_message(document_bytes: bytes, signature_blob: bytes, trust: TrustStore,
                   now: datetime, expected_member: ClientId | None = None) -> VerifiedMessage:
    """Verify a single or batch signature over ``document_bytes`` at time ``now``.

    ``expected_member``: the client that claims to have signed (member or subsystem); the
    signer certificate must be bound to its member. Raises a ``VerificationError``.
    """
    if signature_blob[1:2] == b"\x82" and signature_blob[4:5] == b"\x06":
        # a single signature (the ContentInfo's first element is an OID): checked straight
        # away, without building the intermediate objects
        member, certificate, signing_time = verify_single(signature_blob, document_bytes,
                                                          trust, now, expected_member)
        return VerifiedMessage(member, certificate, signing_time, None)
    blob = SignatureBlob.from_bytes(signature_blob)
    cms, proof = blob.cms, blob.batch
    if proof is None:
        content = document_bytes
    else:
        root = root_from_path(document_bytes, proof.index, proof.size, proof.path)
        content = batch_root_document(root, proof.size)
    verified = verify_detached(cms, content, trust, now, expected_member=expected_member,
                               reuse=proof is not None)
    return VerifiedMessage(verified.member, verified.certificate, verified.signing_time,
                           proof)


class Signer:
    """Signs signed documents with one member key (``async sign`` or ``sign_now``).

    ``batch="auto"``: documents that arrive together share one signature over a Merkle
    batch (up to ``max_batch`` documents). Inline keys (``inline=None``: EC keys, tens of
    microseconds a signature) sign in the event loop, once per loop iteration, everything
    queued by the handlers of the iteration before; other keys (RSA) sign in a worker
    thread, and what queued while it was busy becomes the next batch. A batch of one
    document is a single signature. ``batch="off"``: one single signature per document.
    Call ``close()`` on shutdown.
    """

    def __init__(self, key: PrivateKey, certificate: x509.Certificate, *,
                 batch: BatchMode = "auto", rsa_padding: RsaPadding = "pkcs1v15",
                 inline: bool | None = None, max_batch: int = MAX_BATCH,
                 clock: Callable[[], datetime] = utc_now) -> None:
        if batch not in ("auto", "off"):
            raise KeyUnavailable(f"signing batch mode {batch!r} is not 'auto' or 'off'")
        self._cms = CmsSigner(key, certificate, rsa_padding=rsa_padding)
        self.certificate = certificate
        self.batch: BatchMode = batch
        self.inline = isinstance(key, ec.EllipticCurvePrivateKey) if inline is None else inline
        self.max_batch = max(1, max_batch)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._queue: list[tuple[bytes, asyncio.Future[bytes]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._tick: asyncio.Handle | None = None  # the scheduled inline drain
        self.batches_signed = 0     # signatures over a Merkle batch of 2 or more documents
        self.signatures_made = 0    # CMS signatures (single ones and batch roots)
        self.documents_signed = 0   # signed documents that got a signature blob

    @classmethod
    def from_files(cls, cert_file: Path | str, key_file: Path | str,
                   passphrase: bytes | None = None, *, batch: BatchMode = "auto",
                   rsa_padding: RsaPadding = "pkcs1v15") -> Signer:
        return cls(load_private_key(key_file, passphrase), load_certificate(cert_file),
                   batch=batch, rsa_padding=rsa_padding)

    @classmethod
    def from_config(cls, config: NodeConfig) -> Signer:
        """The member signing key of ``[signing]``."""
        section = config.signing
        if section.cert_file is None or section.key_file is None:
            raise KeyUnavailable("signing needs [signing] cert_file and key_file")
        passphrase = read_secret(section.key_passphrase_file, "[signing] key_passphrase_file")
        return cls.from_files(section.cert_file, section.key_file, passphrase,
                              batch=section.batch)

    @property
    def member(self) -> ClientId:
        """The member this key signs for (from the certificate subject)."""
        return member_id_from_certificate(self.certificate)

    def sign_now(self, document_bytes: bytes) -> bytes:
        """A single signature (plain CMS DER), made in the calling thread."""
        signature = self._sign(document_bytes)
        self.documents_signed += 1
        return signature

    def _sign(self, content: bytes) -> bytes:
        signature = self._cms.sign(content, signing_time=self._clock())
        self.signatures_made += 1
        return signature

    def sign_many(self, documents: Sequence[bytes]) -> list[bytes]:
        """One signature blob per document: single for one, a Merkle batch for several."""
        if len(documents) == 1:
            return [self.sign_now(documents[0])]
        root, paths = audit_paths(documents)
        size = len(documents)
        cms = self._sign(batch_root_document(root, size))
        self.batches_signed += 1
        self.documents_signed += size
        return [_batch_blob(i, size, paths[i], cms) for i in range(size)]

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="secserver-sign")
        return self._executor

    async def sign(self, document_bytes: bytes) -> bytes:
        """Sign one document; returns the signature blob bytes."""
        if self.inline and self.batch == "off":
            return self.sign_now(document_bytes)
        loop = asyncio.get_running_loop()
        if self.batch == "off":
            return await loop.run_in_executor(self._pool(), self.sign_now, document_bytes)
        future: asyncio.Future[bytes] = loop.create_future()
        self._queue.append((document_bytes, future))
        if self.inline:
            if self._tick is None:
                # one drain per loop iteration, after every handler that runs in this one
                self._tick = loop.call_soon(self._drain_inline)
        elif self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="secserver-signer-batch")
        return await future

    def _take(self) -> list[tuple[bytes, asyncio.Future[bytes]]]:
        """The next batch: up to ``max_batch`` queued documents whose caller still waits."""
        taken = self._queue[:self.max_batch]
        del self._queue[:self.max_batch]
        return [(doc, fut) for doc, fut in taken if not fut.done()]

    def _drain_inline(self) -> None:
        """Sign everything queued (inline keys), one batch per ``max_batch`` documents."""
        self._tick = None
        while self._queue:
            live = self._take()
            if not live:
                continue
            try:
                blobs = self.sign_many([doc for doc, _ in live])
            except Exception as exc:
                _settle(live, exc)
                continue
            _settle(live, blobs)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            live = self._take()
            if not live:
                continue
            try:
                blobs = await loop.run_in_executor(self._pool(), self.sign_many,
                                                   [doc for doc, _ in live])
            except Exception as exc:
                _settle(live, exc)
                continue
            _settle(live, blobs)

    async def close(self) -> None:
        """Finish queued signatures, then stop the worker thread."""
        if self._tick is not None:
            self._tick.cancel()
            self._drain_inline()
        if self._worker is not None and not self._worker.done():
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _settle(waiters: list[tuple[bytes, asyncio.Future[bytes]]],
            outcome: list[bytes] | Exception) -> None:
    """Hand each waiter its blob, or the exception to all; skip those no longer waiting."""
    if isinstance(outcome, Exception):
        for _doc, fut in waiters:
            if not fut.done():
                fut.set_exception(outcome)
        return
    for (_doc, fut), blob in zip(waiters, outcome, strict=True):
        if not fut.done():
            fut.set_result(blob)
