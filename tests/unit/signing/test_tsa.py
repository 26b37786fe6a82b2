"""The development TSA's serial numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from secserver.signing.errors import KeyUnavailable
from secserver.signing.tsa import SerialStore


def test_serials_never_repeat_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "serial"
    seen: list[int] = []
    for _restart in range(4):
        store = SerialStore(path, block=5)
        seen.extend(store.next() for _ in range(7))
    assert len(set(seen)) == len(seen) == 28
    assert seen == sorted(seen)
    # The file always holds the end of the reserved block, never less than a used serial.
    assert int(path.read_text()) >= seen[-1]
    assert not (tmp_path / "serial.tmp").exists()


def test_restart_without_use_still_advances(tmp_path: Path) -> None:
    path = tmp_path / "serial"
    first = SerialStore(path, block=10).next()
    SerialStore(path, block=10)  # started, never used
    assert SerialStore(path, block=10).next() > first


def test_corrupt_serial_file(tmp_path: Path) -> None:
    path = tmp_path / "serial"
    path.write_text("not a number")
    with pytest.raises(KeyUnavailable, match="never reset"):
        SerialStore(path)


def test_concurrent_stores_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "serial"
    first, second = SerialStore(path, block=3), SerialStore(path, block=3)
    seen = [store.next() for _ in range(10) for store in (first, second)]
    assert len(set(seen)) == len(seen)
