"""The log writer: group commit, checkpoints, timestamps, admin events.

One ``LogWriter`` per node process. ``append`` queues a record and returns its sequence
number once the transaction holding it has committed (SQLite ``synchronous=FULL`` / the
PostgreSQL default both fsync on commit). One task, ``log-writer``, takes everything
queued (at most ``[log] group_commit_max`` records), numbers and chains it, and commits it
in one transaction, so concurrent appends share one commit. Under load (the last batch
held more than one record, or records arrived while it committed) the next batch gathers
for a few event-loop iterations first (``secserver.db.committer.BatchGather``); a lone
record at low load is committed at once. The transaction runs on the
thread ``log-writer-db`` (``secserver.db.committer.CommitThread``: its own synchronous
connection, one hand-off per batch, rows through the driver's ``executemany``); batches
commit one after the other in chain order. Any failure fails every record queued at that
moment with ``LoggingFailed`` (fail closed) and turns health red; the next append tries
again. New admin events are read on that thread too; the chain head (at start and after
a failure) is read through the asyncio engine.

The provider's replay reservations ride along (``append_reserving``, used by
``secserver.routing.replay.ReplayGuard``): a batch's reservations are inserted into
``exchange_seen_messages`` (node's main database, migration 0003) in the same transaction
as its records, with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``; a reservation whose
row was not inserted (the id is already there: another node sharing the database, or
before a restart) is answered "not new" while its record and the rest of the batch commit
as usual. One durable commit, one thread hand-off for both. On PostgreSQL a batch of up
to ``PG_MULTIROW_MAX`` records stays one autocommit statement (a data-modifying ``WITH``:
reservations, then records); larger batches and SQLite run the two statements in one
transaction. ``prune_reservations`` deletes old reservations on the same thread, after
the next batch.

The same task closes a batch with a checkpoint every ``[log] checkpoint_interval`` seconds
or ``[log] checkpoint_records`` records (never an empty one), signed with the node's log
key. Task ``log-timestamper`` gets an RFC 3161 token for each checkpoint, oldest first, over
one kept-alive connection to the TSA (a dropped one is replaced at once);
while the TSA is down traffic continues, a ``tsa-failure`` system record is written once,
and the checkpoints wait. ``check_accepting(now)`` refuses new messages
(``LogTimestampOverdue``) once the oldest waiting checkpoint is older than
``[tsa] grace_period``. Task ``log-admin`` chains new ``admin_events`` rows in id order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import sqlalchemy as sa
import structlog
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import AsyncEngine

from secserver import __version__
from secserver.audit.anchor import Anchor, anchor_path, write_anchor
from secserver.audit.body import associated_data, encrypt_body, parse_body_key
from secserver.audit.chain import chain_hash
from secserver.audit.errors import LoggingFailed, LogTimestampOverdue
from secserver.audit.records import (
    AdminRecord,
    CheckpointRecord,
    Evidence,
    MessageRecord,
    Record,
    SystemRecord,
    canonical_bytes,
    format_time,
    parse_time,
)
from secserver.audit.store import (
    ChainState,
    chain_state,
    last_start_detail,
    log_records,
    log_timestamps,
    untimestamped_checkpoints,
)
from secserver.config import NodeConfig, read_secret
from secserver.db.committer import (
    PG_MULTIROW_MAX,
    BatchGather,
    CommitThread,
    flattened,
    multirow_insert,
    plain_url,
)
from secserver.db.engine import is_sqlite, make_async_engine
from secserver.errors import SecServerError
from secserver.signing.errors import TimestampUnavailable
from secserver.signing.keys import load_certificate
from secserver.signing.merkle import merkle_root
from secserver.signing.timestamp import TimestampClient

log = structlog.get_logger("secserver.audit")

CheckpointSigner = Callable[[bytes], bytes]
"""Signs checkpoint bytes: CMS SignedData, detached, DER (runs in a worker thread)."""

Timestamper = Callable[[bytes], Awaitable[bytes]]
"""Returns an RFC 3161 token (DER TimeStampToken) over the bytes, or raises."""

RECORD_COLUMNS = ("node_id", "seq", "kind", "at", "message_id", "prev_hash", "hash", "content",
                  "body", "signed_document", "signature")
TIMESTAMP_COLUMNS = ("node_id", "checkpoint_seq", "token", "at")
ADMIN_GAP_WAIT = 5.0  # seconds to wait for a missing admin_events id (uncommitted insert)
ENCRYPT_IN_THREAD = 256 * 1024

_metadata = sa.MetaData()
seen_messages = sa.Table(
    "exchange_seen_messages", _metadata,
    sa.Column("client", sa.String(400), primary_key=True),
    sa.Column("message_id", sa.String(128), primary_key=True),
    sa.Column("seen_at", sa.Float(), nullable=False),
)
"""The provider's replay reservations (created by migration 0003), written with the log."""
SEEN_COLUMNS = ("client", "message_id", "seen_at")

Reservation = tuple[str, str, float]
"""``(client, message_id, seen_at)``: a row of ``exchange_seen_messages``."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Queued:
    record: Record
    evidence: Evidence
    future: asyncio.Future[int]
    reservation: Reservation | None = None
    fresh: bool = True
    """Set by the commit: the reservation's row was inserted (the id was new)."""


def default_signer(config: NodeConfig,
                   clock: Callable[[], datetime] = _utcnow) -> CheckpointSigner:
    """Sign with ``[log] key_file`` / ``cert_file`` (the node's log key)."""
    from secserver.signing import cms
    from secserver.signing.keys import load_private_key

    if config.log.key_file is None or config.log.cert_file is None:
        raise LoggingFailed("the message log needs the node's log key: set [log] key_file "
                            "and [log] cert_file")
    passphrase = read_secret(config.log.key_passphrase_file, "[log] key_passphrase_file")
    key = load_private_key(config.log.key_file, passphrase)
    signer = cms.CmsSigner(key, load_certificate(config.log.cert_file))

    def sign(data: bytes) -> bytes:
        return signer.sign(data, signing_time=clock())

    return sign


def default_timestamper(config: NodeConfig) -> TimestampClient | None:
    """A client of ``[tsa] url`` (tokens fully verified against ``[trust] ca_files``) that
    keeps one connection alive across checkpoints; ``None`` (no timestamps) when no URL is
    configured. The writer closes it on stop."""
    if not config.tsa.url:
        return None
    from secserver.signing.trust import TrustStore

    trust = TrustStore.from_files(config.trust.ca_files) if config.trust.ca_files else None
    return TimestampClient(config.tsa.url, timeout=config.tsa.timeout, trust=trust)


def _connection_lost(exc: Exception) -> bool:
    """The TSA could not be reached or dropped the connection (not: it was slow, or it
    answered with an error): worth one more try on a fresh connection."""
    return isinstance(exc, TimestampUnavailable) \
        and isinstance(exc.__cause__, aiohttp.ClientConnectionError)


class LogWriter:
    """The node's append-only log (see the module docstring)."""

    def __init__(self, config: NodeConfig, *, engine: AsyncEngine | None = None,
                 signer: CheckpointSigner | None = None,
                 timestamper: Timestamper | bool | None = True,
                 clock: Callable[[], datetime] = _utcnow,
                 tsa_retry: float = 1.0, admin_poll: float = 0.5) -> None:
        """``signer``/``timestamper`` default to the configured log key and TSA
        (``timestamper=None`` disables timestamps); ``clock`` gives record times."""
        self._config = config
        self._node = config.node.server_id
        self._engine = engine
        self._own_engine = engine is None
        self._db: CommitThread | None = None
        self._record_sql = ""
        self._timestamp_sql = ""
        self._seen_sql = ""
        self._sqlite = True
        self._prune_sql = ""
        self._prune_before: float | None = None
        self.reservations = 0
        """Replay reservations committed so far."""
        self.refused = 0
        """Of those, ids that were already in the database (replays)."""
        self._signer = signer
        self._timestamper: Timestamper | None = None
        self._ts_client: TimestampClient | None = None
        self._timestamper_arg = timestamper
        self._clock = clock
        self._tsa_retry = tsa_retry
        self._admin_poll = admin_poll
        self._max_batch = max(1, config.log.group_commit_max)
        self._gather = BatchGather(limit=self._max_batch)
        self._interval = config.log.checkpoint_interval
        self._cp_records = config.log.checkpoint_records
        self._grace = timedelta(seconds=config.tsa.grace_period)
        self._body_key: bytes | None = None
        self._anchor_path = anchor_path(config.node.data_dir, self._node)

        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._ts_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ts_drained = asyncio.Event()  # set when no checkpoint waits, or the TSA failed
        self._running = False
        self._closing = False
        self._reload = False
        self._tasks: list[asyncio.Task[None]] = []

        self._head_seq = 0
        self._head_hash = b""
        self._last_cp = 0
        self._last_cp_time = 0.0
        self._pending_hashes: list[bytes] = []
        self._last_admin_id = 0
        self._admin_gaps: dict[int, float] = {}
        self._admin_lock = asyncio.Lock()
        self._ts_pending: list[tuple[int, str, bytes]] = []
        self._tsa_failing = False
        self._tsa_error: str | None = None
        self._last_error: str | None = None
        self._admin_error: str | None = None

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Load the chain head, start the tasks and write a ``start`` system record."""
        if self._signer is None:
            self._signer = default_signer(self._config, self._clock)
        if self._timestamper_arg is True:
            self._ts_client = default_timestamper(self._config)
            self._timestamper = None if self._ts_client is None else self._ts_client.stamp
        elif self._timestamper_arg is not False and self._timestamper_arg is not None:
            self._timestamper = self._timestamper_arg
        raw_key = read_secret(self._config.log.body_key_file, "[log] body_key_file")
        if raw_key is not None:
            self._body_key = parse_body_key(raw_key)
        if self._engine is None:
            self._engine = make_async_engine(self._config.database_url)
        try:
            async with self._engine.connect() as conn:
                state = await conn.run_sync(chain_state, self._node)
                if self._timestamper is not None:
                    self._ts_pending = await conn.run_sync(untimestamped_checkpoints,
                                                           self._node)
                previous_start = await conn.run_sync(last_start_detail, self._node)
        except Exception as exc:
            raise LoggingFailed(f"cannot read the message log of {self._node}: {exc}; "
                                "is the database reachable and upgraded "
                                "(secserver db upgrade)?") from exc
        self._apply_state(state)
        url = plain_url(self._engine)
        self._sqlite = is_sqlite(url)
        self._db = CommitThread(url, name="log-writer-db")
        self._record_sql = self._db.insert_sql(log_records, RECORD_COLUMNS)
        self._timestamp_sql = self._db.insert_sql(log_timestamps, TIMESTAMP_COLUMNS)
        self._seen_sql = self._db.insert_sql(seen_messages, SEEN_COLUMNS)
        self._prune_sql = (f"DELETE FROM {seen_messages.name} WHERE seen_at < "  # noqa: S608
                           f"{self._db.placeholder}")  # (the driver's marker)
        self._db.start()
        self._last_cp_time = time.monotonic()
        self._running = True
        self._tasks = [asyncio.create_task(self._commit_loop(), name="log-writer"),
                       asyncio.create_task(self._admin_loop(), name="log-admin")]
        self._tasks[0].add_done_callback(self._writer_ended)
        if self._timestamper is not None:
            self._tasks.append(asyncio.create_task(self._timestamp_loop(),
                                                   name="log-timestamper"))
        fingerprint = self._log_certificate_fingerprint()
        await self.append(SystemRecord(event="start", detail=f"secserver {__version__}; log "
                                       f"certificate sha256 {fingerprint or 'unknown'}"))
        if fingerprint and previous_start and "log certificate sha256 " in previous_start:
            before = previous_start.rsplit("log certificate sha256 ", 1)[1]
            if before not in (fingerprint, "unknown"):
                await self.append(SystemRecord(
                    event="key-change",
                    detail=f"log certificate sha256 {fingerprint} (was {before})"))
        log.info("log writer started", node=self._node, head_seq=self._head_seq,
                 untimestamped=len(self._ts_pending))

    async def stop(self) -> None:
        """Chain pending admin events, write a ``stop`` record and a final checkpoint,
        give the TSA up to ``[tsa] timeout`` to stamp what waits, then stop the tasks."""
        if not self._running:
            return
        with contextlib.suppress(Exception):
            await self._poll_admin()
        self._running = False
        stop_record = self._enqueue(SystemRecord(event="stop"), Evidence()).future
        self._closing = True
        self._wake.set()
        with contextlib.suppress(Exception):
            await stop_record
        writer_task = self._tasks[0]
        with contextlib.suppress(Exception):
            await writer_task
        if self._timestamper is not None and self._ts_pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ts_drained.wait(), self._config.tsa.timeout)
        # Let the other tasks finish what they are doing (a database call cancelled half
        # way would leak its connection), then cancel what is still running.
        self._stopping.set()
        self._ts_wake.set()
        others = [t for t in self._tasks[1:] if not t.done()]
        if others:
            _done, pending = await asyncio.wait(others, timeout=self._config.tsa.timeout + 1)
            for task in pending:
                task.cancel()
            for task in others:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks = []
        if self._db is not None:
            await self._db.stop()
        if self._ts_client is not None:
            await self._ts_client.close()
        if self._own_engine and self._engine is not None:
            await self._engine.dispose()
        log.info("log writer stopped", node=self._node, head_seq=self._head_seq,
                 batches=self._gather.batches, records=self._gather.records,
                 gather_iterations=self._gather.iterations,
                 reservations=self.reservations, refused=self.refused)

    # -- the interface the proxy uses --------------------------------------------------

    async def append(self, record: Record) -> int:
        """Append a record; return its sequence number once it is durably committed.

        Raises ``LoggingFailed`` when it could not be written (nothing may be forwarded).
        """
        seq, _item = await self._append(record)
        return seq

    async def append_reserving(self, record: Record, client: str, message_id: str,
                               seen_at: float) -> tuple[int, bool]:
        """Append ``record`` and, in the same transaction, reserve ``(client, message_id)``
        in ``exchange_seen_messages``; return the record's seq and whether the id was new.

        The record is committed whether or not the id was new (a replay is logged too), and
        a reservation that is not new fails nothing else in its batch. Raises
        ``LoggingFailed`` when the transaction failed: then neither was stored.
        """
        seq, item = await self._append(record, (client, message_id, seen_at))
        return seq, item.fresh

    def prune_reservations(self, before: float) -> None:
        """Delete reservations seen before ``before`` (on the database thread, after the
        next batch; a failure is logged and tried again at the next prune)."""
        self._prune_before = before

    def check_accepting(self, now: datetime) -> None:
        """Raise when the node must refuse new messages: the log is not running
        (``LoggingFailed``), or a checkpoint waits for a timestamp longer than
        ``[tsa] grace_period`` (``LogTimestampOverdue``)."""
        if not self._running:
            raise LoggingFailed("the message log is not running")
        if self._ts_pending:
            seq, at, _ = self._ts_pending[0]
            waited = now - parse_time(at)
            if waited > self._grace:
                raise LogTimestampOverdue(
                    f"checkpoint {seq} of the message log has waited "
                    f"{int(waited.total_seconds())} s for a timestamp, longer than "
                    f"[tsa] grace_period ({int(self._grace.total_seconds())} s); "
                    f"new messages are refused until the TSA at {self._config.tsa.url} "
                    "answers again",
                    detail=self._tsa_error)

    def health(self) -> dict[str, Any]:
        """State for ``/healthz``: ``status`` is ``ok``, ``degraded`` (TSA down, still
        accepting) or ``failing`` (not writing, or refusing messages)."""
        reason: str | None = None
        accepting = True
        try:
            self.check_accepting(self._clock())
        except (LoggingFailed, LogTimestampOverdue) as exc:
            accepting, reason = False, exc.message
        if not accepting or self._last_error is not None:
            status = "failing"
            reason = reason or f"the message log cannot be written: {self._last_error}"
        elif self._tsa_failing or self._admin_error is not None:
            status = "degraded"
            reason = (f"TSA unreachable, checkpoints wait for timestamps: {self._tsa_error}"
                      if self._tsa_failing else f"admin events: {self._admin_error}")
        else:
            status = "ok"
        return {
            "status": status,
            "reason": reason,
            "accepting": accepting,
            "node": self._node,
            "head_seq": self._head_seq,
            "last_checkpoint_seq": self._last_cp,
            "unanchored_records": len(self._pending_hashes),
            "untimestamped_checkpoints": len(self._ts_pending),
            "oldest_untimestamped_at": self._ts_pending[0][1] if self._ts_pending else None,
            "tsa": ("disabled" if self._timestamper is None
                    else "unreachable" if self._tsa_failing else "ok"),
            "last_error": self._last_error,
            "last_admin_event_id": self._last_admin_id,
            "commits": 0 if self._db is None else self._db.commits,
            "batches": self._gather.batches,
            "batched_records": self._gather.records,
            "gather_iterations": self._gather.iterations,
        }

    # -- internals ---------------------------------------------------------------------

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        """If the writer task ever dies, nothing queued may wait forever: fail closed."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        message = self._fail("the log writer task stopped", exc)
        self._running = False
        queued, self._queue = self._queue, []
        for item in queued:
            if not item.future.done():
                item.future.set_exception(
                    LoggingFailed("the message log could not be written", detail=message))

    def _log_certificate_fingerprint(self) -> str | None:
        path = self._config.log.cert_file
        if path is None:
            return None
        try:
            cert = load_certificate(path)
        except SecServerError:
            return None
        return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()

    def _apply_state(self, state: ChainState) -> None:
        self._head_seq, self._head_hash = state.head_seq, state.head_hash
        self._last_cp = state.last_checkpoint_seq
        self._pending_hashes = list(state.pending_hashes)
        self._last_admin_id = max(self._last_admin_id, state.last_admin_event_id)

    async def _evidence(self, record: Record) -> Evidence:
        if not isinstance(record, MessageRecord) or record.body is None \
                or record.body_policy == "digest":
            return Evidence()
        body = record.body
        if record.body_policy == "store":
            return Evidence(stored_body=body, body_sha256=hashlib.sha256(body).digest())
        key = self._body_key
        if key is None:
            raise LoggingFailed(f"the body of message {record.message_id} must be stored "
                                "encrypted but no [log] body_key_file is configured")
        aad = associated_data(self._node, record.message_id, record.direction, record.side)

        def seal() -> Evidence:
            return Evidence(stored_body=encrypt_body(key, body, aad),
                            body_sha256=hashlib.sha256(body).digest())

        return await asyncio.to_thread(seal) if len(body) > ENCRYPT_IN_THREAD else seal()

    async def _append(self, record: Record,
                      reservation: Reservation | None = None) -> tuple[int, _Queued]:
        if not self._running:
            raise LoggingFailed("the message log is not running")
        evidence = await self._evidence(record)
        item = self._enqueue(record, evidence, reservation)
        return await item.future, item

    def _enqueue(self, record: Record, evidence: Evidence,
                 reservation: Reservation | None = None) -> _Queued:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        item = _Queued(record, evidence, future, reservation)
        self._queue.append(item)
        self._wake.set()
        return item

    def _queued(self) -> int:
        return len(self._queue)

    def _checkpoint_due(self) -> bool:
        return bool(self._pending_hashes) and (
            len(self._pending_hashes) >= self._cp_records
            or time.monotonic() - self._last_cp_time >= self._interval)

    async def _commit_loop(self) -> None:
        while True:
            if not self._queue and not self._closing:
                timeout = None
                if self._pending_hashes:
                    timeout = max(0.0, self._last_cp_time + self._interval - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # no task per wait (wait_for)
                        await self._wake.wait()
            self._wake.clear()
            if self._queue:
                if not self._closing:
                    await self._gather.gather(self._queued)
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                await self._commit(batch)
                self._gather.committed(len(batch), len(self._queue))
                if self._prune_before is not None:
                    await self._prune_reservations()
            if self._checkpoint_due() or (self._closing and not self._queue
                                          and self._pending_hashes):
                await self._write_checkpoint()
            if self._closing and not self._queue:
                return

    def _fail(self, what: str, exc: BaseException) -> str:
        message = f"{what}: {type(exc).__name__}: {exc}".splitlines()[0][:500]
        self._last_error = message
        self._reload = True
        log.error("message log failure", node=self._node, error=message)
        return message

    async def _reload_state(self) -> None:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            state = await conn.run_sync(chain_state, self._node)
        self._apply_state(state)
        self._reload = False

    async def _commit(self, batch: list[_Queued]) -> None:
        assert self._db is not None
        try:
            if self._reload:
                await self._reload_state()
            at = format_time(self._clock())
            node = self._node
            seq, prev = self._head_seq, self._head_hash
            rows: list[tuple[Any, ...]] = []
            hashes: list[bytes] = []
            for item in batch:
                seq += 1
                record = item.record
                content = canonical_bytes(node, seq, at, record, item.evidence)
                digest = chain_hash(prev, content)
                if isinstance(record, MessageRecord):
                    rows.append((node, seq, record.kind, at, record.message_id, prev, digest,
                                 content, item.evidence.stored_body, record.signed_document,
                                 record.signature))
                else:
                    rows.append((node, seq, record.kind, at, None, prev, digest, content,
                                 item.evidence.stored_body, None, None))
                hashes.append(digest)
                prev = digest
            reservations = [item.reservation for item in batch if item.reservation]
            inserted: list[Any] = []
            if reservations:
                inserted = await self._insert_reserving(rows, reservations)
            else:
                await self._db.executemany(self._record_sql, rows)
        except Exception as exc:
            message = self._fail("cannot commit log records", exc)
            failed = batch + self._queue  # fail closed: nothing queued now may succeed later
            self._queue = []
            for item in failed:
                if not item.future.done():
                    item.future.set_exception(
                        LoggingFailed("the message log could not be written", detail=message))
            return
        self._head_seq, self._head_hash = seq, prev
        self._pending_hashes.extend(hashes)
        self._last_error = None
        if reservations:
            self.reservations += len(reservations)
            new = {(str(client), str(message_id)) for client, message_id in inserted}
            for item in batch:
                if item.reservation is not None:
                    key = item.reservation[:2]
                    # a key twice in one batch: one row, so only the first one is new
                    item.fresh = key in new
                    new.discard(key)
                    self.refused += not item.fresh
        first = seq - len(batch) + 1
        for offset, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(first + offset)

    def _insert_reserving(self, rows: list[tuple[Any, ...]],
                          reservations: list[Reservation]) -> asyncio.Future[list[Any]]:
        """Insert the records and the reservations in one transaction; the future gives
        the ``(client, message_id)`` of the reservations that were inserted."""
        assert self._db is not None
        seen_sql = (f"{multirow_insert(self._seen_sql, len(reservations))} "
                    "ON CONFLICT DO NOTHING RETURNING client, message_id")
        seen_values = flattened(reservations)
        if not self._sqlite and len(rows) <= PG_MULTIROW_MAX:
            # PostgreSQL: one autocommit statement (one round trip, no BEGIN/COMMIT); the
            # data-modifying WITH parts run exactly once whatever the SELECT reads
            records_sql = multirow_insert(self._record_sql, len(rows))
            # statements from insert_sql (table metadata); values are parameters
            statement = (f"WITH seen AS ({seen_sql}), logged AS ({records_sql}) "  # noqa: S608
                         "SELECT client, message_id FROM seen")
            values = seen_values + flattened(rows)

            def one(cursor: Any) -> list[Any]:
                cursor.execute(statement, values)
                return list(cursor.fetchall())

            return self._db.run(one, single_statement=True)
        record_sql = self._record_sql

        def both(cursor: Any) -> list[Any]:  # SQLite, or a larger PostgreSQL batch
            cursor.executemany(record_sql, rows)
            cursor.execute(seen_sql, seen_values)
            return list(cursor.fetchall())

        return self._db.run(both)

    async def _prune_reservations(self) -> None:
        assert self._db is not None and self._prune_before is not None
        before, self._prune_before = self._prune_before, None
        try:
            await self._db.execute(self._prune_sql, (before,))
        except Exception as exc:
            log.warning("cannot prune old replay reservations", node=self._node,
                        error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])

    async def _write_checkpoint(self) -> None:
        assert self._db is not None and self._signer is not None
        self._last_cp_time = time.monotonic()
        try:
            if self._reload:
                await self._reload_state()
                if not self._pending_hashes:
                    return
            checkpoint = CheckpointRecord(
                first_seq=self._last_cp + 1, last_seq=self._head_seq,
                merkle_root=merkle_root(self._pending_hashes), chain_head=self._head_hash,
                previous_checkpoint=self._last_cp)
            seq = self._head_seq + 1
            at = format_time(self._clock())
            content = canonical_bytes(self._node, seq, at, checkpoint)
            digest = chain_hash(self._head_hash, content)
            signer, sql = self._signer, self._record_sql
            row = (self._node, seq, "checkpoint", at, None, self._head_hash, digest, content,
                   None, None)

            def sign_and_insert(cursor: Any) -> None:  # on the database thread
                cursor.execute(sql, (*row, signer(content)))

            await self._db.run(sign_and_insert, single_statement=True)
        except Exception as exc:
            self._fail("cannot write a checkpoint", exc)
            return
        self._head_seq, self._head_hash, self._last_cp = seq, digest, seq
        self._pending_hashes = []
        self._last_error = None
        try:
            await asyncio.to_thread(write_anchor, self._anchor_path,
                                    Anchor(self._node, seq, digest, at))
        except OSError as exc:
            log.warning("cannot write the log head file", path=str(self._anchor_path),
                        error=str(exc))
        if self._timestamper is not None:
            self._ts_pending.append((seq, at, content))
            self._ts_drained.clear()
            self._ts_wake.set()

    def _system(self, event: Any, detail: str) -> None:
        """Queue a system record from a background task (nobody waits for it)."""
        if not self._running:
            return
        future = self._enqueue(SystemRecord(event=event, detail=detail), Evidence()).future
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _timestamp_loop(self) -> None:
        assert self._timestamper is not None and self._db is not None
        while not self._stopping.is_set():
            if not self._ts_pending:
                self._ts_drained.set()
                self._ts_wake.clear()
                await self._ts_wake.wait()
                continue
            seq, at, content = self._ts_pending[0]
            try:
                token = await self._stamp(content)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                if not self._tsa_failing:
                    self._tsa_failing = True
                    log.warning("TSA unreachable; checkpoints wait for timestamps",
                                node=self._node, url=self._config.tsa.url, error=error)
                    self._system("tsa-failure", f"{self._config.tsa.url}: {error}")
                self._tsa_error = error
                if self._closing:
                    self._ts_drained.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._tsa_retry)
                continue
            row = (self._node, seq, token, format_time(self._clock()))
            try:
                await self._db.execute(self._timestamp_sql, row)
            except Exception as exc:
                self._fail("cannot store a checkpoint timestamp", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._tsa_retry)
                continue
            self._ts_pending.pop(0)
            if self._tsa_failing:
                self._tsa_failing = False
                self._tsa_error = None
                log.info("TSA answers again", node=self._node, url=self._config.tsa.url)
                self._system("tsa-recovered",
                             f"{self._config.tsa.url}: checkpoints from {at} on timestamped")

    async def _stamp(self, content: bytes) -> bytes:
        assert self._timestamper is not None
        try:
            return await self._timestamper(content)
        except Exception as exc:
            if self._ts_client is None or not _connection_lost(exc):
                raise
        # The kept-alive connection may be one the TSA dropped (it restarted): forget it
        # and ask once more on a new connection before calling the TSA unreachable.
        await self._ts_client.close()
        return await self._timestamper(content)

    async def _poll_admin(self) -> None:
        async with self._admin_lock:
            await self._poll_admin_locked()

    async def _poll_admin_locked(self) -> None:
        assert self._db is not None
        sql = ("SELECT id, at, actor, action, object, before, after FROM admin_events "  # noqa: S608
               f"WHERE id > {self._db.placeholder} ORDER BY id LIMIT 500")  # (the driver's marker)
        last = self._last_admin_id

        def read(cursor: Any) -> list[Any]:  # on the database thread: one hand-off
            cursor.execute(sql, (last,))
            return list(cursor.fetchall())

        rows = await self._db.run(read, single_statement=True)
        records: list[AdminRecord] = []
        expected = self._last_admin_id + 1
        now = time.monotonic()
        for row_id, at, actor, action, obj, before, after in rows:
            event_id = int(row_id)
            if event_id != expected:
                # A lower id may still be uncommitted (PostgreSQL sequences): wait a little
                # before treating the gap as a rolled-back insert.
                first_seen = self._admin_gaps.setdefault(event_id, now)
                if now - first_seen < ADMIN_GAP_WAIT:
                    break
            event_at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
            if event_at.tzinfo is None:
                event_at = event_at.replace(tzinfo=UTC)
            records.append(AdminRecord(event_id=event_id, event_at=event_at, actor=actor,
                                       action=action, object=obj, before=before, after=after))
            expected = event_id + 1
        if not records:
            return
        futures = [self._enqueue(r, Evidence()).future for r in records]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for record, result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            self._last_admin_id = record.event_id
            self._admin_gaps.pop(record.event_id, None)

    async def _admin_loop(self) -> None:
        while True:
            try:
                await self._poll_admin()
                self._admin_error = None
            except Exception as exc:
                self._admin_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._admin_poll)
            if self._stopping.is_set() or not self._running:
                return
