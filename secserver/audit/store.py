"""Where the log lives: the tables (created by migration ``0002_log``) and their reads.

* ``log_records``: one hash chain per node (``node_id`` = ``[node] server_id``), keyed by
  ``(node_id, seq)``. ``content`` holds the canonical bytes; ``kind``, ``at`` and
  ``message_id`` repeat header fields for queries (the verifier checks they agree);
  ``body``, ``signed_document`` and ``signature`` hold the bytes whose digests the content
  names (for checkpoints ``signature`` is the node's CMS signature over ``content``).
* ``log_timestamps``: the RFC 3161 token of each checkpoint, added when the TSA answers.
* ``log_archives``: archive files that hold records purged from ``log_records``.

Rows of ``log_records`` are only ever inserted (and deleted by ``audit archive``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    and_,
    func,
    select,
)

from secserver.audit.chain import GENESIS
from secserver.audit.records import parse_fields
from secserver.db.base import Base
from secserver.db.engine import make_engine

log_records = Table(
    "log_records", Base.metadata,
    Column("node_id", String(255), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("at", String(32), nullable=False),
    Column("message_id", String(255)),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("body", LargeBinary),
    Column("signed_document", LargeBinary),
    Column("signature", LargeBinary),
)

log_timestamps = Table(
    "log_timestamps", Base.metadata,
    Column("node_id", String(255), primary_key=True),
    Column("checkpoint_seq", BigInteger, primary_key=True),
    Column("token", LargeBinary, nullable=False),
    Column("at", String(32), nullable=False),
)

log_archives = Table(
    "log_archives", Base.metadata,
    Column("node_id", String(255), primary_key=True),
    Column("first_seq", BigInteger, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", LargeBinary, nullable=False),
    Column("last_admin_event_id", Integer),
    Column("path", Text, nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
)

RECORD_COLUMNS = (
    log_records.c.seq, log_records.c.kind, log_records.c.at, log_records.c.message_id,
    log_records.c.prev_hash, log_records.c.hash, log_records.c.content, log_records.c.body,
    log_records.c.signed_document, log_records.c.signature,
)


class StoredRecord(NamedTuple):
    """One stored row, as the verifier reads it (database or archive)."""

    seq: int
    kind: str
    at: str
    message_id: str | None
    prev_hash: bytes
    hash: bytes
    content: bytes
    body: bytes | None
    signed_document: bytes | None
    signature: bytes | None


RecordRow = tuple[int, str, str, str | None, bytes, bytes, bytes, bytes | None, bytes | None,
                  bytes | None]
"""A stored row as a plain tuple in ``StoredRecord``'s field order (a ``StoredRecord`` is
one too): what the SQLite driver returns, read without building an object per row."""


def stored_record(row: Any) -> StoredRecord:
    seq, kind, at, mid, prev, h, content, body, doc, sig = row
    return StoredRecord(int(seq), str(kind), str(at), None if mid is None else str(mid),
                        bytes(prev), bytes(h), bytes(content),
                        None if body is None else bytes(body),
                        None if doc is None else bytes(doc),
                        None if sig is None else bytes(sig))


@dataclass(frozen=True)
class ArchiveEntry:
    first_seq: int
    last_seq: int
    last_hash: bytes
    last_admin_event_id: int | None
    path: str
    file_sha256: str
    created_at: str


@dataclass(frozen=True)
class ChainState:
    """Where a node's chain stands: what the writer resumes from."""

    head_seq: int
    head_hash: bytes
    last_checkpoint_seq: int
    pending_hashes: tuple[bytes, ...]  # record hashes after the last checkpoint
    last_admin_event_id: int


# Reads shared by the writer (through ``AsyncConnection.run_sync``) and the CLI.

@contextlib.contextmanager
def log_connection(database_url: str) -> Iterator[Connection]:
    """A connection to the log's database, on an engine of its own that is disposed after."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def archives(conn: Connection, node_id: str) -> list[ArchiveEntry]:
    rows = conn.execute(select(log_archives).where(log_archives.c.node_id == node_id)
                        .order_by(log_archives.c.first_seq)).all()
    return [ArchiveEntry(int(r.first_seq), int(r.last_seq), bytes(r.last_hash),
                         r.last_admin_event_id, r.path, r.file_sha256, r.created_at)
            for r in rows]


def chain_state(conn: Connection, node_id: str) -> ChainState:
    where = log_records.c.node_id == node_id
    archived = archives(conn, node_id)
    head = conn.execute(select(log_records.c.seq, log_records.c.hash).where(where)
                        .order_by(log_records.c.seq.desc()).limit(1)).first()
    if head is not None:
        head_seq, head_hash = int(head.seq), bytes(head.hash)
    elif archived:
        head_seq, head_hash = archived[-1].last_seq, archived[-1].last_hash
    else:
        head_seq, head_hash = 0, GENESIS
    last_cp = conn.execute(select(func.max(log_records.c.seq))
                           .where(and_(where, log_records.c.kind == "checkpoint"))).scalar()
    if last_cp is None:
        last_cp = archived[-1].last_seq if archived else 0
    pending = conn.execute(select(log_records.c.hash).where(and_(where,
                           log_records.c.seq > last_cp)).order_by(log_records.c.seq)).scalars()
    last_admin = conn.execute(select(log_records.c.content).where(and_(
        where, log_records.c.kind == "admin")).order_by(log_records.c.seq.desc()).limit(1)
    ).scalar()
    if last_admin is not None:
        admin_id = int(parse_fields(bytes(last_admin))["event-id"])
    else:
        admin_id = max((a.last_admin_event_id or 0 for a in archived), default=0)
    return ChainState(head_seq, head_hash, int(last_cp), tuple(bytes(h) for h in pending),
                      admin_id)


def last_start_detail(conn: Connection, node_id: str) -> str | None:
    """The ``detail`` of the node's latest ``start`` system record still in the database."""
    contents = conn.execute(select(log_records.c.content).where(and_(
        log_records.c.node_id == node_id, log_records.c.kind == "system"))
        .order_by(log_records.c.seq.desc()).limit(100)).scalars()
    for content in contents:
        fields = parse_fields(bytes(content))
        if fields.get("event") == "start":
            return fields.get("detail", "")
    return None


def untimestamped_checkpoints(conn: Connection, node_id: str) -> list[tuple[int, str, bytes]]:
    """``(seq, at, content)`` of checkpoints still waiting for a token, oldest first."""
    stamped = select(log_timestamps.c.checkpoint_seq).where(
        log_timestamps.c.node_id == node_id)
    rows = conn.execute(
        select(log_records.c.seq, log_records.c.at, log_records.c.content).where(and_(
            log_records.c.node_id == node_id, log_records.c.kind == "checkpoint",
            log_records.c.seq.not_in(stamped))).order_by(log_records.c.seq)).all()
    return [(int(r.seq), r.at, bytes(r.content)) for r in rows]


def timestamps(conn: Connection, node_id: str, first: int = 0,
               last: int | None = None) -> dict[int, bytes]:
    query = select(log_timestamps.c.checkpoint_seq, log_timestamps.c.token).where(and_(
        log_timestamps.c.node_id == node_id, log_timestamps.c.checkpoint_seq >= first))
    if last is not None:
        query = query.where(log_timestamps.c.checkpoint_seq <= last)
    return {int(seq): bytes(token) for seq, token in conn.execute(query)}


_RECORD_SQL = ("SELECT seq, kind, at, message_id, prev_hash, hash, content, body, "
               "signed_document, signature FROM log_records WHERE node_id = {p} AND seq >= {p}"
               "{last} ORDER BY seq")


def record_chunks(conn: Connection, node_id: str, first: int = 0, last: int | None = None,
                  *, chunk: int = 5000) -> Iterator[list[RecordRow]]:
    """The node's records in seq order, in lists of up to ``chunk`` (bounded memory).

    Reads through the driver's own cursor: this is the verifier's hot path, and
    SQLAlchemy's row processing would cost more than the checks themselves. SQLite rows
    come as the driver's plain tuples (no object per row); PostgreSQL's are converted
    (psycopg gives memoryview for bytea).
    """
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = _RECORD_SQL.format(p=mark, last=f" AND seq <= {mark}" if last is not None else "")
    params: tuple[object, ...] = (node_id, first) if last is None else (node_id, first, last)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    server_side = conn.dialect.name == "postgresql"  # else psycopg fetches everything
    cursor = dbapi.cursor(f"log_records_{id(params)}") if server_side else dbapi.cursor()
    try:
        cursor.execute(sql, params)
        convert = conn.dialect.name != "sqlite"
        while True:
            rows = cursor.fetchmany(chunk)
            if not rows:
                return
            yield [stored_record(r) for r in rows] if convert \
                else cast("list[RecordRow]", rows)
    finally:
        cursor.close()


def iter_records(conn: Connection, node_id: str, first: int = 0,
                 last: int | None = None) -> Iterator[StoredRecord]:
    """The node's records in seq order, one ``StoredRecord`` each (streamed)."""
    make = StoredRecord._make
    for rows in record_chunks(conn, node_id, first, last):
        yield from map(make, rows)


def checkpoint_bounds(conn: Connection, node_id: str) -> list[int]:
    """Seqs of the node's checkpoints still in the database, ascending."""
    return [int(s) for s in conn.execute(select(log_records.c.seq).where(and_(
        log_records.c.node_id == node_id, log_records.c.kind == "checkpoint"))
        .order_by(log_records.c.seq)).scalars()]
