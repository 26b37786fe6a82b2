"""Archives: old batches move to a compressed file, the chain continues, verify reads both."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from audit_support import (
    db_rows,
    logged_node,
    pki_fixture,  # noqa: F401 (the pki fixture)
    run_secserver,
    write_sample_log,
)

from secserver.audit.archive import archive_before, read_archive
from secserver.audit.checks import verify_node_log


def count(url: str) -> int:
    return int(db_rows(url, "SELECT count(*) FROM log_records")[0][0])


def test_archive_then_continue_then_verify(migrated_url: str, tmp_path: Path,
                                           pki: Path) -> None:
    config = logged_node(tmp_path / "node", migrated_url, pki, exchanges=8,
                         checkpoint_records=5)
    before = count(migrated_url)
    out = tmp_path / "archive"
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    result = archive_before(migrated_url, config.node.server_id, tomorrow, out,
                            now=datetime.now(UTC), require_timestamps=False)
    assert result is not None and result.first_seq == 1
    assert count(migrated_url) == before - result.records == 0  # stopped cleanly: all batches
    assert result.path.name.endswith(f"-000000000001-{result.last_seq:012d}.log.gz")
    assert [r.seq for r, _ in read_archive(result.path)] == list(range(1, result.last_seq + 1))

    asyncio.run(write_sample_log(config, pki, exchanges=3))  # the chain continues
    report = verify_node_log(config)
    assert report.ok, report.problems
    assert report.records == before + count(migrated_url)
    assert report.messages == 22 and report.warnings == ()

    # a second archive continues where the first ended
    second = archive_before(migrated_url, config.node.server_id, tomorrow, out,
                            now=datetime.now(UTC), require_timestamps=False)
    assert second is not None and second.first_seq == result.last_seq + 1
    assert verify_node_log(config).ok

    # the CLI reads the same archives; a changed archive file is named
    data = bytearray(result.path.read_bytes())
    data[-10] ^= 1
    result.path.write_bytes(bytes(data))
    done = run_secserver("audit", "verify", "--config", str(config.path))
    assert done.returncode == 1
    assert f"PROBLEM: archive {result.path} was changed after it was written" in done.stdout
    result.path.unlink()
    report = verify_node_log(config)
    assert {p.code for p in report.problems} == {"archive", "missing"}


def test_nothing_to_archive(migrated_url: str, tmp_path: Path, pki: Path) -> None:
    config = logged_node(tmp_path / "node", migrated_url, pki, exchanges=2)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    assert archive_before(migrated_url, config.node.server_id, yesterday, tmp_path / "a",
                          now=datetime.now(UTC)) is None
    # with a TSA configured, untimestamped batches stay in the database
    assert archive_before(migrated_url, config.node.server_id,
                          datetime.now(UTC) + timedelta(days=1), tmp_path / "a",
                          now=datetime.now(UTC), require_timestamps=True) is None
