"""CommitThread on a real database (SQLite and PostgreSQL): jobs commit in order, one
transaction each, failures roll back and the next job goes on, stop runs what is queued."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from postgres import create_database
from sqlalchemy import text
from sqlalchemy.engine import make_url

from secserver.db import committer, migrate
from secserver.db.committer import (
    PG_MULTIROW_MAX,
    BatchGather,
    CommitThread,
    DatabaseWriteError,
    concurrency_seen,
)
from secserver.db.engine import make_engine
from secserver.routing.replay import seen_messages

COLUMNS = ("client", "message_id", "seen_at")


def stored(url: str) -> list[tuple[str, float]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT message_id, seen_at FROM exchange_seen_messages "
                                     "ORDER BY seen_at")).all()
    finally:
        engine.dispose()
    return [(str(m), float(s)) for m, s in rows]


async def test_jobs_commit_in_order_and_are_visible_when_awaited(migrated_url: str) -> None:
    db = CommitThread(migrated_url, name="test-db")
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        futures = [db.executemany(sql, [("C", f"m{n}a", n), ("C", f"m{n}b", n + 0.5)])
                   for n in range(20)]
        await asyncio.gather(*futures)
        assert db.commits == 20
        # committed by the time the future resolved: another connection sees every row
        assert len(stored(migrated_url)) == 40

        def count(cursor: Any) -> int:
            cursor.execute("SELECT count(*) FROM exchange_seen_messages")
            return int(cursor.fetchone()[0])

        assert await db.run(count) == 40
    finally:
        await db.stop()


@pytest.mark.parametrize("size", [1, PG_MULTIROW_MAX, PG_MULTIROW_MAX + 1, 3000])
async def test_batches_of_any_size_commit_whole_or_not_at_all(migrated_url: str,
                                                              size: int) -> None:
    db = CommitThread(migrated_url, name="test-db")
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        rows = [("C", f"b{n}", float(n)) for n in range(size)]
        await db.executemany(sql, rows)
        with pytest.raises(DatabaseWriteError) as duplicate:
            await db.executemany(sql, [*(("C", f"x{n}", -1.0) for n in range(size - 1)),
                                       ("C", "b0", -2.0)])
        assert duplicate.value.integrity
        assert stored(migrated_url) == [(m, s) for _c, m, s in rows]  # none of the failed
    finally:
        await db.stop()


async def test_a_failed_job_rolls_back_and_the_next_goes_on(migrated_url: str) -> None:
    db = CommitThread(migrated_url, name="test-db")
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        await db.execute(sql, ("C", "one", 1.0))
        with pytest.raises(DatabaseWriteError) as duplicate:
            # the first row would go in, the second is a duplicate: neither stays
            await db.executemany(sql, [("C", "two", 2.0), ("C", "one", 3.0)])
        assert duplicate.value.integrity
        with pytest.raises(DatabaseWriteError) as broken:
            await db.execute("INSERT INTO no_such_table VALUES (1)", ())
        assert not broken.value.integrity
        assert "no_such_table" in str(broken.value)
        await db.execute(sql, ("C", "three", 4.0))
        assert stored(migrated_url) == [("one", 1.0), ("three", 4.0)]
        assert db.commits == 2
    finally:
        await db.stop()


async def test_stop_runs_what_is_queued_then_refuses(migrated_url: str) -> None:
    db = CommitThread(migrated_url, name="test-db")
    db.start()
    sql = db.insert_sql(seen_messages, COLUMNS)
    futures = [db.execute(sql, ("C", f"q{n}", float(n))) for n in range(10)]
    await db.stop()
    await asyncio.gather(*futures)
    assert len(stored(migrated_url)) == 10
    with pytest.raises(DatabaseWriteError, match="not running"):
        db.execute(sql, ("C", "late", 99.0))


@pytest.mark.postgres
async def test_a_lost_connection_fails_one_job_and_the_next_reconnects(
        postgres_server: str) -> None:
    migrated_url = create_database(postgres_server)
    migrate.upgrade(migrated_url)
    db = CommitThread(migrated_url, name="test-db")
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        await db.execute(sql, ("C", "before", 1.0))

        def backend_pid(cursor: Any) -> int:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

        pid = await db.run(backend_pid)
        engine = make_engine(migrated_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            engine.dispose()
        with pytest.raises(DatabaseWriteError) as lost:
            await db.execute(sql, ("C", "lost", 2.0))
        assert not lost.value.integrity
        await db.execute(sql, ("C", "after", 3.0))
        assert stored(migrated_url) == [("before", 1.0), ("after", 3.0)]
    finally:
        await db.stop()


async def test_gather_holds_a_batch_only_after_signs_of_concurrency() -> None:
    queued: list[int] = []
    gather = BatchGather(limit=100, rounds=5)
    assert await gather.gather(lambda: len(queued)) == 0  # nothing committed yet
    gather.committed(1, 0)  # a lone record, nothing arrived meanwhile: no wait
    assert not gather.busy
    assert await gather.gather(lambda: len(queued)) == 0
    gather.committed(1, 2)  # records arrived while it committed
    assert gather.busy

    async def producer() -> None:
        for n in range(50):
            queued.append(n)
            await asyncio.sleep(0)

    task = asyncio.create_task(producer())
    assert await gather.gather(lambda: len(queued)) == 5  # bounded by rounds
    assert 4 <= len(queued) <= 6  # one record per iteration came in meanwhile
    size = len(queued)
    gather.committed(size, 0)  # more than one record: the next batch gathers too
    assert gather.busy
    queued.clear()
    await task
    assert (gather.batches, gather.records, gather.iterations) == (3, 2 + size, 5)


async def test_gather_ends_when_the_batch_is_full() -> None:
    queued = list(range(3))
    gather = BatchGather(limit=4, rounds=100)
    gather.committed(2, 0)

    async def producer() -> None:
        for n in range(10):
            queued.append(n)
            await asyncio.sleep(0)

    task = asyncio.create_task(producer())
    rounds = await gather.gather(lambda: len(queued))
    assert 1 <= rounds <= 2 and len(queued) >= 4
    full = BatchGather(limit=3, rounds=100)
    full.committed(3, 3)
    assert await full.gather(lambda: len(queued)) == 0  # already full: no wait at all
    await task


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database (inline commits are for SQLite only)."""
    url = f"sqlite:///{tmp_path / 'secserver.db'}"
    migrate.upgrade(url)
    return url


async def test_an_idle_sqlite_committer_commits_in_the_event_loop(migrated_url: str) -> None:
    db = CommitThread(migrated_url, name="test-db")
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        await db.execute(sql, ("C", "first", 1.0))  # opens the connection on the thread
        assert db.inline_commits == 0
        future = db.executemany(sql, [("C", "second", 2.0), ("C", "third", 3.0)])
        if not migrated_url.startswith("sqlite"):  # never on PostgreSQL
            assert not future.done()
            await future
            assert db.inline_commits == 0
            return
        assert future.done() and future.result() is None  # settled before run returned
        # durable and visible to another connection without a single await in between
        assert stored(migrated_url) == [("first", 1.0), ("second", 2.0), ("third", 3.0)]
        assert (db.commits, db.inline_commits) == (2, 1)
    finally:
        await db.stop()


async def test_a_failing_inline_commit_fails_closed_and_the_next_job_goes_on(
        sqlite_url: str) -> None:
    db = CommitThread(sqlite_url, name="test-db")
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        await db.execute(sql, ("C", "one", 1.0))
        duplicate = db.executemany(sql, [("C", "two", 2.0), ("C", "one", 3.0)])
        assert duplicate.done()
        with pytest.raises(DatabaseWriteError) as refused:
            await duplicate
        assert refused.value.integrity

        def half_then_raise(cursor: Any) -> None:
            cursor.execute(sql, ("C", "half", 4.0))
            raise ValueError("the job broke")

        with pytest.raises(DatabaseWriteError, match="ValueError: the job broke") as broke:
            await db.run(half_then_raise)
        assert not broke.value.integrity
        later = db.execute(sql, ("C", "three", 5.0))
        assert later.done()
        await later
        assert stored(sqlite_url) == [("one", 1.0), ("three", 5.0)]  # nothing half done
        assert (db.commits, db.inline_commits) == (2, 1)
    finally:
        await db.stop()


async def test_jobs_go_to_the_thread_under_load_and_keep_their_order(
        sqlite_url: str) -> None:
    db = CommitThread(sqlite_url, name="test-db")
    db.start()
    order: list[int] = []

    def numbered(n: int) -> Callable[[Any], int]:
        def job(cursor: Any) -> int:
            cursor.execute("SELECT 1")
            order.append(n)
            return n
        return job

    try:
        await db.run(numbered(0))
        gather = BatchGather(limit=10)
        gather.committed(3, 0)  # a group commit of this process saw concurrency
        assert concurrency_seen()
        queued = [db.run(numbered(n)) for n in range(1, 6)]
        assert not any(f.done() for f in queued)  # on the thread: the loop goes on
        gather.committed(1, 0)  # low load again, but jobs are still queued:
        behind = db.run(numbered(6))  # this one waits its turn on the thread
        assert not behind.done()
        assert await asyncio.gather(*queued, behind) == [1, 2, 3, 4, 5, 6]
        inline = db.run(numbered(7))  # idle and quiet: inline again
        assert inline.done()
        assert order == list(range(8))
        assert (db.commits, db.inline_commits) == (8, 1)
    finally:
        await db.stop()


async def test_inline_commits_can_be_turned_off(sqlite_url: str) -> None:
    db = CommitThread(sqlite_url, name="test-db", inline=False)
    db.start()
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        for n in range(3):
            future = db.execute(sql, ("C", f"t{n}", float(n)))
            assert not future.done()
            await future
        assert (db.commits, db.inline_commits) == (3, 0)
    finally:
        await db.stop()


async def test_a_forgotten_busy_gather_does_not_count() -> None:
    gather = BatchGather(limit=10)
    gather.committed(2, 0)
    assert concurrency_seen()
    del gather
    gc.collect()
    assert not concurrency_seen()


async def test_sqlite_checkpoints_run_on_the_thread_between_commits(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(committer, "CHECKPOINT_COMMITS", 3)
    database = make_url(sqlite_url).database
    assert database is not None
    db = CommitThread(sqlite_url, name="test-db")
    db.start()
    try:
        def pages_per_commit(cursor: Any) -> int:
            cursor.execute("PRAGMA wal_autocheckpoint")
            return int(cursor.fetchone()[0])

        assert await db.run(pages_per_commit) == committer.AUTOCHECKPOINT_PAGES
        await db.run(lambda cursor: cursor.execute("CREATE TABLE blobs (b BLOB)"))
        size = os.path.getsize(database)  # the new pages are in the WAL so far
        sql = "INSERT INTO blobs (b) VALUES (?)"
        await db.executemany(sql, [(os.urandom(4000),) for _ in range(20)])
        assert db.checkpoints == 1  # queued after the third commit
        after = db.executemany(sql, [(b"x",)])  # waits behind it on the thread
        assert not after.done()
        await after
        assert os.path.getsize(database) >= size + 20 * 4000  # copied into the file
        assert (db.commits, db.inline_commits, db.checkpoints) == (4, 2, 1)

        def count(cursor: Any) -> int:
            cursor.execute("SELECT count(*) FROM blobs")
            return int(cursor.fetchone()[0])

        assert await db.run(count) == 21
    finally:
        await db.stop()


async def test_an_inline_job_never_waits_for_another_connections_write_lock(
        sqlite_url: str) -> None:
    database = make_url(sqlite_url).database
    assert database is not None
    db = CommitThread(sqlite_url, name="test-db")
    db.start()
    other = sqlite3.connect(database, isolation_level=None)
    try:
        sql = db.insert_sql(seen_messages, COLUMNS)
        await db.execute(sql, ("C", "first", 1.0))
        other.execute("BEGIN IMMEDIATE")  # an admin command holds the write lock
        other.execute("INSERT INTO exchange_seen_messages VALUES ('C', 'admin', 2.0)")
        waiting = db.execute(sql, ("C", "second", 3.0))
        assert not waiting.done()  # rolled back at once, queued on the thread
        assert db.inline_locked == 1
        for _ in range(20):  # the event loop goes on meanwhile
            await asyncio.sleep(0)
        assert not waiting.done()
        other.execute("COMMIT")
        await waiting  # the thread waited for the lock, then committed
        inline = db.execute(sql, ("C", "third", 4.0))
        assert inline.done()
        await inline
        assert stored(sqlite_url) == [("first", 1.0), ("admin", 2.0), ("second", 3.0),
                                        ("third", 4.0)]
        assert (db.commits, db.inline_commits) == (3, 1)
    finally:
        other.close()
        await db.stop()
