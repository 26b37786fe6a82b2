"""The TSA goes away during traffic and comes back (a real `secserver tsa serve` process):
no message is lost, waiting checkpoints are timestamped later, and past the grace period
the node refuses new messages with a coded error and says why in health. The writer asks
the TSA over one kept-alive connection, and a new one after the TSA restarts."""

from __future__ import annotations

import asyncio
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "audit"))

from audit_support import MemberSigners, node_config, sample_message, wait_for
from pki_fixtures import dev_pki, start_tsa  # noqa: F401

from secserver.audit.checks import verify_node_log
from secserver.audit.errors import LogTimestampOverdue
from secserver.audit.writer import LogWriter
from secserver.db.engine import make_engine
from secserver.signing.pki import DevPki
from secserver.signing.timestamp import REPLY_TYPE
from secserver.signing.tsa import DevTsa

pytestmark = pytest.mark.integration

GRACE = 600.0


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


class CountingTsa:
    """The development TSA served over HTTP in this process; notes each request's peer
    port (one port = one connection)."""

    def __init__(self, directory: Path) -> None:
        self.tsa = DevTsa.from_directory(directory)
        self.peers: list[int] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(body=self.tsa.respond(await request.read(), datetime.now(UTC)),
                            content_type=REPLY_TYPE)

    async def start(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def test_one_connection_then_a_new_one_after_a_restart(
        migrated_url: str, tmp_path: Path, dev_pki: DevPki) -> None:  # noqa: F811
    shutil.copytree(dev_pki.directory, tmp_path / "pki")
    tsa = CountingTsa(tmp_path / "pki")
    port = await tsa.start()
    config = node_config(tmp_path / "node", migrated_url, dev_pki.directory,
                         tsa_url=f"http://127.0.0.1:{port}/", checkpoint_interval=0.1)
    signers = MemberSigners(dev_pki.directory)
    writer = LogWriter(config, tsa_retry=0.2)

    async def log_and_stamp(numbers: range) -> None:
        for n in numbers:
            seq = await writer.append(sample_message(signers, n))
            await wait_for(lambda: writer.health()["last_checkpoint_seq"] > seq  # noqa: B023
                           and writer.health()["untimestamped_checkpoints"] == 0)

    try:
        await writer.start()
        await log_and_stamp(range(4))
        assert len(tsa.peers) >= 4 and len(set(tsa.peers)) == 1  # one kept-alive connection
        await tsa.stop()  # closes the connection the writer keeps
        assert await tsa.start(port) == port
        await log_and_stamp(range(4, 8))
        health = writer.health()
        assert health["status"] == "ok" and health["tsa"] == "ok"
        await writer.stop()
    finally:
        await tsa.stop()
    assert len(set(tsa.peers)) == 2  # one more connection after the restart, then kept

    report = verify_node_log(config)
    assert report.ok, report.problems
    assert report.timestamps == report.checkpoints
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        events = [bytes(c) for c in conn.execute(text(
            "SELECT content FROM log_records WHERE kind = 'system'")).scalars()]
    engine.dispose()
    assert not any(b"event: tsa-failure" in e for e in events)  # the restart went unnoticed
