"""CommitThread on a real database (SQLite and PostgreSQL): jobs commit in order, one
transaction each, failures roll back and the next job goes on, stop runs what is queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from postgres import create_database
from sqlalchemy import text

from secserver.db import migrate
from secserver.db.committer import (
    PG_MULTIROW_MAX,
    BatchGather,
    CommitThread,
    DatabaseWriteError,
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
