"""Evidence bundles: one exchange's proof in a zip that an auditor checks offline.

Layout (``docs/audit.md`` explains each file and how to check it with openssl)::

    manifest.json                 format, node, message id, SHA-256 of every other file
    request/record.txt            the log record (canonical bytes) of the request
    request/signed-document.txt   what the client's member signed
    request/signature.p7s         CMS SignedData, detached, DER
    request/body.bin              the body, when the log kept it
    response/...                  the same for the response
    proof.json                    record hashes, prev hashes, Merkle audit paths
    checkpoint/checkpoint.txt     the checkpoint record that covers the records
    checkpoint/signature.p7s      the node's CMS signature over checkpoint.txt
    checkpoint/timestamp.tsr      RFC 3161 TimeStampResp over checkpoint.txt
    certs/ca.crt, certs/log-signer.crt, certs/tsa.crt, certs/request-signer.crt,
    certs/response-signer.crt

When the request and the response fall into different batches, the response's checkpoint
is in ``checkpoint-2/``. A batch-signed message adds ``<dir>/batch-root.txt`` (what the
CMS signature covers) and ``<dir>/signature-blob.der`` (the stored batch signature).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Connection, and_, select

from secserver.audit.archive import read_archive
from secserver.audit.body import associated_data, decrypt_body
from secserver.audit.chain import chain_hash
from secserver.audit.errors import AuditError
from secserver.audit.records import parse_fields, parse_time
from secserver.audit.store import (
    RECORD_COLUMNS,
    ArchiveEntry,
    StoredRecord,
    log_records,
    log_timestamps,
    stored_record,
)
from secserver.identifiers import ClientId, ServiceId
from secserver.signing import der
from secserver.signing.cms import parse_signed_data, verify_detached
from secserver.signing.merkle import audit_paths, leaf_hash, root_from_leaf_hash
from secserver.signing.pki import server_id_from_certificate
from secserver.signing.signer import SignatureBlob, batch_root_document, verify_message
from secserver.signing.timestamp import tsa_certificate, verify_timestamp
from secserver.signing.trust import TrustStore

FORMAT = "secserver-evidence/1"


# -- finding the evidence (database, then archives) -----------------------------------

@dataclass(frozen=True)
class Anchored:
    """A record with the batch that holds it: checkpoint, the batch's record hashes and
    the checkpoint's timestamp token (``None`` while it waits)."""

    record: StoredRecord
    checkpoint: StoredRecord | None
    batch: tuple[bytes, ...]
    token: bytes | None


def _archive_scan(entries: list[ArchiveEntry]) -> Iterator[tuple[StoredRecord, bytes | None]]:
    for entry in entries:
        yield from read_archive(Path(entry.path))


def message_records(conn: Connection, node: str, message_id: str,
                    archived: list[ArchiveEntry]) -> list[StoredRecord]:
    """Every record of one message id on this node, oldest first."""
    rows = conn.execute(select(*RECORD_COLUMNS).where(and_(
        log_records.c.node_id == node, log_records.c.message_id == message_id))
        .order_by(log_records.c.seq)).all()
    found = [stored_record(tuple(r)) for r in rows]
    if found or not archived:
        return found
    return [r for r, _ in _archive_scan(archived) if r.message_id == message_id]


def anchor_record(conn: Connection, node: str, record: StoredRecord,
                  archived: list[ArchiveEntry]) -> Anchored:
    """Find the checkpoint that closes the record's batch (``None`` if not yet written)."""
    if archived and record.seq <= archived[-1].last_seq:
        batch: list[bytes] = []
        tokens: dict[int, bytes] = {}
        seen = False
        for r, token in _archive_scan([a for a in archived if a.last_seq >= record.seq]):
            if token is not None:
                tokens[r.seq] = token
            if r.kind == "checkpoint":
                if seen:
                    return Anchored(record, r, tuple(batch), tokens.get(r.seq))
                batch = []
                continue
            batch.append(r.hash)
            seen = seen or r.seq == record.seq
        raise AuditError(f"record {record.seq}: its checkpoint is missing from the archive")
    row = conn.execute(select(*RECORD_COLUMNS).where(and_(
        log_records.c.node_id == node, log_records.c.kind == "checkpoint",
        log_records.c.seq > record.seq)).order_by(log_records.c.seq).limit(1)).first()
    if row is None:
        return Anchored(record, None, (), None)
    checkpoint = stored_record(tuple(row))
    fields = parse_fields(checkpoint.content)
    first, last = int(fields["first-seq"]), int(fields["last-seq"])
    hashes = conn.execute(select(log_records.c.hash).where(and_(
        log_records.c.node_id == node, log_records.c.seq >= first,
        log_records.c.seq <= last)).order_by(log_records.c.seq)).scalars()
    token = conn.execute(select(log_timestamps.c.token).where(and_(
        log_timestamps.c.node_id == node,
        log_timestamps.c.checkpoint_seq == checkpoint.seq))).scalar()
    return Anchored(record, checkpoint, tuple(bytes(h) for h in hashes),
                    None if token is None else bytes(token))


def plain_body(record: StoredRecord, node: str, body_key: bytes | None) -> bytes | None:
    """The body as the exchange carried it, when the log kept it (and can decrypt it)."""
    if record.body is None:
        return None
    fields = parse_fields(record.content)
    if fields.get("body-policy") != "encrypt":
        return record.body
    if body_key is None:
        return None
    aad = associated_data(node, fields["message-id"], fields["direction"], fields["side"])
    return decrypt_body(body_key, record.body, aad)


# -- building -----------------------------------------------------------------------------

def timestamp_response(token: bytes) -> bytes:
    """Wrap a TimeStampToken as a TimeStampResp (status granted), as ``openssl ts`` reads."""
    return der.sequence(der.sequence(der.integer(0)), token)


def _pem(cert_der: bytes) -> bytes:
    return x509.load_der_x509_certificate(cert_der).public_bytes(Encoding.PEM)


def _signer_cert(cms_der: bytes) -> bytes | None:
    certs = parse_signed_data(cms_der).certificates
    return certs[0] if certs else None


def _no_timestamp(checkpoint: int, record: int, tsa_url: str) -> str:
    what = f"checkpoint {checkpoint} (covering record {record}) has no timestamp"
    if not tsa_url:
        return (f"{what}: no TSA is configured ([tsa] url is empty), so the node does not "
                "timestamp its checkpoints; set [tsa] url to an RFC 3161 TSA and restart "
                "the node (it then timestamps every waiting checkpoint), then export again")
    return (f"{what} yet: the TSA at {tsa_url} has not answered; the running node "
            "timestamps it as soon as the TSA answers; try again later")


def build_bundle(node: str, message_id: str, items: list[Anchored], *, ca_pem: bytes,
                 body_key: bytes | None, created_at: datetime, tsa_url: str) -> bytes:
    """The bundle (zip bytes) for the chosen request/response records. ``tsa_url`` is
    the node's ``[tsa] url`` ("" when none), named when a checkpoint has no token."""
    files: dict[str, bytes] = {"certs/ca.crt": ca_pem}
    checkpoint_dirs: dict[int, str] = {}
    proof_records: list[dict[str, Any]] = []
    proof_checkpoints: dict[str, dict[str, Any]] = {}
    for item in items:
        record, checkpoint = item.record, item.checkpoint
        if checkpoint is None:
            raise AuditError(f"record {record.seq} is not yet anchored by a checkpoint; try "
                             "again after the next checkpoint (about a second)")
        if item.token is None:
            raise AuditError(_no_timestamp(checkpoint.seq, record.seq, tsa_url))
        fields = parse_fields(record.content)
        direction = fields["direction"]
        files[f"{direction}/record.txt"] = record.content
        if record.signed_document is not None:
            files[f"{direction}/signed-document.txt"] = record.signed_document
        batch_info: dict[str, Any] | None = None
        if record.signature is not None:
            blob = SignatureBlob.from_bytes(record.signature)
            files[f"{direction}/signature.p7s"] = blob.cms
            signer = _signer_cert(blob.cms)
            if signer is not None:
                files[f"certs/{direction}-signer.crt"] = _pem(signer)
            if blob.batch is not None:
                assert record.signed_document is not None
                root = root_from_leaf_hash(leaf_hash(record.signed_document), blob.batch.index,
                                           blob.batch.size, blob.batch.path)
                files[f"{direction}/batch-root.txt"] = batch_root_document(root,
                                                                           blob.batch.size)
                files[f"{direction}/signature-blob.der"] = record.signature
                batch_info = {"index": blob.batch.index, "size": blob.batch.size,
                              "path": [p.hex() for p in blob.batch.path],
                              "root_document": f"{direction}/batch-root.txt"}
        body = plain_body(record, node, body_key)
        if body is not None:
            files[f"{direction}/body.bin"] = body
        if checkpoint.seq not in checkpoint_dirs:
            name = "checkpoint" if not checkpoint_dirs else f"checkpoint-{len(checkpoint_dirs) + 1}"
            checkpoint_dirs[checkpoint.seq] = name
            files[f"{name}/checkpoint.txt"] = checkpoint.content
            files[f"{name}/signature.p7s"] = checkpoint.signature or b""
            files[f"{name}/timestamp.tsr"] = timestamp_response(item.token)
            log_signer = _signer_cert(checkpoint.signature or b"")
            if log_signer is not None:
                files["certs/log-signer.crt"] = _pem(log_signer)
            tsa = tsa_certificate(item.token)
            if tsa is not None:
                files["certs/tsa.crt"] = tsa.public_bytes(Encoding.PEM)
            cp_fields = parse_fields(checkpoint.content)
            proof_checkpoints[name] = {"seq": checkpoint.seq,
                                       "merkle_root": cp_fields["merkle-root"],
                                       "first_seq": int(cp_fields["first-seq"]),
                                       "last_seq": int(cp_fields["last-seq"])}
        cp = proof_checkpoints[checkpoint_dirs[checkpoint.seq]]
        index = record.seq - cp["first_seq"]
        _root, paths = audit_paths(list(item.batch))
        proof_records.append({
            "direction": direction, "seq": record.seq, "record": f"{direction}/record.txt",
            "prev_hash": record.prev_hash.hex(), "hash": record.hash.hex(),
            "leaf_index": index, "tree_size": len(item.batch),
            "audit_path": [p.hex() for p in paths[index]],
            "checkpoint": checkpoint_dirs[checkpoint.seq], "signature_batch": batch_info})
    files["proof.json"] = json.dumps({"format": FORMAT, "node": node, "message_id": message_id,
                                      "records": proof_records,
                                      "checkpoints": proof_checkpoints},
                                     indent=2, sort_keys=True).encode() + b"\n"
    manifest = {"format": FORMAT, "node": node, "message_id": message_id,
                "created_at": created_at.isoformat(),
                "files": {name: hashlib.sha256(data).hexdigest()
                          for name, data in sorted(files.items())}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name, data in sorted(files.items()):
            bundle.writestr(name, data)
    return out.getvalue()


def choose_records(records: list[StoredRecord]) -> list[StoredRecord]:
    """One request and one response: the first without an error code, else the first."""
    chosen: list[StoredRecord] = []
    for direction in ("request", "response"):
        mine = [r for r in records if parse_fields(r.content).get("direction") == direction]
        if mine:
            clean = [r for r in mine if not parse_fields(r.content).get("error-code")]
            chosen.append((clean or mine)[0])
    return chosen


# -- verifying (offline) --------------------------------------------------------------------

@dataclass
class BundleReport:
    message_id: str = ""
    node: str = ""
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "message_id": self.message_id, "node": self.node,
                "checks": self.checks, "problems": self.problems}


def _signer_for(fields: dict[str, str]) -> ClientId:
    if fields["direction"] == "request":
        return ClientId.parse(fields["client"])
    return ServiceId.parse(fields["service"]).provider


def verify_bundle(data: bytes, trust: TrustStore) -> BundleReport:
    """Check a bundle with nothing but the trusted CA: files, record hashes, audit paths,
    checkpoint signature and timestamp, message signatures."""
    report = BundleReport()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        files = {name: archive.read(name) for name in archive.namelist()}
        manifest = json.loads(files.pop("manifest.json"))
        proof = json.loads(files["proof.json"])
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        report.problems.append(f"not an evidence bundle: {exc}")
        return report
    report.message_id, report.node = str(manifest.get("message_id")), str(manifest.get("node"))
    listed = manifest.get("files", {})
    for name in sorted(set(listed) | set(files)):
        if name not in files:
            report.problems.append(f"{name} is listed in the manifest but missing")
        elif name not in listed:
            report.problems.append(f"{name} is not listed in the manifest")
        elif hashlib.sha256(files[name]).hexdigest() != listed[name]:
            report.problems.append(f"{name} does not match its SHA-256 in the manifest")
    report.checks.append("manifest digests")
    node = str(proof.get("node"))
    for name, cp in proof.get("checkpoints", {}).items():
        _verify_checkpoint(report, files, name, cp, node, trust)
    for entry in proof.get("records", []):
        _verify_record(report, files, proof, entry, trust)
    return report


def _verify_checkpoint(report: BundleReport, files: dict[str, bytes], name: str,
                       cp: dict[str, Any], node: str, trust: TrustStore) -> None:
    content = files.get(f"{name}/checkpoint.txt", b"")
    fields = parse_fields(content)
    at = parse_time(fields.get("at", "1970-01-01T00:00:00.000000Z"))
    if fields.get("merkle-root") != cp.get("merkle_root") or fields.get("node") != node:
        report.problems.append(f"{name}/checkpoint.txt does not match proof.json")
    try:
        verified = verify_detached(files.get(f"{name}/signature.p7s", b""), content, trust, at)
        signer = str(server_id_from_certificate(verified.certificate))
        if signer != node:
            raise AuditError(f"signed by {signer}, not by {node}")
        report.checks.append(f"{name} signature ({signer})")
    except Exception as exc:
        report.problems.append(f"{name} signature invalid: {exc}")
    try:
        tsr = files.get(f"{name}/timestamp.tsr", b"")
        start, end = der.expect(tsr, 0, der.SEQUENCE, "TimeStampResp")
        items = der.children(tsr, start, end)
        if len(items) != 2:
            raise AuditError("timestamp.tsr is not a granted TimeStampResp with a token")
        token = _tlv(tsr, items[1])
        info = verify_timestamp(token, content, trust, at)
        report.checks.append(f"{name} timestamp ({info.time.isoformat()})")
    except Exception as exc:
        report.problems.append(f"{name} timestamp invalid: {exc}")


def _tlv(data: bytes, item: tuple[int, int, int, int]) -> bytes:
    """The whole TLV of a child as ``der.children`` describes it."""
    return data[item[1]:item[3]]


def _verify_record(report: BundleReport, files: dict[str, bytes], proof: dict[str, Any],
                   entry: dict[str, Any], trust: TrustStore) -> None:
    direction = entry.get("direction")
    content = files.get(str(entry.get("record")), b"")
    fields = parse_fields(content)
    where = f"{direction} record {entry.get('seq')}"
    if fields.get("message-id") != report.message_id:
        report.problems.append(f"{where} belongs to message {fields.get('message-id')!r}")
    digest = chain_hash(bytes.fromhex(entry["prev_hash"]), content)
    if digest.hex() != entry.get("hash"):
        report.problems.append(f"{where}: record.txt does not hash to the proof's hash")
        return
    cp = proof["checkpoints"].get(entry.get("checkpoint"), {})
    try:
        root = root_from_leaf_hash(leaf_hash(digest), int(entry["leaf_index"]),
                                   int(entry["tree_size"]),
                                   [bytes.fromhex(p) for p in entry["audit_path"]])
        if root.hex() != cp.get("merkle_root") or \
                int(entry["seq"]) - int(cp.get("first_seq", 0)) != int(entry["leaf_index"]):
            raise AuditError("the audit path does not lead to the checkpoint's Merkle root")
        report.checks.append(f"{where} audit path")
    except Exception as exc:
        report.problems.append(f"{where}: {exc}")
    document = files.get(f"{direction}/signed-document.txt")
    blob = files.get(f"{direction}/signature-blob.der") or files.get(f"{direction}/signature.p7s")
    body = files.get(f"{direction}/body.bin")
    for name, value in (("signed-document", document), ("signature", blob)):
        expected = fields.get(name, "")
        actual = "" if value is None else hashlib.sha256(value).hexdigest()
        if expected != actual:
            report.problems.append(f"{where}: {name} does not match the digest in the record")
    if body is not None and hashlib.sha256(body).hexdigest() != fields.get("body-sha256"):
        report.problems.append(f"{where}: body.bin does not match body-sha256 in the record")
    if document is not None and blob is not None:
        try:
            verify_message(document, blob, trust, parse_time(fields["at"]),
                           expected_member=_signer_for(fields))
            report.checks.append(f"{where} message signature")
        except Exception as exc:
            report.problems.append(f"{where} message signature invalid: {exc}")
