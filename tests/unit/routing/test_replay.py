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
