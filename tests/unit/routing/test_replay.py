"""The replay guard over real log writers (SQLite and PostgreSQL): the reservation commits
with the request's log record; duplicates refused from memory, from another node sharing
the database and after a restart; a refused replay fails nothing else; fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "audit"))

from audit_support import (
    MemberSigners,
    db_rows,
    node_config,
    pki_fixture,  # noqa: F401 (the pki fixture)
    sample_message,
    wait_for,
)

from secserver.audit.checks import verify_node_log
from secserver.audit.errors import LoggingFailed
from secserver.audit.writer import LogWriter
from secserver.config import NodeConfig
from secserver.routing.errors import DuplicateMessageId
from secserver.routing.replay import PRUNE_INTERVAL, ReplayGuard


def logged(url: str, node: str) -> list[str]:
    """Message ids of a node's message records, in log order."""
    return [str(m) for (m,) in db_rows(
        url, "SELECT message_id FROM log_records WHERE node_id = :node AND kind = 'message' "
             "ORDER BY seq", node=node)]


def seen(url: str) -> list[tuple[str, str]]:
    return sorted((str(c), str(m)) for c, m in db_rows(
        url, "SELECT client, message_id FROM exchange_seen_messages"))


class Node:
    """A log writer and the replay guard over it, as ``secserver serve`` wires them."""

    def __init__(self, config: NodeConfig, pki: Path, window: float = 600) -> None:
        self.config = config
        self.writer = LogWriter(config)
        self.guard = ReplayGuard(self.writer, window=window)
        self.signers = MemberSigners(pki)
        self.numbers = 0

    async def request(self, client: str, message_id: str, now: float) -> int:
        """Log a request record (its own message id: ``message_id`` is the reserved
        one) with the reservation."""
        self.numbers += 1
        record = sample_message(self.signers, self.numbers)
        return await self.guard.log_request(record, client, message_id, now)


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, url: str, pki: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes sharing one database, their log writers running."""
    toyono = Node(node_config(tmp_path / "toyono", url, pki), pki)
    otta = Node(node_config(tmp_path / "otta", url, pki, node="JP-DEV/COM/OTTA/SS1",
                            node_dir="COM.OTTA.SS1"), pki)
    await toyono.writer.start()
    try:
        await otta.writer.start()
        try:
            yield toyono, otta
        finally:
            await otta.writer.stop()
    finally:
        await toyono.writer.stop()


async def test_duplicates_are_refused_in_memory_across_nodes_and_after_restart(
        migrated_url: str, tmp_path: Path, pki: Path) -> None:
    async with two_nodes(tmp_path, migrated_url, pki) as (first, second):
        first_config, second_config = first.config, second.config
        await first.request("C/1", "m1", 1000.0)
        await first.request("C/2", "m1", 1000.0)  # ids are per client
        with pytest.raises(DuplicateMessageId, match="'m1' of client C/1"):
            await first.request("C/1", "m1", 1001.0)  # same node: memory, nothing logged
        assert len(logged(migrated_url, str(first_config.node.server_id))) == 2
        with pytest.raises(DuplicateMessageId):
            await second.request("C/1", "m1", 1001.0)  # another node: the database
        # ... which logged the request record all the same (the handler adds the failure)
        assert len(logged(migrated_url, str(second_config.node.server_id))) == 1
        await second.request("C/1", "m2", 1001.0)
    restarted = Node(first_config, pki)
    await restarted.writer.start()
    try:
        with pytest.raises(DuplicateMessageId):
            await restarted.request("C/2", "m1", 1002.0)  # fresh memory: the database
        await restarted.request("C/2", "m3", 1002.0)
    finally:
        await restarted.writer.stop()
    assert seen(migrated_url) == [("C/1", "m1"), ("C/1", "m2"), ("C/2", "m1"), ("C/2", "m3")]
    for config in (first_config, second_config):
        assert verify_node_log(config).ok


async def test_a_replay_in_a_batch_fails_none_of_its_neighbours(
        migrated_url: str, tmp_path: Path, pki: Path) -> None:
    async with two_nodes(tmp_path, migrated_url, pki) as (old, new):
        new_config = new.config
        await old.request("C/1", "seen", 5.0)
        before = new.writer.health()["batches"]
        results: list[Any] = await asyncio.gather(
            *(new.request("C/1", f"n{i}", 6.0) for i in range(3)),
            new.request("C/1", "seen", 6.0),
            *(new.request("C/1", f"n{i}", 6.0) for i in range(3, 6)),
            return_exceptions=True)
        assert new.writer.health()["batches"] - before == 1  # one batch, one commit
    assert [isinstance(r, int) for r in results] == [True] * 3 + [False] + [True] * 3
    assert isinstance(results[3], DuplicateMessageId)
    assert seen(migrated_url) == sorted(
        [("C/1", "seen")] + [("C/1", f"n{i}") for i in range(6)])
    assert len(logged(migrated_url, str(new_config.node.server_id))) == 7  # all logged
    assert verify_node_log(new_config).ok


async def test_a_failed_commit_lets_no_request_through(
        migrated_url: str, tmp_path: Path, pki: Path) -> None:
    config = node_config(tmp_path, migrated_url, pki)
    node = Node(config, pki)
    await node.writer.start()
    try:
        for away in ("exchange_seen_messages", "log_records"):
            db_rows(migrated_url, f"ALTER TABLE {away} RENAME TO moved_away")
            try:
                results = await asyncio.gather(
                    node.request("C/1", f"a-{away}", 7.0),
                    node.request("C/1", f"b-{away}", 7.0), return_exceptions=True)
            finally:
                db_rows(migrated_url, f"ALTER TABLE moved_away RENAME TO {away}")
            assert all(isinstance(r, LoggingFailed) for r in results), results
            assert seen(migrated_url) == []
            assert logged(migrated_url, str(config.node.server_id)) == []
        # nothing went through, so the same ids may be sent again once the log works
        for away in ("exchange_seen_messages", "log_records"):
            await node.request("C/1", f"a-{away}", 9.0)
        assert seen(migrated_url) == [("C/1", "a-exchange_seen_messages"),
                                      ("C/1", "a-log_records")]
        db_rows(migrated_url, "DELETE FROM exchange_seen_messages")
        # the writer still refuses a reservation whose record cannot be appended
        await node.writer.stop()
        with pytest.raises(LoggingFailed, match="not running"):
            await node.request("C/1", "late", 8.0)
        assert seen(migrated_url) == []
    finally:
        await node.writer.stop()


async def test_ids_older_than_the_window_are_pruned(migrated_url: str, tmp_path: Path,
                                                    pki: Path) -> None:
    node = Node(node_config(tmp_path, migrated_url, pki), pki, window=10)
    await node.writer.start()
    try:
        start = 1000.0
        await node.request("C/1", "old", start)
        later = start + PRUNE_INTERVAL + 1
        await node.request("C/1", "new", later)  # prunes what is older than the window
        await wait_for(lambda: seen(migrated_url) == [("C/1", "new")], timeout=10)
        # past the window the provider refuses the old message by its signing time; the id
        # itself is forgotten in memory and in the table
        await node.request("C/1", "old", later + 1)
        with pytest.raises(DuplicateMessageId):
            await node.request("C/1", "new", later + 2)
    finally:
        await node.writer.stop()
    assert seen(migrated_url) == [("C/1", "new"), ("C/1", "old")]
