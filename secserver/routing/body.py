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


class _Spooler:
    """The state of one body being read: size, digest, parts in memory or the spool file."""

    __slots__ = ("digest", "file", "max_bytes", "parts", "size", "spool_dir", "threshold",
                 "too_large", "what")

    def __init__(self, max_bytes: int, threshold: int, spool_dir: Path | None,
                 too_large: type[ExchangeError], what: str) -> None:
        self.digest = BodyDigest()
        self.parts: list[bytes] = []
        self.size = 0
        self.file: IO[bytes] | None = None
        self.max_bytes, self.threshold, self.spool_dir = max_bytes, threshold, spool_dir
        self.too_large, self.what = too_large, what

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise self.too_large(f"the {self.what} is larger than the limit of "
                                 f"{self.max_bytes} bytes")
        self.digest.update(chunk)
        if self.file is None and self.size > self.threshold:
            self.file = tempfile.TemporaryFile(dir=self.spool_dir,  # noqa: SIM115
                                               prefix="body-")
            for part in self.parts:
                self.file.write(part)
            self.parts = []
        if self.file is not None:
            self.file.write(chunk)
        else:
            self.parts.append(chunk)

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()

    def finish(self) -> SpooledBody:
        if self.file is not None:
            self.file.flush()
            return SpooledBody(None, self.file, self.size, self.digest.finish())
        return SpooledBody(b"".join(self.parts), None, self.size, self.digest.finish())


async def spool(source: AsyncIterator[bytes], *, max_bytes: int, threshold: int,
                spool_dir: Path | None, deadline_s: float | None,
                too_large: type[ExchangeError] = MessageTooLarge,
                too_slow: type[ExchangeError] = RequestTimeout,
                what: str = "request body") -> SpooledBody:
    """Read ``source`` to the end within ``max_bytes`` and ``deadline_s`` seconds (total;
    ``None``: no deadline).

    ``spool_dir`` must exist (the node creates it at start).
    """
    spooler = _Spooler(max_bytes, threshold, spool_dir, too_large, what)
    try:
        if deadline_s is None:  # no timer to arm and cancel for every body
            async for chunk in source:
                spooler.add(chunk)
        else:
            async with asyncio.timeout(deadline_s):
                async for chunk in source:
                    spooler.add(chunk)
    except TimeoutError as exc:
        spooler.discard()
        raise too_slow(f"the {what} did not arrive within {deadline_s} seconds") from exc
    except BaseException:
        spooler.discard()
        raise
    return spooler.finish()


def spool_buffered(data: bytes, *, max_bytes: int, threshold: int, spool_dir: Path | None,
                   too_large: type[ExchangeError] = MessageTooLarge,
                   what: str = "request body") -> SpooledBody:
    """``spool`` of a body that has already arrived whole (``data``): the same limit,
    spool file and digest, without awaiting anything (so no deadline can pass)."""
    size = len(data)
    if size <= threshold and size <= max_bytes:  # what ``spool`` keeps in memory
        return SpooledBody(data, None, size, body_digest(data))
    spooler = _Spooler(max_bytes, threshold, spool_dir, too_large, what)
    try:
        spooler.add(data)
    except BaseException:
        spooler.discard()
        raise
    return spooler.finish()
