from __future__ import annotations

import pytest
from sqlalchemy import select

from secserver.db.engine import make_async_engine
from secserver.routing.errors import DuplicateMessageId
from secserver.routing.replay import ReplayGuard, seen_messages


async def test_duplicates_are_refused_in_memory_across_guards_and_after_restart(
        migrated_url: str) -> None:
    engine = make_async_engine(migrated_url)
    first, second = ReplayGuard(engine, window=600), ReplayGuard(engine, window=600)
    await first.start()
    await second.start()
    try:
        await first.check_and_record("C/1", "m1", 1000.0)
        await first.check_and_record("C/2", "m1", 1000.0)  # ids are per client
        with pytest.raises(DuplicateMessageId):
            await first.check_and_record("C/1", "m1", 1001.0)  # same node: memory
        with pytest.raises(DuplicateMessageId):
            await second.check_and_record("C/1", "m1", 1001.0)  # another node: database
        await second.check_and_record("C/1", "m2", 1001.0)
    finally:
        await first.stop()
        await second.stop()
    restarted = ReplayGuard(engine, window=600)
    await restarted.start()
    try:
        with pytest.raises(DuplicateMessageId):
            await restarted.check_and_record("C/2", "m1", 1002.0)
    finally:
        await restarted.stop()
        await engine.dispose()


async def test_concurrent_batch_with_one_replay(migrated_url: str) -> None:
    import asyncio

    engine = make_async_engine(migrated_url)
    old, new = ReplayGuard(engine), ReplayGuard(engine)
    await old.start()
    await new.start()
    try:
        await old.check_and_record("C/1", "seen", 5.0)
        results = await asyncio.gather(
            *(new.check_and_record("C/1", f"n{i}", 6.0) for i in range(5)),
            new.check_and_record("C/1", "seen", 6.0), return_exceptions=True)
        assert [r is None for r in results] == [True] * 5 + [False]
        assert isinstance(results[-1], DuplicateMessageId)
        async with engine.connect() as connection:
            rows = (await connection.execute(select(seen_messages.c.message_id))).all()
        assert sorted(r[0] for r in rows) == ["n0", "n1", "n2", "n3", "n4", "seen"]
    finally:
        await old.stop()
        await new.stop()
        await engine.dispose()


async def test_a_lone_reservation_is_not_held_back(migrated_url: str) -> None:
    engine = make_async_engine(migrated_url)
    guard = ReplayGuard(engine)
    await guard.start()
    try:
        for n in range(5):
            await guard.check_and_record("C/1", f"lone{n}", 10.0)
        assert (guard.gather.batches, guard.gather.records) == (5, 5)
        assert guard.gather.iterations == 0
    finally:
        await guard.stop()
        await engine.dispose()


async def test_batches_grow_under_concurrent_reservations(migrated_url: str) -> None:
    import asyncio

    from secserver.db.committer import GATHER_ROUNDS

    engine = make_async_engine(migrated_url)
    guard = ReplayGuard(engine)
    await guard.start()
    try:
        await guard.check_and_record("C/1", "warm-up", 10.0)  # the connection is open
        count = 10 * GATHER_ROUNDS  # below the batch limit
        checks: list[asyncio.Future[None]] = []
        for n in range(count):  # two at once, then one new reservation per iteration
            checks.append(asyncio.ensure_future(guard.check_and_record("C/1", f"c{n}", 10.0)))
            if n:
                await asyncio.sleep(0)
        await asyncio.gather(*checks)
        assert guard.gather.records == count + 1
        # the first batch holds two reservations, so every later one gathers for
        # GATHER_ROUNDS iterations, in which as many reservations come in
        assert guard.gather.iterations >= GATHER_ROUNDS
        assert guard.gather.batches <= 1 + count // GATHER_ROUNDS + 2, guard.gather.batches
        async with engine.connect() as connection:
            rows = (await connection.execute(select(seen_messages.c.message_id))).all()
        assert len(rows) == count + 1
    finally:
        await guard.stop()
        await engine.dispose()
