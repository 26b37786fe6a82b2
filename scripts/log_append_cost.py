"""Latency and throughput of the message log's write path alone (``LogWriter.append``).

    python scripts/log_append_cost.py [--db sqlite,postgresql] [--trees DIR,...] [--rounds N]

For each database: 200 appends to warm up (the SQLite WAL wraps past its first
checkpoint, as on a running node), then 400 appends one after the other (concurrency 1:
p50/p90 of one append, i.e. of one durable group commit) and 1000 appends from 50
concurrent callers (records per second). Signed sample message records, no TSA. PostgreSQL
is a throw-away server started for the run (``tests/postgres.py``).

``--trees`` runs the same measurement against other source trees holding a ``secserver``
package (e.g. ``git worktree add /tmp/before HEAD~3``), each in its own process, in turn
for ``--rounds`` rounds, so before and after are compared under the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARM, SEQUENTIAL, CONCURRENT, CALLERS = 200, 400, 1000, 50


async def measure(url: str, directory: Path, pki: Path) -> tuple[float, float, float]:
    from audit_support import MemberSigners, node_config, sample_message

    from secserver.audit.records import Record
    from secserver.audit.writer import LogWriter

    writer = LogWriter(node_config(directory, url, pki), timestamper=None)
    await writer.start()
    try:
        signers = MemberSigners(pki)
        records = [sample_message(signers, n) for n in range(WARM + SEQUENTIAL + CONCURRENT)]
        for record in records[:WARM]:
            await writer.append(record)
        latencies = []
        for record in records[WARM:WARM + SEQUENTIAL]:
            start = time.perf_counter()
            await writer.append(record)
            latencies.append(time.perf_counter() - start)
        gate = asyncio.Semaphore(CALLERS)

        async def one(record: Record) -> None:
            async with gate:
                await writer.append(record)

        start = time.perf_counter()
        await asyncio.gather(*(one(r) for r in records[WARM + SEQUENTIAL:]))
        rate = CONCURRENT / (time.perf_counter() - start)
    finally:
        await writer.stop()
    latencies.sort()
    return (statistics.median(latencies) * 1e3, latencies[int(len(latencies) * 0.9)] * 1e3,
            rate)


async def run_one(databases: list[str], label: str) -> None:
    from postgres import create_database, running_postgres

    from secserver.db import migrate
    from secserver.signing.pki import init_dev_pki

    with tempfile.TemporaryDirectory(prefix="log-append-") as name:
        root = Path(name)
        pki = init_dev_pki(root / "pki").directory
        for database in databases:
            directory = root / database
            directory.mkdir()
            if database == "sqlite":
                url = f"sqlite:///{directory / 'log.db'}"
                result = await _migrate_and_measure(migrate, url, directory, pki)
            else:
                with running_postgres() as server:
                    url = create_database(server)
                    result = await _migrate_and_measure(migrate, url, directory, pki)
            p50, p90, rate = result
            print(f"{label:20s} {database:10s} append c=1 p50 {p50:5.2f} ms p90 {p90:5.2f} ms"
                  f"   {CALLERS} callers: {rate:6.0f} records/s", flush=True)


async def _migrate_and_measure(migrate: object, url: str, directory: Path,
                               pki: Path) -> tuple[float, float, float]:
    await asyncio.to_thread(migrate.upgrade, url)  # type: ignore[attr-defined]
    return await measure(url, directory, pki)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql",
                        help="sqlite, postgresql or both (default both)")
    parser.add_argument("--trees", default="",
                        help="other source trees to measure in turn (comma separated)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the trees")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    databases = [d for d in args.db.split(",") if d]
    if args.child is not None:
        sys.path[:0] = [args.child, str(ROOT / "tests"), str(ROOT / "tests/unit/audit")]
        import logging

        import structlog
        import uvloop

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        import secserver

        uvloop.run(run_one(databases, str(Path(secserver.__file__).parent.parent)))
        return
    trees = [str(ROOT)] + [t for t in args.trees.split(",") if t]
    for _round in range(max(1, min(args.rounds, 10))):
        for tree in trees:
            subprocess.run([sys.executable, __file__, "--db", args.db, "--child", tree],
                           check=True, timeout=600)


if __name__ == "__main__":
    main()
