"""cancel_and_wait: a cancelled background task has ended when it returns."""

from __future__ import annotations

import asyncio

from secserver.aio import cancel_and_wait


async def test_cancels_a_running_task_and_waits_for_its_cleanup() -> None:
    cleaned = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.set()

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.done() and task.cancelled() and cleaned.is_set()


async def test_none_and_finished_tasks() -> None:
    await cancel_and_wait(None)

    async def done() -> int:
        return 7

    task = asyncio.create_task(done())
    await task
    await cancel_and_wait(task)
    assert task.result() == 7
