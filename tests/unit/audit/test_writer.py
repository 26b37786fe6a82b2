"""The log writer on a real database (SQLite and PostgreSQL): group commit, fail closed,
admin events chained in order across restarts, one chain per node in a shared database."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from audit_support import (
    MemberSigners,
    db_rows,
    node_config,
    pki_fixture,  # noqa: F401 (the pki fixture)
    sample_message,
    wait_for,
)

from secserver.audit.checks import verify_node_log
from secserver.audit.errors import LoggingFailed
from secserver.audit.records import parse_fields
from secserver.audit.writer import LogWriter
from secserver.db.engine import make_async_engine


async def test_concurrent_appends_share_commits(migrated_url: str, tmp_path: Path,
                                                pki: Path) -> None:
    config = node_config(tmp_path, migrated_url, pki)
    engine = make_async_engine(migrated_url)
    writer = LogWriter(config, engine=engine)
    await writer.start()
    signers = MemberSigners(pki)
    records = [sample_message(signers, n) for n in range(300)]
    before = writer.health()["commits"]
    seqs = await asyncio.gather(*(writer.append(r) for r in records))
    during = writer.health()["commits"] - before
    await writer.stop()
    await engine.dispose()
    assert sorted(seqs) == list(range(2, 302))  # seq 1 is the start record
    assert 1 <= during <= 300 // 10, f"{during} commits for 300 concurrent records"
    stored = db_rows(migrated_url, "SELECT seq, message_id FROM log_records WHERE kind = 'message' "
                                "ORDER BY seq")
    assert [(int(s), m) for s, m in stored] == [
        (seq, r.message_id) for seq, r in sorted(zip(seqs, records, strict=True))]
    last = db_rows(migrated_url, "SELECT kind FROM log_records ORDER BY seq DESC LIMIT 2")
    assert [k for (k,) in last] == ["checkpoint", "system"]  # stop record, final checkpoint
    assert verify_node_log(config).ok


async def test_fails_closed_then_recovers(migrated_url: str, tmp_path: Path, pki: Path) -> None:
    config = node_config(tmp_path, migrated_url, pki)
    writer = LogWriter(config)
    await writer.start()
    signers = MemberSigners(pki)
    await writer.append(sample_message(signers, 1))
    db_rows(migrated_url, "ALTER TABLE log_records RENAME TO log_records_away")
    try:
        with pytest.raises(LoggingFailed) as failed:
            await writer.append(sample_message(signers, 2))
        assert failed.value.code == "LoggingFailed" and failed.value.http_status == 500
        health = writer.health()
        assert health["status"] == "failing"
        assert "cannot commit log records" in health["reason"]
    finally:
        db_rows(migrated_url, "ALTER TABLE log_records_away RENAME TO log_records")
    seq = await writer.append(sample_message(signers, 3))
    assert writer.health()["status"] == "ok"
    await writer.stop()
    assert seq == 3  # the failed record took no seq
    report = verify_node_log(config)
    assert report.ok and report.messages == 2


async def test_encrypt_policy_needs_a_key(migrated_url: str, tmp_path: Path, pki: Path) -> None:
    writer = LogWriter(node_config(tmp_path, migrated_url, pki))
    await writer.start()
    try:
        with pytest.raises(LoggingFailed, match="body_key_file"):
            await writer.append(sample_message(MemberSigners(pki), 1, policy="encrypt"))
    finally:
        await writer.stop()


def add_admin_event(url: str, number: int) -> None:
    db_rows(url, "INSERT INTO admin_events (at, actor, action, object, before, after) "
                 "VALUES (:at, 'alice', 'acl.grant', :object, NULL, :after)",
            at=datetime.now(UTC), object=f"right {number}", after=f'{{"n": {number}}}')


async def test_admin_events_chained_in_order_across_restarts(migrated_url: str, tmp_path: Path,
                                                             pki: Path) -> None:
    config = node_config(tmp_path, migrated_url, pki)
    add_admin_event(migrated_url, 1)
    writer = LogWriter(config, admin_poll=0.1)
    await writer.start()
    for n in (2, 3):
        add_admin_event(migrated_url, n)
    await wait_for(lambda: writer.health()["last_admin_event_id"] == 3, timeout=2.0)
    await writer.stop()
    for n in (4, 5):
        add_admin_event(migrated_url, n)  # while the node is down
    writer = LogWriter(config, admin_poll=0.1)
    await writer.start()
    await wait_for(lambda: writer.health()["last_admin_event_id"] == 5, timeout=2.0)
    await writer.stop()
    contents = [parse_fields(bytes(c)) for (c,) in db_rows(
        migrated_url, "SELECT content FROM log_records WHERE kind = 'admin' ORDER BY seq")]
    assert [int(f["event-id"]) for f in contents] == [1, 2, 3, 4, 5]
    assert contents[4]["object"] == "right 5" and contents[4]["after"] == '{"n": 5}'
    assert verify_node_log(config).ok


async def test_two_nodes_share_one_database(migrated_url: str, tmp_path: Path,
                                            pki: Path) -> None:
    toyono = node_config(tmp_path / "toyono", migrated_url, pki)
    otta = node_config(tmp_path / "otta", migrated_url, pki, node="JP-DEV/COM/OTTA/SS1",
                       node_dir="COM.OTTA.SS1")
    writers = [LogWriter(toyono), LogWriter(otta)]
    for writer in writers:
        await writer.start()
    signers = MemberSigners(pki)
    await asyncio.gather(*(w.append(sample_message(signers, n))
                           for n in range(40) for w in writers))
    for writer in writers:
        await writer.stop()
    for config in (toyono, otta):
        report = verify_node_log(config)
        assert report.ok and report.warnings == () and report.messages == 40


async def test_a_new_log_key_is_recorded(migrated_url: str, tmp_path: Path, pki: Path) -> None:
    import shutil
    from datetime import timedelta

    from secserver.identifiers import ServerId
    from secserver.signing.keys import (
        load_certificate,
        load_private_key,
        write_certificate,
        write_private_key,
    )
    from secserver.signing.pki import generate_key, issue_certificate, server_subject

    config = node_config(tmp_path / "node", migrated_url, pki)
    writer = LogWriter(config)
    await writer.start()
    await writer.append(sample_message(MemberSigners(pki), 1))
    await writer.stop()

    renewed = tmp_path / "pki"
    shutil.copytree(pki, renewed)
    key = generate_key("ec-p256")
    now = datetime.now(UTC)
    cert = issue_certificate(
        subject=server_subject(ServerId.parse("JP-DEV/GOV/TOYONO/SS1"), role="log"),
        public_key=key.public_key(), issuer_key=load_private_key(pki / "ca/ca.key"),
        issuer=load_certificate(pki / "ca/ca.crt"), profile="log",
        not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=30))
    folder = renewed / "servers/GOV.TOYONO.SS1"
    write_private_key(folder / "log.key", key, None)
    write_certificate(folder / "log.crt", cert)
    config = node_config(tmp_path / "node", migrated_url, renewed)
    writer = LogWriter(config)
    await writer.start()
    await writer.append(sample_message(MemberSigners(pki), 2))
    await writer.stop()
    events = [parse_fields(bytes(c)) for (c,) in db_rows(
        migrated_url, "SELECT content FROM log_records WHERE kind = 'system' ORDER BY seq")]
    assert [e["event"] for e in events] == ["start", "stop", "start", "key-change", "stop"]
    assert events[3]["detail"].startswith("log certificate sha256 ")
    report = verify_node_log(config)  # checkpoints under both keys verify
    assert report.ok and report.checkpoints == 2


async def test_grace_period_applies_only_with_a_tsa(migrated_url: str, tmp_path: Path,
                                                    pki: Path) -> None:
    from datetime import timedelta

    from secserver.audit.errors import LogTimestampOverdue

    async def tsa_down(_data: bytes) -> bytes:
        raise OSError("connection refused")

    config = node_config(tmp_path, migrated_url, pki, tsa_url="http://127.0.0.1:9/",
                         grace_period=60, checkpoint_interval=0.1)
    writer = LogWriter(config, timestamper=tsa_down, tsa_retry=0.05)
    await writer.start()
    await writer.append(sample_message(MemberSigners(pki), 1))
    await wait_for(lambda: writer.health()["untimestamped_checkpoints"] >= 1
                   and writer.health()["tsa"] == "unreachable")
    later = datetime.now(UTC) + timedelta(seconds=61)
    with pytest.raises(LogTimestampOverdue, match="grace_period"):
        writer.check_accepting(later)
    await writer.stop()
    # the same log, the TSA switched off in the configuration: nothing is waited for
    writer = LogWriter(node_config(tmp_path, migrated_url, pki, grace_period=60))
    await writer.start()
    writer.check_accepting(later)
    assert writer.health()["tsa"] == "disabled"
    await writer.stop()


async def test_a_lone_append_is_not_held_back(migrated_url: str, tmp_path: Path,
                                              pki: Path) -> None:
    writer = LogWriter(node_config(tmp_path, migrated_url, pki))
    await writer.start()
    try:
        signers = MemberSigners(pki)
        before = writer.health()
        for n in range(5):  # one at a time: each is committed at once, in its own batch
            await writer.append(sample_message(signers, n))
        after = writer.health()
        assert after["batches"] - before["batches"] == 5
        assert after["batched_records"] - before["batched_records"] == 5
        assert after["gather_iterations"] == 0
    finally:
        await writer.stop()


async def test_batches_grow_under_concurrent_appends(migrated_url: str, tmp_path: Path,
                                                     pki: Path) -> None:
    from secserver.db.committer import GATHER_ROUNDS

    config = node_config(tmp_path, migrated_url, pki)
    writer = LogWriter(config)
    await writer.start()
    signers = MemberSigners(pki)
    records = [sample_message(signers, n) for n in range(10 * GATHER_ROUNDS)]  # < the limit
    before = writer.health()
    appends: list[asyncio.Future[int]] = []
    for n, record in enumerate(records):  # two at once, then one per event-loop iteration
        appends.append(asyncio.ensure_future(writer.append(record)))
        if n:
            await asyncio.sleep(0)
    seqs = await asyncio.gather(*appends)
    after = writer.health()
    await writer.stop()
    batches = after["batches"] - before["batches"]
    assert after["batched_records"] - before["batched_records"] == len(records)
    # the first batch holds two records, so every later one gathers for GATHER_ROUNDS
    # iterations, in which as many records come in: about one batch per GATHER_ROUNDS
    assert after["gather_iterations"] >= GATHER_ROUNDS
    assert batches <= len(records) // GATHER_ROUNDS + 2, f"{batches} batches"
    assert sorted(seqs) == list(range(seqs[0], seqs[0] + len(records)))
    assert verify_node_log(config).ok


def seen_ids(url: str) -> dict[str, float]:
    return {str(m): float(at) for m, at in db_rows(
        url, "SELECT message_id, seen_at FROM exchange_seen_messages")}


@pytest.mark.parametrize("count", [10, 40])  # PostgreSQL: one statement / a transaction
async def test_reservations_get_the_verdict_of_their_own_row(
        migrated_url: str, tmp_path: Path, pki: Path, count: int) -> None:
    config = node_config(tmp_path, migrated_url, pki)
    known = {0, 7, count // 2, count - 1}  # another node (or an earlier run) saw these
    for n in sorted(known):
        db_rows(migrated_url, "INSERT INTO exchange_seen_messages (client, message_id, "
                "seen_at) VALUES ('C/1', :m, 1.0)", m=f"r{n}")
    writer = LogWriter(config)
    await writer.start()
    signers = MemberSigners(pki)
    try:
        before = writer.health()["batches"]
        results: list[Any] = await asyncio.gather(
            *(writer.append_reserving(sample_message(signers, n), "C/1", f"r{n}", 50.0 + n)
              for n in range(count)),
            writer.append(sample_message(signers, 1000)),  # no reservation, same batch
            writer.append_reserving(sample_message(signers, 1001), "C/1", "r1", 99.0))
        assert writer.health()["batches"] - before == 1  # all in one transaction
    finally:
        await writer.stop()
    verdicts = [new for _seq, new in results[:count]]
    assert verdicts == [n not in known for n in range(count)]
    # r1 twice in one batch: one row, so only its first reservation is new
    assert results[-1][1] is False
    seqs = [s for s, _new in results[:count]] + [results[count], results[-1][0]]
    assert sorted(seqs) == list(range(seqs[0], seqs[0] + count + 2))  # every record logged
    seen = seen_ids(migrated_url)
    assert sorted(seen) == sorted(f"r{n}" for n in range(count))
    assert {m: at for m, at in seen.items() if at == 1.0} == {f"r{n}": 1.0 for n in known}
    assert seen["r1"] == 51.0  # the first reservation's row, not the duplicate's
    assert (writer.reservations, writer.refused) == (count + 1, len(known) + 1)
    assert verify_node_log(config).ok


@pytest.mark.parametrize("away", ["exchange_seen_messages", "log_records"])
async def test_a_failed_commit_fails_every_record_and_reservation(
        migrated_url: str, tmp_path: Path, pki: Path, away: str) -> None:
    config = node_config(tmp_path, migrated_url, pki)
    writer = LogWriter(config)
    await writer.start()
    signers = MemberSigners(pki)
    try:
        await writer.append_reserving(sample_message(signers, 1), "C/1", "ok", 10.0)
        db_rows(migrated_url, f"ALTER TABLE {away} RENAME TO moved_away")
        try:
            results = await asyncio.gather(
                writer.append_reserving(sample_message(signers, 2), "C/1", "lost", 11.0),
                writer.append(sample_message(signers, 3)),
                writer.append_reserving(sample_message(signers, 4), "C/1", "ok", 11.0),
                return_exceptions=True)
            assert all(isinstance(r, LoggingFailed) for r in results), results
        finally:
            db_rows(migrated_url, f"ALTER TABLE moved_away RENAME TO {away}")
        assert seen_ids(migrated_url) == {"ok": 10.0}  # nothing of the failed batch
        # nothing was stored, so the id is new next time
        seq, new = await writer.append_reserving(sample_message(signers, 5), "C/1", "lost",
                                                 12.0)
        assert new and seq == 3  # start record, "ok"; the failed batch took no seq
    finally:
        await writer.stop()
    assert verify_node_log(config).ok


async def test_old_reservations_are_pruned_on_the_writer_thread(
        migrated_url: str, tmp_path: Path, pki: Path) -> None:
    writer = LogWriter(node_config(tmp_path, migrated_url, pki))
    await writer.start()
    signers = MemberSigners(pki)
    try:
        for n, at in enumerate((10.0, 20.0, 30.0)):
            await writer.append_reserving(sample_message(signers, n), "C/1", f"p{n}", at)
        writer.prune_reservations(20.0)  # done after the next batch
        assert len(seen_ids(migrated_url)) == 3
        await writer.append(sample_message(signers, 9))
        await wait_for(lambda: sorted(seen_ids(migrated_url)) == ["p1", "p2"], timeout=10)
    finally:
        await writer.stop()
