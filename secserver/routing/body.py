"""Message bodies: hashed while they stream, kept in memory or spooled to disk.

A body is read once, through a size limit and a deadline, into a ``SpooledBody``: small
bodies stay in memory, larger ones go to a temporary file (deleted on ``close``), and the
SHA-512 digest the signed document carries is computed on the way, so a 200 MiB body costs
a few chunks of memory.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from secserver.routing.errors import ExchangeError, MessageTooLarge, RequestTimeout
from secserver.signing.document import BodyDigest, body_digest

CHUNK = 256 * 1024


class SpooledBody:
    """A read body: size, SHA-512 digest, and the bytes (memory or temporary file)."""

    def __init__(self, data: bytes | None, file: IO[bytes] | None, size: int,
                 digest_b64: str) -> None:
        self._data = data
        self._file = file
        self.size = size
        self.digest_b64 = digest_b64  # the signed document's body-sha512

    @classmethod
    def from_bytes(cls, data: bytes) -> SpooledBody:
        return cls(data, None, len(data), body_digest(data))

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def read_all(self) -> bytes:
        """All bytes; meant for small bodies (SOAP envelopes, error bodies)."""
        if self._data is not None:
            return self._data
        assert self._file is not None
        self._file.seek(0)
        return self._file.read()

    async def chunks(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        if self._data is not None:
            if self._data:
                yield self._data
            return
        assert self._file is not None
        self._file.seek(0)
        while True:
            chunk = self._file.read(size)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._data = b""


EMPTY = SpooledBody.from_bytes(b"")


async def spool(source: AsyncIterator[bytes], *, max_bytes: int, threshold: int,
                spool_dir: Path | None, deadline_s: float | None,
                too_large: type[ExchangeError] = MessageTooLarge,
                too_slow: type[ExchangeError] = RequestTimeout,
                what: str = "request body") -> SpooledBody:
    """Read ``source`` to the end within ``max_bytes`` and ``deadline_s`` seconds (total).

    ``spool_dir`` must exist (the node creates it at start).
    """
    digest = BodyDigest()
    parts: list[bytes] = []
    size = 0
    file: IO[bytes] | None = None
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in source:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(f"the {what} is larger than the limit of {max_bytes} bytes")
                digest.update(chunk)
                if file is None and size > threshold:
                    file = tempfile.TemporaryFile(dir=spool_dir, prefix="body-")  # noqa: SIM115
                    for part in parts:
                        file.write(part)
                    parts = []
                if file is not None:
                    file.write(chunk)
                else:
                    parts.append(chunk)
    except TimeoutError as exc:
        if file is not None:
            file.close()
        raise too_slow(f"the {what} did not arrive within {deadline_s} seconds") from exc
    except BaseException:
        if file is not None:
            file.close()
        raise
    if file is not None:
        file.flush()
        return SpooledBody(None, file, size, digest.finish())
    return SpooledBody(b"".join(parts), None, size, digest.finish())
