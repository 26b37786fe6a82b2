from __future__ import annotations

import asyncio

import pytest

from secserver.audit.errors import LoggingFailed
from secserver.routing.errors import DuplicateMessageId
from secserver.routing.provider import _replay_and_log


class Step:
    """A replay check or a log append that ends (or fails) after a few loop turns."""

    def __init__(self, error: Exception | None, turns: int) -> None:
        self.error, self.turns, self.ended = error, turns, False

    async def run(self) -> int:
        for _ in range(self.turns):
            await asyncio.sleep(0)
        self.ended = True
        if self.error is not None:
            raise self.error
        return 7


@pytest.mark.parametrize("replay_error,log_error,expected", [
    (None, None, None),
    (DuplicateMessageId("seen"), None, DuplicateMessageId),
    (None, LoggingFailed("disk"), LoggingFailed),
    # a replay is refused as a replay even when its log record failed too
    (DuplicateMessageId("seen"), LoggingFailed("disk"), DuplicateMessageId),
])
@pytest.mark.parametrize("replay_turns,log_turns", [(0, 3), (3, 0)])
async def test_both_end_and_the_replay_decides_first(
        replay_error: Exception | None, log_error: Exception | None,
        expected: type[Exception] | None, replay_turns: int, log_turns: int) -> None:
    replay, log = Step(replay_error, replay_turns), Step(log_error, log_turns)

    async def check() -> None:
        await replay.run()

    if expected is None:
        await _replay_and_log(check(), log.run())
    else:
        with pytest.raises(expected):
            await _replay_and_log(check(), log.run())
    assert replay.ended and log.ended
