"""A thread that owns one synchronous database connection and commits jobs for asyncio code.

aiosqlite and SQLAlchemy's asyncio layer hand every DB-API call (cursor, execute, commit,
cursor close, rollback on return to the pool) to a worker thread and back: about eight
thread switches per transaction, each a context switch and a GIL transfer. A
``CommitThread`` takes a whole transaction as one job instead: the event loop puts the job
on a queue, the thread runs it with a cursor of its own connection (pysqlite or psycopg,
opened through ``make_engine``, so SQLite runs in WAL with ``synchronous=FULL``), commits,
and resolves the job's future with ``call_soon_threadsafe``: one hand-off each way.

On PostgreSQL the connection is in autocommit mode: a job that is one statement
(``execute``, and ``executemany`` of up to ``PG_MULTIROW_MAX`` rows into an
``INSERT ... VALUES``, sent as one multi-row statement) is its own transaction and costs
one round trip to the server; other jobs run between ``BEGIN`` and ``COMMIT``.

On SQLite, a job submitted while the thread is idle and no group commit of the process
saw concurrency at its last commit (``BatchGather``: low load) runs in the event loop
itself instead, on the same connection (``run``: an inline commit). At concurrency 1 that
saves both hand-offs (25-40 µs of CPU, about six context switches and 0.05-0.3 ms of wall
time per commit here) for blocking the loop during one commit, which it would spend
waiting for that commit anyway; once concurrency shows, jobs go to the thread again and
the loop serves other requests while they commit. An inline job never waits for another
connection's write lock (it goes to the thread instead). Never on PostgreSQL (a round trip
to another process; a stalled server would freeze the loop).

SQLite's WAL checkpoints (copying committed pages from the WAL into the database file,
with their own fsyncs) no longer run inside a commit: every ``CHECKPOINT_COMMITS`` commits
a ``PASSIVE`` checkpoint is queued on the thread, so it never blocks the event loop or
delays the commit that crossed SQLite's threshold; under load it copies more commits at
once (a page written by several of them is copied once). The connection's own automatic
checkpoint stays as a backstop at ``AUTOCHECKPOINT_PAGES``.

Jobs run one at a time in the order they were submitted, so commit order is submission
order. A job's future gets its result only once its transaction has committed (durably:
SQLite ``synchronous=FULL``, PostgreSQL's default ``synchronous_commit``). A job that
raises, or a commit that fails, is rolled back and its future gets ``DatabaseWriteError``;
a connection that is broken or cannot even roll back is dropped and the next job opens a
new one (a database that went away and came back is picked up again).

    db = CommitThread(url, name="log-writer-db")
    db.start()                               # in the event loop
    sql = db.insert_sql(table, ("a", "b"))   # the driver's placeholders
    await db.executemany(sql, rows)          # or db.run(job): job(cursor) -> result
    await db.stop()

A group commit with one batch in flight (the log writer, which also carries the provider's
replay reservations) asks a ``BatchGather`` when to hand its next batch over: at once when
the last batch held one record and nothing arrived while it committed (low load: a lone
record is never held back), otherwise after ``GATHER_ROUNDS`` event-loop iterations or as
soon as the batch is full. A commit costs a thread switch, an fsync and (in a VM) an exit
whatever its size; a yielded iteration costs the loop nothing it would not do anyway (an
idle one a few microseconds), and the extra wait is bounded by the loop's own work in
those iterations.
No timer: uvloop's have 1 ms resolution, longer than a whole idle gather.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, Table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from secserver.db.engine import SQLITE_BUSY_TIMEOUT_MS, is_sqlite, make_engine

T = TypeVar("T")

Job = Callable[[Any], T]
"""Runs inside the transaction with a DB-API cursor; its return value is the result."""


class DatabaseWriteError(Exception):
    """A job or its commit failed (the transaction was rolled back).

    ``integrity`` is true when the database refused the data itself (a unique key already
    present, a constraint), not because it could not be reached.
    """

    def __init__(self, message: str, *, integrity: bool = False) -> None:
        super().__init__(message)
        self.integrity = integrity


def plain_url(engine: AsyncEngine) -> str:
    """The URL of an asyncio engine in its plain form (``sqlite:///...``,
    ``postgresql://...``), for ``make_engine`` to pick the synchronous driver."""
    url = engine.url
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)


PG_MAX_PARAMETERS = 65535  # per statement (the protocol counts them in 16 bits)
PG_MULTIROW_MAX = 16
"""Rows up to which one multi-row ``INSERT`` beats a pipelined ``executemany`` between
``BEGIN`` and ``COMMIT`` (measured: 0.25 vs 0.51 ms for 1 row, 0.57 vs 0.70 ms for 10,
1.78 vs 1.44 ms for 50 log-record rows, with psycopg 3.3 against a local server)."""


CHECKPOINT_COMMITS = 100
"""SQLite: a ``PASSIVE`` WAL checkpoint is queued on the thread after this many commits,
off the commit path (see ``CommitThread``)."""
AUTOCHECKPOINT_PAGES = 10_000
"""SQLite: the WAL size (pages) at which a commit checkpoints on its own, should the
queued checkpoints fall behind (SQLite's default is 1,000)."""

GATHER_ROUNDS = 16
"""Event-loop iterations a batch may wait for more records under load (see
``BatchGather``)."""


class BatchGather:
    """Decides how long a group commit's next batch gathers (see the module docstring).

    ``committed(size, waiting)`` after each commit: ``size`` records went into it,
    ``waiting`` arrived while it ran. ``await gather(waiting)`` before taking the next
    batch: returns at once unless the last commit showed concurrency; otherwise yields one
    event-loop iteration at a time (``asyncio.sleep(0)``) until ``rounds`` iterations have
    passed or ``waiting()`` reaches ``limit``. (Stopping at the first iteration that brought
    nothing gathered less on one shared core, where records come in once the other
    processes have run: 12.7 against 15 records per commit under load.)
    """

    def __init__(self, *, limit: int, rounds: int = GATHER_ROUNDS) -> None:
        self._limit = max(1, limit)
        self._rounds = max(0, rounds)
        self._busy = False
        self.batches = 0
        """Batches committed so far."""
        self.records = 0
        """Records in those batches."""
        self.iterations = 0
        """Event-loop iterations yielded while gathering, in all."""

    @property
    def busy(self) -> bool:
        """The last commit showed concurrency: the next batch gathers."""
        return self._busy

    def committed(self, size: int, waiting: int) -> None:
        self.batches += 1
        self.records += size
        self._busy = size > 1 or waiting > 0
        if self._busy:
            _BUSY_GATHERS.add(self)
        else:
            _BUSY_GATHERS.discard(self)

    async def gather(self, waiting: Callable[[], int]) -> int:
        """Yield iterations as described above; return how many."""
        if not self._busy:
            return 0
        seen = waiting()
        rounds = 0
        while rounds < self._rounds and seen < self._limit:
            await asyncio.sleep(0)
            rounds += 1
            seen = waiting()
        self.iterations += rounds
        return rounds


_BUSY_GATHERS: weakref.WeakSet[BatchGather] = weakref.WeakSet()
"""The gathers of this process whose last commit showed concurrency."""


def concurrency_seen() -> bool:
    """Some group commit of this process saw concurrency at its last commit."""
    return bool(_BUSY_GATHERS)


def multirow_insert(sql: str, count: int) -> str:
    """An ``INSERT ... VALUES (...)`` of ``insert_sql`` for ``count`` rows in one statement
    (its parameters: the rows' values one after another, ``flattened``)."""
    head, group = sql.rsplit(" VALUES ", 1)
    return f"{head} VALUES {', '.join([group] * count)}"


def flattened(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The parameters of ``multirow_insert``'s statement."""
    return [value for row in rows for value in row]


class _Item(Generic[T]):
    __slots__ = ("counted", "future", "job", "single")

    def __init__(self, job: Job[T], future: asyncio.Future[T], single: bool,
                 counted: bool = True) -> None:
        self.job = job
        self.future = future
        self.single = single
        self.counted = counted


def _locked(error: BaseException) -> bool:
    """The job failed because another connection held SQLite's write lock (nothing of it
    was committed)."""
    cause = error.__cause__
    return isinstance(cause, sqlite3.OperationalError) \
        and getattr(cause, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _checkpoint(cursor: Any) -> None:
    """A passive WAL checkpoint: copies what no reader needs into the database file (and
    fsyncs it); never waits for a lock; a failure leaves the WAL as it was."""
    with contextlib.suppress(Exception):
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        cursor.fetchall()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class CommitThread:
    """One connection, one thread, jobs committed in order (see the module docstring)."""

    def __init__(self, url: str, *, name: str, inline: bool | None = None) -> None:
        """``inline``: run a job in the event loop when that is cheaper (see ``run``);
        default: on SQLite only."""
        self._url = make_url(url).render_as_string(hide_password=False)
        self._name = name
        self._sqlite = is_sqlite(url)
        self._inline = self._sqlite if inline is None else inline
        self._jobs: queue.SimpleQueue[_Item[Any] | None] = queue.SimpleQueue()
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self._raw: Any = None  # the connection: used by the thread while jobs are queued
        self._queued = 0  # jobs handed to the thread and not yet settled (event loop only)
        self._integrity_error: type[BaseException] = Exception
        self._checkpointed = 0  # self.commits when the last checkpoint was queued
        self.checkpoints = 0
        """SQLite: WAL checkpoints queued on the thread so far."""
        self.commits = 0
        """Transactions committed so far (read from the event loop: a plain int)."""
        self.inline_commits = 0
        """Of those, committed in the event loop itself (see ``run``)."""
        self.inline_locked = 0
        """Inline attempts that found the database locked and went to the thread."""
        self._busy_timeout_ms = SQLITE_BUSY_TIMEOUT_MS  # of the connection (SQLite)

    @property
    def placeholder(self) -> str:
        """The DB-API parameter marker of the driver: ``?`` (pysqlite) or ``%s``
        (psycopg)."""
        return "?" if self._sqlite else "%s"

    def insert_sql(self, table: Table, columns: Sequence[str]) -> str:
        """``INSERT INTO table (columns) VALUES (?, ...)`` for the driver: rows are tuples
        in the order of ``columns`` (each must be a column of ``table``)."""
        engine = self._require_engine()
        quote = engine.dialect.identifier_preparer.quote
        names = ", ".join(quote(table.c[name].name) for name in columns)
        marks = ", ".join([self.placeholder] * len(columns))
        # identifiers from table metadata, quoted by the dialect; values are parameters
        return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"  # noqa: S608

    def start(self) -> None:
        """Start the thread (call from the event loop that will await the jobs). The
        connection is opened by the first job."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._closing = False
        self._integrity_error = self._require_engine().dialect.loaded_dbapi.IntegrityError
        self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._thread.start()

    def run(self, job: Job[T], *, single_statement: bool = False) -> asyncio.Future[T]:
        """Queue ``job``; the future resolves once its transaction has committed.

        ``single_statement``: the job runs exactly one statement, which is atomic on its
        own (no ``BEGIN``/``COMMIT`` round trips on PostgreSQL).

        Inline commit: when the thread is idle (nothing queued or running), its connection
        is open, and no group commit of this process saw concurrency at its last commit
        (``BatchGather.busy``: low load), the job runs here in the event loop instead, and
        the future is already settled when ``run`` returns. That saves the two thread
        hand-offs of a commit (queue put, futex wake-up and GIL transfer; the loop's
        wake-up by ``call_soon_threadsafe``) and blocks the loop for one commit (its fsync
        included), which it would otherwise spend waiting for this very commit; as soon as
        a batch holds more than one record, or records arrive while one commits, jobs go
        to the thread again and the loop keeps serving while they commit. Same
        connection, same order, same durability and failure handling either way. An
        inline job never waits for SQLite's write lock: when another connection (an admin
        command, an archive purge) holds it, the job is rolled back at once and goes to
        the thread, which waits for the lock as before (so a job may run twice; only the
        second run's transaction is committed)."""
        if self._loop is None or self._closing or self._thread is None \
                or not self._thread.is_alive():
            raise DatabaseWriteError(f"{self._name}: the database thread is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        item = _Item(job, future, single_statement)
        if self._inline and not self._queued and self._raw is not None \
                and not _BUSY_GATHERS and self._no_lock_wait():
            result, error = self._execute(item)
            if error is None or not _locked(error):
                if error is None:
                    self.inline_commits += 1
                _settle(future, result, error)
                self._checkpoint_when_due()
                return future
            self.inline_locked += 1  # another connection writes: wait on the thread
        self._queued += 1
        self._jobs.put(item)
        return future

    def execute(self, sql: str, parameters: Sequence[Any]) -> asyncio.Future[None]:
        """One statement in a transaction of its own."""
        def job(cursor: Any) -> None:
            cursor.execute(sql, parameters)
        return self.run(job, single_statement=True)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> asyncio.Future[None]:
        """One statement for many rows, in one transaction (all rows or none)."""
        if not self._sqlite and 0 < len(rows) <= PG_MULTIROW_MAX \
                and " VALUES (" in sql and sql.endswith(")"):
            statement = multirow_insert(sql, len(rows))
            flat = flattened(rows)

            def one(cursor: Any) -> None:
                cursor.execute(statement, flat)
            return self.run(one, single_statement=True)

        def job(cursor: Any) -> None:
            cursor.executemany(sql, rows)
        return self.run(job)

    async def stop(self) -> None:
        """Run what is queued, close the connection and end the thread."""
        if self._thread is None or self._stopped is None:
            return
        self._closing = True
        self._jobs.put(None)
        await asyncio.shield(self._stopped)
        self._thread.join()
        self._thread = None
        if self._engine is not None:
            self._engine.dispose()

    # -- the thread ----------------------------------------------------------------------

    def _require_engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self._url, poolclass=NullPool)
        return self._engine

    def _reply(self, item: _Item[Any] | None, result: Any,
               error: BaseException | None) -> None:
        """From the thread: settle ``item`` (None: the stop future) in the event loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._settle_item, item, result, error)

    def _settle_item(self, item: _Item[Any] | None, result: Any,
                     error: BaseException | None) -> None:
        if item is None:
            if self._stopped is not None:
                _settle(self._stopped, None, None)
            return
        self._queued -= 1
        _settle(item.future, result, error)
        self._checkpoint_when_due()

    def _checkpoint_when_due(self) -> None:
        """SQLite: queue a checkpoint on the thread every ``CHECKPOINT_COMMITS`` commits
        (a job that arrives meanwhile queues behind it instead of running inline)."""
        if self._sqlite and self.commits - self._checkpointed >= CHECKPOINT_COMMITS \
                and not self._closing and self._loop is not None:
            self._checkpointed = self.commits
            self.checkpoints += 1
            self._queued += 1
            future: asyncio.Future[None] = self._loop.create_future()
            future.add_done_callback(_retrieved)  # nobody awaits it
            self._jobs.put(_Item(_checkpoint, future, True, counted=False))

    def _set_busy_timeout(self, milliseconds: int) -> None:
        """SQLite: how long a write waits for another connection's write lock. An inline
        job never waits (the event loop would stand still): it is retried on the
        thread, which waits as long as ``make_engine`` allows."""
        if self._busy_timeout_ms != milliseconds and self._raw is not None:
            self._raw.dbapi_connection.execute(f"PRAGMA busy_timeout={int(milliseconds)}")
            self._busy_timeout_ms = milliseconds

    def _no_lock_wait(self) -> bool:
        """Before an inline job: the connection will not wait for a write lock (false if
        it cannot even be told so; the thread then finds out what is wrong)."""
        try:
            self._set_busy_timeout(0)
        except Exception:
            return False
        return True

    def _execute(self, item: _Item[Any]) -> tuple[Any, BaseException | None]:
        """Run one job in its transaction on the connection (opened if needed); return
        its result, or the ``DatabaseWriteError`` after rolling back."""
        try:
            raw: Any = self._raw
            if raw is None:
                raw = self._raw = self._require_engine().raw_connection()
                if not self._sqlite:
                    raw.dbapi_connection.autocommit = True
                else:  # checkpoints are queued on the thread (_checkpoint_when_due)
                    raw.dbapi_connection.execute(
                        f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            connection = raw.dbapi_connection
            cursor = connection.cursor()
            try:
                if self._sqlite:
                    result = item.job(cursor)
                    connection.commit()
                elif item.single:
                    result = item.job(cursor)  # autocommit: durable once it returns
                else:
                    with connection.transaction():
                        result = item.job(cursor)
            finally:
                cursor.close()
        except Exception as exc:
            self._raw = self._rolled_back(self._raw)
            error = DatabaseWriteError(f"{type(exc).__name__}: {exc}",
                                       integrity=isinstance(exc, self._integrity_error))
            error.__cause__ = exc
            return None, error
        if item.counted:
            self.commits += 1
        return result, None

    def _serve(self) -> None:
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                if self._sqlite:
                    with contextlib.suppress(Exception):  # a broken one fails the job
                        self._set_busy_timeout(SQLITE_BUSY_TIMEOUT_MS)
                result, error = self._execute(item)
                self._reply(item, result, error)
        finally:
            if self._raw is not None:
                with contextlib.suppress(Exception):
                    self._raw.close()
                self._raw = None
            self._fail_queued()
            self._reply(None, None, None)

    @staticmethod
    def _rolled_back(raw: Any) -> Any:
        """Roll back after a failure; drop the connection if even that fails."""
        if raw is None:
            return None
        try:
            if getattr(raw.dbapi_connection, "broken", False):
                raise ConnectionError("the connection is broken")
            raw.dbapi_connection.rollback()
        except Exception:
            with contextlib.suppress(Exception):
                raw.invalidate()
            return None
        return raw

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._reply(item, None, DatabaseWriteError(
                    f"{self._name}: the database thread stopped before this write"))
