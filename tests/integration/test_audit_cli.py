"""`secserver audit` as a real process: show, verify ranges, usage errors, archive."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "audit"))

from audit_support import (
    logged_node,
    logged_node_fixture,
    node_config,
    pki_fixture,  # noqa: F401 (the pki fixture)
    run_secserver,
)

from secserver.config import NodeConfig

pytestmark = pytest.mark.integration


config = logged_node_fixture(exchanges=6, checkpoint_records=4)


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return run_secserver("audit", *args)


def test_show(config: NodeConfig) -> None:
    done = audit("show", "--config", str(config.path), "--id", "m-2", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert [r["fields"]["direction"] for r in shown["records"]] == ["request", "response"]
    assert all(r["checkpoint"] is not None and r["body"].startswith('{"tag": 2')
               for r in shown["records"])
    text = audit("show", "--config", str(config.path), "--id", "m-2")
    assert "record " in text.stdout and "path: /tags/2" in text.stdout
    missing = audit("show", "--config", str(config.path), "--id", "nope")
    assert missing.returncode == 1
    assert "no log record of message 'nope'" in missing.stderr


def test_verify_ranges_and_usage(config: NodeConfig) -> None:
    done = audit("verify", "--config", str(config.path), "--from", "6", "--to", "9", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["first_seq"] <= 6 and report["last_seq"] >= 9 and report["ok"]
    assert report["records"] < 20  # only the batches around 6..9
    plain = audit("verify", "--config", str(config.path))
    assert plain.returncode == 0 and "log verified: no problem found" in plain.stdout
    bad = audit("verify", "--config", str(config.path), "--from", "9", "--to", "3")
    assert bad.returncode == 2 and "--to must not be smaller than --from" in bad.stderr


def test_export_without_a_tsa(config: NodeConfig, tmp_path: Path) -> None:
    done = audit("export", "--config", str(config.path), "--id", "m-1", "--out",
                 str(tmp_path / "b.zip"))
    assert done.returncode == 1
    assert "checkpoint" in done.stderr and "has no timestamp: no TSA is configured " \
        "([tsa] url is empty)" in done.stderr
    assert "set [tsa] url" in done.stderr and "not answered" not in done.stderr
    assert not (tmp_path / "b.zip").exists()


def test_archive_command(config: NodeConfig, tmp_path: Path) -> None:
    before = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    done = audit("archive", "--config", str(config.path), "--before", before, "--out",
                 str(tmp_path / "archive"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["first_seq"] == 1 and Path(result["path"]).is_file()
    verify = audit("verify", "--config", str(config.path), "--json")
    assert json.loads(verify.stdout)["records"] == result["last_seq"]
    assert verify.returncode == 0


def test_database_not_upgraded(tmp_path: Path, pki: Path) -> None:
    cfg = node_config(tmp_path / "empty", f"sqlite:///{tmp_path / 'empty.db'}", pki)
    done = audit("verify", "--config", str(cfg.path))
    assert done.returncode == 1
    assert "cannot read the log from the database" in done.stderr
    assert "secserver db upgrade" in done.stderr and "Traceback" not in done.stderr


def test_export_while_the_tsa_does_not_answer(migrated_url: str, tmp_path: Path,
                                              pki: Path) -> None:
    silent = "http://127.0.0.1:9/"  # nothing listens on the discard port
    config = logged_node(tmp_path / "node", migrated_url, pki, exchanges=1, tsa_url=silent)
    done = audit("export", "--config", str(config.path), "--id", "m-0", "--out",
                 str(tmp_path / "b.zip"))
    assert done.returncode == 1
    assert f"has no timestamp yet: the TSA at {silent} has not answered" in done.stderr
