"""Replay protection on the provider side: a message id is accepted once per client.

Ids are remembered in memory (immediate refusal of a duplicate, even one still in flight)
and in the ``exchange_seen_messages`` table, so a replay is refused across restarts and
across nodes sharing one database. Inserts are grouped: concurrent requests share one
transaction (under load the next batch gathers for a few event-loop iterations first, like
the message log's: ``secserver.db.committer.BatchGather``), and the provider awaits it
together with the request's log record. The
transactions run on a thread of their own (``secserver.db.committer.CommitThread``: one
synchronous connection, one hand-off per batch). On SQLite the table lives in its own
database file (``data_dir/replay.db``) so its commits never wait for the message log's
write lock. Messages signed more than ``window`` seconds ago are refused by the provider
anyway, so rows older than the window are pruned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from secserver.aio import cancel_and_wait
from secserver.db.committer import BatchGather, CommitThread, DatabaseWriteError, plain_url
from secserver.routing.errors import DuplicateMessageId, InternalError

log = logging.getLogger(__name__)

REPLAY_WINDOW = 600.0  # seconds; also the accepted age of a request's signing time
GATHER_LIMIT = 256  # reservations at which a gathering batch goes at once

_metadata = sa.MetaData()
seen_messages = sa.Table(
    "exchange_seen_messages", _metadata,
    sa.Column("client", sa.String(400), primary_key=True),
    sa.Column("message_id", sa.String(128), primary_key=True),
    sa.Column("seen_at", sa.Float(), nullable=False),
)

Key = tuple[str, str]


def _duplicate(client: str, message_id: str) -> DuplicateMessageId:
    return DuplicateMessageId(f"message id {message_id!r} of client {client} was already "
                              "received; every message needs a new id")


class ReplayGuard:
    """``await check_and_record(client, message_id, now)`` raises DuplicateMessageId."""

    TASK_NAME = "secserver-replay-flush"

    def __init__(self, engine: AsyncEngine, window: float = REPLAY_WINDOW) -> None:
        """``engine`` names the database (its URL); the guard writes on a connection of
        its own."""
        self._db = CommitThread(plain_url(engine), name="replay-store-db")
        self._insert = self._db.insert_sql(seen_messages, ("client", "message_id", "seen_at"))
        self._prune_sql = (f"DELETE FROM exchange_seen_messages WHERE seen_at < "  # noqa: S608
                           f"{self._db.placeholder}")
        self._window = window
        self._memory: dict[Key, float] = {}
        self._pending: list[tuple[Key, float, asyncio.Future[bool]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self.gather = BatchGather(limit=GATHER_LIMIT)
        """Batches and reservations committed, iterations spent gathering."""

    async def start(self) -> None:
        self._db.start()
        self._task = asyncio.create_task(self._run(), name=self.TASK_NAME)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for _key, _at, future in self._pending:
            if not future.done():
                future.set_exception(InternalError("the node is shutting down"))
        self._pending.clear()
        await self._db.stop()
        log.info("replay store stopped: %d batches, %d reservations, %d gather iterations",
                 self.gather.batches, self.gather.records, self.gather.iterations)

    def reserve(self, client: str, message_id: str, now: float) -> Awaitable[None]:
        # the returned coroutine must be awaited: call reserve only right before that
        """Refuse a duplicate known here at once; return the durable check to await.

        The returned awaitable raises DuplicateMessageId when another node sharing the
        database saw the id first. Await it (together with the request's log record)
        before anything is forwarded.
        """
        key = (client, message_id)
        seen = self._memory.get(key)
        if seen is not None and now - seen < self._window:
            raise _duplicate(client, message_id)
        self._memory[key] = now
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((key, now, future))
        self._wakeup.set()
        return self._settle(future, client, message_id)

    async def _settle(self, future: asyncio.Future[bool], client: str,
                      message_id: str) -> None:
        if not await future:
            raise _duplicate(client, message_id)

    async def check_and_record(self, client: str, message_id: str, now: float) -> None:
        await self.reserve(client, message_id, now)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._pending:
                await self.gather.gather(self._waiting)
            batch, self._pending = self._pending, []
            if batch:
                await self._flush(batch)
                self.gather.committed(len(batch), len(self._pending))
            now = max((at for _k, at, _f in batch), default=0.0)
            if now - self._last_prune > 60.0:
                await self._prune(now)

    def _waiting(self) -> int:
        return len(self._pending)

    async def _flush(self, batch: list[tuple[Key, float, asyncio.Future[bool]]]) -> None:
        rows = [(k[0], k[1], at) for k, at, _f in batch]
        try:
            try:
                await self._db.executemany(self._insert, rows)
                results = [True] * len(batch)
            except DatabaseWriteError as exc:
                if not exc.integrity:
                    raise
                results = []
                for row in rows:  # someone in the batch is a replay: find out who
                    try:
                        await self._db.execute(self._insert, row)
                        results.append(True)
                    except DatabaseWriteError as again:
                        if not again.integrity:
                            raise
                        results.append(False)
        except DatabaseWriteError as exc:
            log.error("replay store write failed: %s", exc)
            for _k, _at, future in batch:
                if not future.done():
                    future.set_exception(InternalError(
                        "the replay store cannot be written; the message was not processed"))
            return
        for (_k, _at, future), ok in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(ok)

    async def _prune(self, now: float) -> None:
        self._last_prune = now
        limit = now - self._window
        self._memory = {k: at for k, at in self._memory.items() if at >= limit}
        try:
            await self._db.execute(self._prune_sql, (limit,))
        except DatabaseWriteError as exc:
            log.warning("replay store prune failed: %s", exc)
