"""Cost of the provider's step before the backend: the request's log record and the replay
reservation of its message id, both durable (the write path alone, no HTTP, no TLS).

    python scripts/replay_cost.py [--db sqlite,postgresql] [--trees DIR,...] [--rounds N]

For each database: 50 calls to warm up, 400 calls one after the other (concurrency 1: CPU
per call and p50) and 3000 calls from 50 concurrent callers (CPU per call, calls per
second). CPU is this process's (event loop and database threads); on PostgreSQL also the
server's (its processes' CPU ticks, so in steps of 10 ms over the calls). Signed sample
message records, no TSA; PostgreSQL is a throw-away server started for the run
(``tests/postgres.py``).

``--trees`` also measures other source trees holding a ``secserver`` package (e.g. from
``git archive REV | tar -x -C DIR``), each in its own process, in turn for ``--rounds``
rounds. A tree from before ``96a1eb1`` is measured the way its provider did it: the
replay store's own group commit (on SQLite in ``replay.db``) awaited beside the log
append.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARM, SEQUENTIAL, CONCURRENT, CALLERS = 50, 400, 3000, 50


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def server_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server's live processes (postmaster and children)."""
    if not postmaster:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def measure(url: str, directory: Path, pki: Path) -> dict[str, float]:
    import sqlalchemy as sa
    from audit_support import MemberSigners, node_config, sample_message

    from secserver.audit.writer import LogWriter
    from secserver.db import migrate
    from secserver.db.engine import is_sqlite, make_async_engine
    from secserver.routing import provider
    from secserver.routing import replay as replay_module

    engine = make_async_engine(url)
    writer = LogWriter(node_config(directory, url, pki), engine=engine, timestamper=None)
    await writer.start()
    signers = MemberSigners(pki)
    records = [sample_message(signers, n) for n in range(50)]
    guard: Any
    stop: Callable[[], Awaitable[None]] | None = None
    call: Callable[[int], Awaitable[Any]]
    if hasattr(replay_module.ReplayGuard, "log_request"):
        guard = replay_module.ReplayGuard(writer)

        def call(i: int) -> Awaitable[Any]:
            return guard.log_request(records[i % 50], "C/1", f"id{i}", 1000.0)  # type: ignore[no-any-return]
    else:  # before 96a1eb1: the replay store of its own, as the provider awaited it
        replay_engine = engine
        if is_sqlite(url):
            replay_url = f"sqlite:///{directory / 'replay.db'}"
            await asyncio.to_thread(migrate.upgrade, replay_url)
            replay_engine = make_async_engine(replay_url)
        guard = replay_module.ReplayGuard(replay_engine)  # type: ignore[arg-type]
        await guard.start()
        stop = guard.stop
        both: Any = getattr(provider, "_replay_and_log")  # noqa: B009 (gone since 96a1eb1)

        def call(i: int) -> Awaitable[Any]:
            return both(guard.reserve("C/1", f"id{i}", 1000.0),  # type: ignore[no-any-return]
                        writer.append(records[i % 50]))
    try:
        for i in range(WARM):
            await call(10_000_000 + i)
        postmaster = 0
        if not is_sqlite(url):
            async with engine.connect() as conn:
                pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
            postmaster = parent_pid(pid)
        server0, cpu0 = server_cpu(postmaster), time.process_time()
        latencies = []
        for i in range(SEQUENTIAL):
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)
        server1, cpu1 = server_cpu(postmaster), time.process_time()
        numbers = iter(range(SEQUENTIAL, SEQUENTIAL + CONCURRENT))

        async def caller() -> None:
            for i in numbers:
                await call(i)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        elapsed = time.perf_counter() - began
        server2, cpu2 = server_cpu(postmaster), time.process_time()
    finally:
        if stop is not None:
            await stop()
        await writer.stop()
        await engine.dispose()
    return {"c1_cpu_us": (cpu1 - cpu0) / SEQUENTIAL * 1e6,
            "c1_p50_us": statistics.median(latencies) * 1e6,
            "c1_server_cpu_us": (server1 - server0) / SEQUENTIAL * 1e6,
            "c50_cpu_us": (cpu2 - cpu1) / CONCURRENT * 1e6,
            "c50_calls_per_s": CONCURRENT / elapsed,
            "c50_server_cpu_us": (server2 - server1) / CONCURRENT * 1e6}


def child(database: str, server: str) -> None:
    """Measure the ``secserver`` package on ``sys.path`` once; one JSON line to stdout."""
    from postgres import create_database

    from secserver.db import migrate
    from secserver.signing.pki import init_dev_pki

    with tempfile.TemporaryDirectory(prefix="replay-cost-") as name:
        directory = Path(name)
        pki = init_dev_pki(directory / "pki").directory
        url = f"sqlite:///{directory / 'node.db'}" if database == "sqlite" \
            else create_database(server)
        migrate.upgrade(url)
        try:
            import uvloop
            result = uvloop.run(measure(url, directory / "node", pki))
        except ImportError:
            result = asyncio.run(measure(url, directory / "node", pki))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--trees", default="", help="other source trees, comma separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("TREE", "DB", "SERVER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tree, database, server = args.child
        sys.path[:0] = [tree, str(Path(tree) / "tests"), str(Path(tree) / "tests/unit/audit")]
        child(database, server)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres import running_postgres

    trees = [str(ROOT), *[t.strip() for t in args.trees.split(",") if t.strip()]]
    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    with running_postgres() as server:
        for round_number in range(args.rounds):
            order = trees if round_number % 2 == 0 else trees[::-1]
            for database in databases:
                for tree in order:
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", tree, database, server],
                        capture_output=True, text=True, timeout=900, check=False)
                    if done.returncode:
                        sys.exit(f"{tree} ({database}) failed:\n{done.stderr[-3000:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    shown = "  ".join(f"{k} {v:.1f}" for k, v in result.items())
                    print(f"round {round_number} {database:10} {tree}: {shown}", flush=True)


if __name__ == "__main__":
    main()
