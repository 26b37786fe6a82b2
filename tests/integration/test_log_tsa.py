"""The TSA goes away during traffic and comes back (a real `secserver tsa serve` process):
no message is lost, waiting checkpoints are timestamped later, and past the grace period
the node refuses new messages with a coded error and says why in health."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "audit"))

from audit_support import MemberSigners, node_config, sample_message
from pki_fixtures import dev_pki, start_tsa  # noqa: F401

from secserver.audit.checks import verify_node_log
from secserver.audit.errors import LogTimestampOverdue
from secserver.audit.writer import LogWriter
from secserver.db.engine import make_engine
from secserver.signing.pki import DevPki

pytestmark = pytest.mark.integration

GRACE = 600.0


async def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_tsa_down_then_back(migrated_url: str, tmp_path: Path,
                                  dev_pki: DevPki) -> None:  # noqa: F811
    pki = dev_pki.directory
    signers = MemberSigners(pki)
    with start_tsa(pki) as tsa:
        port = tsa.port
        config = node_config(tmp_path / "node", migrated_url, pki, tsa_url=tsa.url,
                             checkpoint_interval=0.2, grace_period=GRACE)
        offset = [timedelta(0)]
        writer = LogWriter(config, tsa_retry=0.2,
                           clock=lambda: datetime.now(UTC) + offset[0])
        await writer.start()
        seqs = [await writer.append(sample_message(signers, n)) for n in range(5)]
        await wait_for(lambda: writer.health()["last_checkpoint_seq"] > seqs[-1]
                       and writer.health()["untimestamped_checkpoints"] == 0)
        assert writer.health()["status"] == "ok"

    # The TSA process is gone: traffic continues, checkpoints wait.
    seqs += await asyncio.gather(*(writer.append(sample_message(signers, n))
                                   for n in range(5, 25)))
    await wait_for(lambda: writer.health()["tsa"] == "unreachable"
                   and writer.health()["last_checkpoint_seq"] > max(seqs))
    health = writer.health()
    assert health["status"] == "degraded"
    assert health["accepting"] is True
    assert health["untimestamped_checkpoints"] >= 1
    now = datetime.now(UTC)
    writer.check_accepting(now)  # within the grace period
    with pytest.raises(LogTimestampOverdue) as refused:
        writer.check_accepting(now + timedelta(seconds=GRACE + 1))
    assert refused.value.code == "LogTimestampOverdue"
    assert "grace_period" in refused.value.message
    offset[0] = timedelta(seconds=GRACE + 1)  # health reads the writer's clock
    health = writer.health()
    assert health["status"] == "failing" and health["accepting"] is False
    assert "grace_period" in health["reason"]
    offset[0] = timedelta(0)

    # The TSA comes back on the same address: every waiting checkpoint gets its token.
    with start_tsa(pki, port=port):
        await wait_for(lambda: writer.health()["tsa"] == "ok"
                       and writer.health()["untimestamped_checkpoints"] == 0)
        seqs.append(await writer.append(sample_message(signers, 99)))
        assert writer.health()["status"] == "ok"
        writer.check_accepting(datetime.now(UTC) + timedelta(seconds=GRACE + 1))
        await writer.stop()

    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT seq FROM log_records WHERE kind = 'message'"))
                     .scalars())
        events = list(conn.execute(text(
            "SELECT content FROM log_records WHERE kind = 'system' ORDER BY seq")).scalars())
        stamped = conn.execute(text("SELECT count(*) FROM log_timestamps")).scalar()
        checkpoints = conn.execute(text(
            "SELECT count(*) FROM log_records WHERE kind = 'checkpoint'")).scalar()
    engine.dispose()
    assert set(seqs) <= stored
    kinds = [bytes(e).split(b"\nevent: ")[1].split(b"\n")[0].decode() for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert "tsa-failure" in kinds and "tsa-recovered" in kinds
    assert kinds.index("tsa-failure") < kinds.index("tsa-recovered")
    # The final checkpoint (after stop) was stamped too: the TSA was up.
    assert stamped == checkpoints

    report = verify_node_log(config)
    assert report.ok, report.problems
    assert report.warnings == ()
    assert report.timestamps == checkpoints
    assert report.message_signatures == len(stored)
