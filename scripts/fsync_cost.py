"""What one durable commit costs on this disk: the floor under the log's latency.

    python scripts/fsync_cost.py [--dir DIR] [--count N]

Measures, in DIR (default: a temporary directory on the same file system as /tmp):

* ``fdatasync`` after appending 4 KiB to a growing file (every sync also journals the
  new file size), and after overwriting 4 KiB of a preallocated file (data only);
* a SQLite commit of one 1.5 KiB row as the log writes it (WAL, ``synchronous=FULL``:
  one ``fdatasync`` of the WAL per commit), while the WAL file still grows (a fresh
  database) and once it has wrapped (a running node: WAL pages are overwritten).

Prints p50 and p90 wall time and the CPU (user + system) per operation. Bounded: N
operations per row (default 300).
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(label: str, count: int, operation: Callable[[int], None]) -> str:
    walls: list[float] = []
    cpu_before = _cpu()
    for number in range(count):
        start = time.perf_counter()
        operation(number)
        walls.append(time.perf_counter() - start)
    cpu = (_cpu() - cpu_before) / count
    walls.sort()
    return (f"{label:58s} p50 {statistics.median(walls) * 1e3:6.3f} ms  "
            f"p90 {walls[int(count * 0.9)] * 1e3:6.3f} ms  CPU {cpu * 1e3:6.3f} ms")


def file_syncs(directory: Path, count: int) -> list[str]:
    block = b"x" * 4096
    lines = []
    for label, preallocate in (("fdatasync after a 4 KiB append (file grows)", False),
                               ("fdatasync after a 4 KiB overwrite (preallocated)", True)):
        path = directory / "probe.bin"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if preallocate:
                os.write(fd, b"\0" * (count * len(block)))
                os.fsync(fd)
                os.lseek(fd, 0, os.SEEK_SET)

            def sync(_number: int, fd: int = fd) -> None:
                os.write(fd, block)
                os.fdatasync(fd)

            lines.append(measure(label, count, sync))
        finally:
            os.close(fd)
            path.unlink()
    return lines


def sqlite_commits(directory: Path, count: int) -> list[str]:
    path = directory / "probe.db"
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, hash BLOB, content BLOB)")
        connection.execute("CREATE INDEX t_hash ON t (hash)")
        connection.commit()
        content = b"c" * 1536

        def commit(_number: int) -> None:
            connection.execute("INSERT INTO t (hash, content) VALUES (?, ?)",
                               (os.urandom(32), content))
            connection.commit()

        growing = measure("SQLite WAL commit, synchronous=FULL, fresh (WAL grows)",
                          count, commit)
        for number in range(max(3000, count)):  # past the 1000-page auto-checkpoint
            commit(number)
        wrapped = measure("SQLite WAL commit, synchronous=FULL, WAL wrapped (running)",
                          count, commit)
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return [growing, wrapped]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write (default: a temporary directory)")
    parser.add_argument("--count", type=int, default=300, help="operations per row")
    args = parser.parse_args()
    count = max(10, min(args.count, 10_000))
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        for line in file_syncs(directory, count) + sqlite_commits(directory, count):
            print(line)


if __name__ == "__main__":
    main()
