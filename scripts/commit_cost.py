"""What one durable commit of the message log costs on ``CommitThread`` alone.

    python scripts/commit_cost.py [--db sqlite,postgresql] [--trees DIR,...] [--rounds N]

For each database: a migrated, empty database; ``--prefill`` log-record-like rows (about
3.5 KiB each, random message ids in the ``(node_id, message_id)`` index, as the exchange
writes them) in batches of 100, so the file is past the default page cache; then
``--sequential`` one-row commits one after the other, as the log writer commits at
concurrency 1 (p50/p90 wall time, process CPU time and context switches per commit); then
``--batches`` commits of 16 rows each, with a ``BatchGather`` that has seen concurrency (as
under load: the thread commits while the loop goes on), CPU per row and rows per second.
pread64/pwrite64 counts come from ``strace -c -f -p`` if you attach it yourself.

``--trees`` runs the same measurement against other source trees holding a ``secserver``
package (e.g. ``git worktree add /tmp/before HEAD~1``), each in its own process, in turn
for ``--rounds`` rounds, so before and after are compared under the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("node_id", "seq", "kind", "at", "message_id", "prev_hash", "hash", "content",
           "body", "signed_document", "signature")  # the log writer's


def _row(seq: int, node: str = "JP-DEV/GOV/1/ss1") -> tuple[Any, ...]:
    content = os.urandom(1500)
    return (node, seq, "message", "2026-11-22T05:00:00.000000Z", os.urandom(16).hex(),
            os.urandom(32), os.urandom(32), content, os.urandom(1024), os.urandom(600),
            os.urandom(100))


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


async def measure(url: str, prefill: int, sequential: int, batches: int,
                  pragmas: list[str]) -> dict[str, float]:
    from secserver.audit.store import log_records
    from secserver.db.committer import BatchGather, CommitThread

    db = CommitThread(url, name="commit-cost-db")
    db.start()
    result: dict[str, float] = {}
    try:
        sql = db.insert_sql(log_records, COLUMNS)
        for pragma in pragmas:  # on the commit thread's connection, before any write
            await db.execute(f"PRAGMA {pragma}", ())
        seq = 0
        for _ in range(prefill // 100):
            await db.executemany(sql, [_row(seq + n) for n in range(1, 101)])
            seq += 100
        rows = [_row(seq + n) for n in range(1, sequential + 1)]
        seq += sequential
        latencies = []
        cpu0, sw0 = time.process_time(), _switches()
        for row in rows:
            start = time.perf_counter()
            await db.executemany(sql, [row])
            latencies.append(time.perf_counter() - start)
        cpu1, sw1 = time.process_time(), _switches()
        latencies.sort()
        result["c1_p50_ms"] = statistics.median(latencies) * 1e3
        result["c1_p90_ms"] = latencies[int(len(latencies) * 0.9)] * 1e3
        result["c1_p99_ms"] = latencies[int(len(latencies) * 0.99)] * 1e3
        result["c1_cpu_us"] = (cpu1 - cpu0) / sequential * 1e6
        result["c1_switches"] = (sw1 - sw0) / sequential
        busy = BatchGather(limit=16)
        busy.committed(16, 16)  # as under load: concurrency seen
        groups = [[_row(seq + b * 16 + n) for n in range(1, 17)] for b in range(batches)]
        cpu0, start = time.process_time(), time.perf_counter()
        for group in groups:
            await db.executemany(sql, group)
        elapsed, cpu1 = time.perf_counter() - start, time.process_time()
        result["b16_cpu_us_per_row"] = (cpu1 - cpu0) / (16 * batches) * 1e6
        result["b16_rows_per_s"] = 16 * batches / elapsed
        result["inline_commits"] = float(getattr(db, "inline_commits", 0))
        del busy
    finally:
        await db.stop()
    return result


async def run_one(databases: list[str], label: str, args: argparse.Namespace) -> None:
    from postgres import create_database, running_postgres

    from secserver.db import migrate

    with tempfile.TemporaryDirectory(prefix="commit-cost-", dir=args.dir) as name:
        for database in databases:
            if database == "sqlite":
                url = f"sqlite:///{Path(name) / 'log.db'}"
                await asyncio.to_thread(migrate.upgrade, url)
                result = await measure(url, args.prefill, args.sequential, args.batches,
                                       args.pragma)
            else:
                with running_postgres() as server:
                    url = create_database(server)
                    await asyncio.to_thread(migrate.upgrade, url)
                    result = await measure(url, args.prefill, args.sequential,
                                           args.batches, args.pragma)
            print(f"{label:24s} {database:10s} c=1 p50 {result['c1_p50_ms']:5.3f} ms "
                  f"p90 {result['c1_p90_ms']:5.3f} p99 {result['c1_p99_ms']:5.2f} ms "
                  f"CPU {result['c1_cpu_us']:4.0f} µs "
                  f"switches {result['c1_switches']:4.1f} /commit (inline "
                  f"{result['inline_commits']:.0f}) | 16-row batches: CPU "
                  f"{result['b16_cpu_us_per_row']:4.1f} µs/row "
                  f"{result['b16_rows_per_s']:6.0f} rows/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql or both")
    parser.add_argument("--trees", default="",
                        help="other source trees to measure in turn (comma separated)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the trees")
    parser.add_argument("--prefill", type=int, default=20_000, help="rows written first")
    parser.add_argument("--sequential", type=int, default=1000, help="one-row commits")
    parser.add_argument("--batches", type=int, default=300, help="16-row commits")
    parser.add_argument("--dir", default=None, help="where the database file goes")
    parser.add_argument("--pragma", action="append", default=[],
                        help="a SQLite pragma for the connection, e.g. cache_size=-32768")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    databases = [d for d in args.db.split(",") if d]
    if args.child is not None:
        sys.path[:0] = [args.child, str(ROOT / "tests")]
        import uvloop

        import secserver

        uvloop.run(run_one(databases, str(Path(secserver.__file__).parent.parent), args))
        return
    trees = [str(ROOT)] + [t for t in args.trees.split(",") if t]
    passed = ["--db", args.db, "--prefill", str(args.prefill), "--sequential",
              str(args.sequential), "--batches", str(args.batches)]
    if args.dir:
        passed += ["--dir", args.dir]
    for pragma in args.pragma:
        passed += ["--pragma", pragma]
    for _round in range(max(1, min(args.rounds, 10))):
        for tree in trees:
            subprocess.run([sys.executable, __file__, *passed, "--child", tree],
                           check=True, timeout=900)


if __name__ == "__main__":
    main()
