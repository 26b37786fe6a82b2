"""Archives: old batches move to a compressed file, the chain continues, verify reads both."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))

from audit_support import node_config, write_sample_log

from secserver.audit.archive import archive_before, read_archive
from secserver.audit.checks import verify_node_log
from secserver.db.engine import make_engine
from secserver.signing.pki import init_dev_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_dev_pki(directory)
    return directory


def count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM log_records")).scalar() or 0)
    finally:
        engine.dispose()


def test_archive_then_continue_then_verify(migrated_url: str, tmp_path: Path,
                                           pki: Path) -> None:
    config = node_config(tmp_path / "node", migrated_url, pki, checkpoint_records=5)
    asyncio.run(write_sample_log(config, pki, exchanges=8))
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
    done = subprocess.run([sys.executable, "-m", "secserver", "audit", "verify", "--config",
                           str(config.path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"PROBLEM: archive {result.path} was changed after it was written" in done.stdout
    result.path.unlink()
    report = verify_node_log(config)
    assert {p.code for p in report.problems} == {"archive", "missing"}


def test_nothing_to_archive(migrated_url: str, tmp_path: Path, pki: Path) -> None:
    config = node_config(tmp_path / "node", migrated_url, pki)
    asyncio.run(write_sample_log(config, pki, exchanges=2))
    yesterday = datetime.now(UTC) - timedelta(days=1)
    assert archive_before(migrated_url, config.node.server_id, yesterday, tmp_path / "a",
                          now=datetime.now(UTC)) is None
    # with a TSA configured, untimestamped batches stay in the database
    assert archive_before(migrated_url, config.node.server_id,
                          datetime.now(UTC) + timedelta(days=1), tmp_path / "a",
                          now=datetime.now(UTC), require_timestamps=True) is None
