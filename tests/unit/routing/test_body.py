from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secserver.routing.body import SpooledBody, spool
from secserver.routing.errors import MessageTooLarge, RequestTimeout


async def source(parts: list[bytes], delay: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part


def b64_sha512(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


async def collect(body: SpooledBody) -> bytes:
    return b"".join([chunk async for chunk in body.chunks(7)])


async def test_small_bodies_stay_in_memory(tmp_path: Path) -> None:
    body = await spool(source([b"ab", b"", b"cd"]), max_bytes=10, threshold=10,
                       spool_dir=tmp_path, deadline_s=5)
    assert body.in_memory and body.size == 4
    assert body.digest_b64 == b64_sha512(b"abcd")
    assert body.read_all() == b"abcd"
    assert await collect(body) == b"abcd"
    assert list(tmp_path.iterdir()) == []


async def test_large_bodies_spool_to_an_anonymous_file(tmp_path: Path) -> None:
    parts = [bytes([i]) * 1000 for i in range(50)]
    body = await spool(source(parts), max_bytes=10**6, threshold=4096, spool_dir=tmp_path,
                       deadline_s=5)
    assert not body.in_memory
    assert body.size == 50_000
    assert body.digest_b64 == b64_sha512(b"".join(parts))
    assert await collect(body) == b"".join(parts)
    assert await collect(body) == b"".join(parts)  # can be sent twice
    assert list(tmp_path.iterdir()) == []  # unlinked: nothing left behind
    body.close()


async def test_limits(tmp_path: Path) -> None:
    with pytest.raises(MessageTooLarge):
        await spool(source([b"x" * 6, b"x" * 6]), max_bytes=10, threshold=4,
                    spool_dir=tmp_path, deadline_s=5)
    with pytest.raises(RequestTimeout):
        await spool(source([b"x"] * 100, delay=0.05), max_bytes=1000, threshold=4,
                    spool_dir=tmp_path, deadline_s=0.2)


def test_from_bytes() -> None:
    body = SpooledBody.from_bytes(b"")
    assert body.size == 0 and body.digest_b64 == b64_sha512(b"")


async def test_no_deadline_and_buffered_bodies_spool_alike(tmp_path: Path) -> None:
    from secserver.routing.body import spool_buffered
    for data, threshold in ((b"abcd", 10), (b"x" * 5000, 4096), (b"", 10)):
        streamed = await spool(source([data]), max_bytes=10**6, threshold=threshold,
                               spool_dir=tmp_path, deadline_s=None)
        buffered = spool_buffered(data, max_bytes=10**6, threshold=threshold,
                                  spool_dir=tmp_path)
        for body in (streamed, buffered):
            assert (body.size, body.digest_b64, body.in_memory) == (
                len(data), b64_sha512(data), len(data) <= threshold)
            assert await collect(body) == data
            body.close()
    with pytest.raises(MessageTooLarge):
        await spool(source([b"x" * 6, b"x" * 6]), max_bytes=10, threshold=4,
                    spool_dir=tmp_path, deadline_s=None)
    with pytest.raises(MessageTooLarge):
        spool_buffered(b"x" * 12, max_bytes=10, threshold=4, spool_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_buffered_bodies_at_the_threshold_and_the_limit(tmp_path: Path) -> None:
    from secserver.routing.body import spool_buffered
    # (size, threshold, max_bytes): in memory up to the threshold, refused over the limit
    # even when the threshold is larger (the in-memory fast path checks both)
    for size, threshold, max_bytes in ((10, 10, 10), (11, 10, 100), (9, 10, 100),
                                       (8, 100, 8)):
        data = bytes(range(size))
        streamed = await spool(source([data]), max_bytes=max_bytes, threshold=threshold,
                               spool_dir=tmp_path, deadline_s=None)
        buffered = spool_buffered(data, max_bytes=max_bytes, threshold=threshold,
                                  spool_dir=tmp_path)
        for body in (streamed, buffered):
            assert (body.size, body.digest_b64, body.in_memory, await collect(body)) == (
                size, b64_sha512(data), size <= threshold, data)
            body.close()
    for size, threshold in ((9, 100), (9, 4)):
        with pytest.raises(MessageTooLarge):
            spool_buffered(b"x" * size, max_bytes=8, threshold=threshold, spool_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_source_timeout_without_deadline_is_still_too_slow(tmp_path: Path) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b"a"
        raise TimeoutError

    with pytest.raises(RequestTimeout):
        await spool(stalls(), max_bytes=10, threshold=4, spool_dir=tmp_path, deadline_s=None)
