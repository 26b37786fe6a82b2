"""Archives: old records moved out of the database into compressed files.

``audit archive --before DATE`` takes whole batches (up to the last timestamped checkpoint
written before DATE), writes them with their checkpoint tokens to one gzip file, records
the file in ``log_archives`` (path, SHA-256, last seq and hash), then deletes the rows.
The chain continues: the next record in the database names the archive's last hash as its
``prev_hash``, and ``audit verify`` reads archives and database as one log.

File format (inside gzip): the line ``secserver-log-archive 1\\n``, a JSON line with
``node``, ``first_seq``, ``last_seq``, then per record the fields ``seq`` (8 bytes, big
endian) and ``kind, at, message_id, prev_hash, hash, content, body, signed_document,
signature, token`` each as a 4-byte big-endian length and the bytes (``0xFFFFFFFF``:
none).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, delete, select

from secserver.audit.errors import AuditError
from secserver.audit.records import format_time
from secserver.audit.store import (
    StoredRecord,
    archives,
    iter_records,
    log_archives,
    log_records,
    log_timestamps,
    timestamps,
)
from secserver.db.engine import make_engine

MAGIC = b"secserver-log-archive 1\n"
_NONE = 0xFFFFFFFF
_LEN = struct.Struct(">I")
_SEQ = struct.Struct(">Q")


@dataclass(frozen=True)
class ArchiveResult:
    path: Path
    first_seq: int
    last_seq: int
    records: int
    file_sha256: str


def _write_field(out: gzip.GzipFile, value: bytes | None) -> None:
    if value is None:
        out.write(_LEN.pack(_NONE))
    else:
        out.write(_LEN.pack(len(value)))
        out.write(value)


def _read_exact(src: gzip.GzipFile, n: int, path: Path) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise AuditError(f"archive {path} is truncated")
    return data


def _read_field(src: gzip.GzipFile, path: Path) -> bytes | None:
    (n,) = _LEN.unpack(_read_exact(src, 4, path))
    return None if n == _NONE else _read_exact(src, n, path)


def read_archive(path: Path) -> Iterator[tuple[StoredRecord, bytes | None]]:
    """The records of an archive file with their checkpoint tokens, in seq order."""
    try:
        with gzip.open(path, "rb") as src:
            if src.readline() != MAGIC:
                raise AuditError(f"{path} is not a secserver log archive")
            json.loads(src.readline())
            while True:
                head = src.read(8)
                if not head:
                    return
                if len(head) != 8:
                    raise AuditError(f"archive {path} is truncated")
                (seq,) = _SEQ.unpack(head)
                kind, at, mid, prev, digest, content, body, doc, sig, token = (
                    _read_field(src, path) for _ in range(10))
                if kind is None or at is None or prev is None or digest is None \
                        or content is None:
                    raise AuditError(f"archive {path}: record {seq} lacks a required field")
                yield StoredRecord(seq, kind.decode(), at.decode(),
                                   None if mid is None else mid.decode(), prev, digest,
                                   content, body, doc, sig), token
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise AuditError(f"cannot read archive {path}: {exc}") from exc


def _safe(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", node)


def archive_before(database_url: str, node: str, before: datetime, out_dir: Path, *,
                   now: datetime, require_timestamps: bool = True) -> ArchiveResult | None:
    """Archive the node's records up to the last checkpoint before ``before`` (that
    checkpoint and all before it timestamped, unless ``require_timestamps`` is false: a
    node without TSA); ``None`` when there is nothing to archive."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            cutoff = format_time(before)
            checkpoints = conn.execute(
                select(log_records.c.seq, log_records.c.at).where(and_(
                    log_records.c.node_id == node, log_records.c.kind == "checkpoint"))
                .order_by(log_records.c.seq)).all()
            tokens = timestamps(conn, node)
            last = None
            for seq, at in checkpoints:
                if at >= cutoff or (require_timestamps and int(seq) not in tokens):
                    break  # a batch whose checkpoint still waits for a token stays
                last = int(seq)
            if last is None:
                return None
            previous = archives(conn, node)
            first = previous[-1].last_seq + 1 if previous else 1
            out_dir.mkdir(parents=True, exist_ok=True)
            path = (out_dir / f"{_safe(node)}-{first:012d}-{last:012d}.log.gz").resolve()
            tmp = path.with_suffix(".tmp")
            count = 0
            last_hash = b""
            last_admin: int | None = None
            with open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
                    out.write(MAGIC)
                    out.write(json.dumps({"node": node, "first_seq": first,
                                          "last_seq": last}).encode() + b"\n")
                    for r in iter_records(conn, node, first, last):
                        out.write(_SEQ.pack(r.seq))
                        for value in (r.kind.encode(), r.at.encode(),
                                      None if r.message_id is None else r.message_id.encode(),
                                      r.prev_hash, r.hash, r.content, r.body,
                                      r.signed_document, r.signature, tokens.get(r.seq)):
                            _write_field(out, value)
                        count += 1
                        last_hash = r.hash
                        if r.kind == "admin":
                            line = r.content.split(b"\nevent-id: ", 1)[1].split(b"\n", 1)[0]
                            last_admin = int(line)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, path)
            if count != last - first + 1:
                path.unlink()
                raise AuditError(f"records {first}..{last} are not all in the database "
                                 f"({count} found); run secserver audit verify first")
            file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        with engine.begin() as conn:
            if last_admin is None and previous:
                last_admin = previous[-1].last_admin_event_id
            conn.execute(log_archives.insert(), [{
                "node_id": node, "first_seq": first, "last_seq": last, "last_hash": last_hash,
                "last_admin_event_id": last_admin, "path": str(path),
                "file_sha256": file_sha, "created_at": format_time(now)}])
            conn.execute(delete(log_timestamps).where(and_(
                log_timestamps.c.node_id == node, log_timestamps.c.checkpoint_seq <= last)))
            conn.execute(delete(log_records).where(and_(
                log_records.c.node_id == node, log_records.c.seq <= last)))
        return ArchiveResult(path, first, last, count, file_sha)
    finally:
        engine.dispose()
