"""Records per group commit in message logs written by a benchmark (``bench.py --keep``).

The log writer gives every record of one batch the same time (``at``, in microseconds),
so consecutive records with the same ``at`` were committed together. Seconds in which a
node wrote at least ``--busy`` records count as under load; the others as quiet.

    python scripts/log_batch_sizes.py /tmp/secserver-bench-XXXX       # every SQLite log
    python scripts/log_batch_sizes.py path/to/secserver.db --busy 1000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import Counter
from pathlib import Path


def batches(db: Path) -> list[tuple[str, int]]:
    """(at, records) per batch of message, system and admin records, in seq order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT node_id, at FROM log_records WHERE kind != 'checkpoint' "
                            "ORDER BY node_id, seq").fetchall()
    found: list[tuple[str, int]] = []
    last: tuple[str, str] | None = None
    for node, at in rows:
        if (node, at) == last:
            found[-1] = (at, found[-1][1] + 1)
        else:
            found.append((at, 1))
            last = (node, at)
    return found


def summary(db: Path, busy: int) -> str:
    found = batches(db)
    per_second: Counter[str] = Counter()
    for at, size in found:
        per_second[at[:19]] += size
    parts = []
    for label, keep in (("under load", True), ("quiet", False)):
        chosen = [size for at, size in found if (per_second[at[:19]] >= busy) == keep]
        if chosen:
            parts.append(f"{label}: {sum(chosen)} records in {len(chosen)} batches, "
                         f"{sum(chosen) / len(chosen):.2f} per batch")
    return f"{db}: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path,
                        help="SQLite log databases, or directories searched for secserver.db")
    parser.add_argument("--busy", type=int, default=1000,
                        help="records per second from which a second counts as under load")
    args = parser.parse_args(argv)
    for path in args.paths:
        dbs = sorted(path.rglob("secserver.db")) if path.is_dir() else [path]
        for db in dbs:
            print(summary(db, args.busy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
