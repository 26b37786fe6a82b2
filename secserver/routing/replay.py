"""Replay protection on the provider side: a message id is accepted once per client.

Ids are remembered in memory (immediate refusal of a duplicate, even one still in flight)
and in the ``exchange_seen_messages`` table of the node's database, so a replay is refused
across restarts and across nodes sharing one database. The table is written by the message
log (``LogWriter.append_reserving``): the reservation goes into the same transaction as the
request's log record, so one durable commit covers both and nothing is forwarded before
both are stored. The database's verdict comes from that transaction (``INSERT ... ON
CONFLICT DO NOTHING``: a row that was not inserted is a replay; its request record is
committed all the same, and the other records of the batch are not affected). Messages
signed more than ``window`` seconds ago are refused by the provider anyway, so ids older
than the window are pruned, from memory at once and from the table on the log's database
thread.
"""

from __future__ import annotations

from typing import Protocol

from secserver.audit.records import MessageRecord
from secserver.audit.writer import seen_messages
from secserver.routing.errors import DuplicateMessageId

__all__ = ["PRUNE_INTERVAL", "REPLAY_WINDOW", "ReplayGuard", "ReservationLog",
           "seen_messages"]

REPLAY_WINDOW = 600.0  # seconds; also the accepted age of a request's signing time
PRUNE_INTERVAL = 60.0  # seconds between prunes of ids older than the window

Key = tuple[str, str]


class ReservationLog(Protocol):
    """The part of ``secserver.audit.writer.LogWriter`` the guard uses."""

    async def append_reserving(self, record: MessageRecord, client: str, message_id: str,
                               seen_at: float) -> tuple[int, bool]: ...

    def prune_reservations(self, before: float) -> None: ...


def _duplicate(client: str, message_id: str) -> DuplicateMessageId:
    return DuplicateMessageId(f"message id {message_id!r} of client {client} was already "
                              "received; every message needs a new id")


class ReplayGuard:
    """``await log_request(record, client, message_id, now)`` logs the request record with
    its reservation, or raises DuplicateMessageId."""

    def __init__(self, log: ReservationLog, window: float = REPLAY_WINDOW) -> None:
        self._log = log
        self._window = window
        self._memory: dict[Key, float] = {}
        self._last_prune = 0.0

    async def log_request(self, record: MessageRecord, client: str, message_id: str,
                          now: float) -> int:
        """Refuse a duplicate known here at once; else commit the request's log record
        together with the reservation of its id and return the record's seq.

        Raises DuplicateMessageId when the id is in memory (then nothing is logged here)
        or already in the database (another node sharing it, or before a restart: then
        the record is logged first), and ``LoggingFailed`` when the commit failed (neither
        was stored, and the id is forgotten here, so the caller may retry with it). Await
        it before anything is forwarded.
        """
        key = (client, message_id)
        seen = self._memory.get(key)
        if seen is not None and now - seen < self._window:
            raise _duplicate(client, message_id)
        self._memory[key] = now
        if now - self._last_prune > PRUNE_INTERVAL:
            self._prune(now)
        try:
            seq, new = await self._log.append_reserving(record, client, message_id, now)
        except BaseException:
            # nothing was forwarded: a retry with this id may go on (should the commit
            # have stored the reservation after all, the database refuses the retry)
            if self._memory.get(key) == now:
                del self._memory[key]
            raise
        if not new:
            raise _duplicate(client, message_id)
        return seq

    def _prune(self, now: float) -> None:
        self._last_prune = now
        limit = now - self._window
        self._memory = {k: at for k, at in self._memory.items() if at >= limit}
        self._log.prune_reservations(limit)
