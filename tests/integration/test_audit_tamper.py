"""Tampering straight on the database (sqlite3 / psql and SQL), then `secserver audit verify`.

Each test writes a real log (writer, signed checkpoints, CMS-signed messages), changes it
the way an insider with database access could, and checks the verifier names the problem.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "audit"))

from audit_support import MemberSigners, node_config, sample_message, write_sample_log

from secserver.audit.chain import chain_hash
from secserver.audit.records import MessageRecord, canonical_bytes
from secserver.config import NodeConfig
from secserver.signing.pki import init_dev_pki

pytestmark = pytest.mark.integration

# The tests tamper through hand-written SQL on purpose.
# ruff: noqa: S608


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_dev_pki(directory)
    return directory


@pytest.fixture
def config(migrated_url: str, tmp_path: Path, pki: Path) -> NodeConfig:
    cfg = node_config(tmp_path / "node", migrated_url, pki, checkpoint_records=6)
    asyncio.run(write_sample_log(cfg, pki, exchanges=10))
    return cfg


def sql(url: str, statement: str) -> str:
    """Run SQL with the database's own command-line client."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        assert database is not None
        command = ["sqlite3", database, statement]
    else:
        command = ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", statement]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def blob(url: str, data: bytes) -> str:
    return f"X'{data.hex()}'" if url.startswith("sqlite") else f"'\\x{data.hex()}'::bytea"


def hex_of(url: str, column: str) -> str:
    return f"hex({column})" if url.startswith("sqlite") else f"encode({column}, 'hex')"


def message_seq(url: str, offset: int) -> int:
    return int(sql(url, "SELECT seq FROM log_records WHERE kind = 'message' "
                        f"ORDER BY seq LIMIT 1 OFFSET {offset}"))


def verify(config: NodeConfig, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "secserver", "audit", "verify", "--config",
                           str(config.path), "--json", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def problems(report: dict[str, Any]) -> list[str]:
    return [p["message"] for p in report["problems"]]


def test_untouched_log_verifies(config: NodeConfig) -> None:
    code, report = verify(config)
    assert code == 0, report
    assert report["ok"] is True
    assert report["messages"] == 20
    assert report["message_signatures_checked"] == 20
    assert report["checkpoints"] >= 4
    assert report["problems"] == [] and report["warnings"] == []


def test_one_byte_of_a_body(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 4)
    body = bytes.fromhex(sql(url, f"SELECT {hex_of(url, 'body')} FROM log_records "
                                  f"WHERE seq = {seq}"))
    changed = body[:5] + bytes([body[5] ^ 1]) + body[6:]
    sql(url, f"UPDATE log_records SET body = {blob(url, changed)} WHERE seq = {seq}")
    code, report = verify(config, "--no-signatures")
    assert code == 1
    assert problems(report) == [f"record {seq} modified: the stored body does not match its "
                                "digest in the record"]


def test_a_status(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 7)
    if url.startswith("sqlite"):
        sql(url, "UPDATE log_records SET content = CAST(replace(CAST(content AS TEXT), "
                 f"'status: 200', 'status: 403') AS BLOB) WHERE seq = {seq}")
    else:
        sql(url, "UPDATE log_records SET content = convert_to(replace(convert_from(content, "
                 f"'UTF8'), 'status: 200', 'status: 403'), 'UTF8') WHERE seq = {seq}")
    code, report = verify(config)
    assert code == 1
    assert problems(report) == [f"record {seq} modified: its content does not match its hash"]


def test_a_time(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 2)
    sql(url, f"UPDATE log_records SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = {seq}")
    code, report = verify(config)
    assert code == 1
    [problem] = problems(report)
    assert problem.startswith(f"record {seq} modified: its stored 'at' column")


def test_delete_a_row(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 9)
    sql(url, f"DELETE FROM log_records WHERE seq = {seq}")
    code, report = verify(config)
    assert code == 1
    assert problems(report) == [f"records missing between {seq - 1} and {seq + 1} "
                                f"(record {seq})"]


def test_swap_two_rows(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 11)
    sql(url, f"UPDATE log_records SET seq = -1 WHERE seq = {seq}; "
             f"UPDATE log_records SET seq = {seq} WHERE seq = {seq + 1}; "
             f"UPDATE log_records SET seq = {seq + 1} WHERE seq = -1")
    code, report = verify(config)
    assert code == 1
    assert problems(report) == [f"order broken: records {seq}..{seq + 1} are stored under "
                                "other sequence numbers"]


def test_insert_a_forged_row(config: NodeConfig, pki: Path) -> None:
    """The forger knows the format: the row chains to its predecessor and the later rows
    are renumbered to make room; the next genuine record still chains past it."""
    url = config.database_url
    seq = message_seq(url, 5)
    node = config.node.server_id
    prev = bytes.fromhex(sql(url, f"SELECT {hex_of(url, 'hash')} FROM log_records "
                                  f"WHERE seq = {seq - 1}"))
    at = sql(url, f"SELECT at FROM log_records WHERE seq = {seq - 1}")
    forged: MessageRecord = sample_message(MemberSigners(pki), 99, policy="digest")
    content = canonical_bytes(node, seq, at, forged)
    digest = chain_hash(prev, content)
    sql(url, f"UPDATE log_records SET seq = -seq - 1 WHERE seq >= {seq}; "
             "UPDATE log_records SET seq = -seq WHERE seq < 0; "
             "INSERT INTO log_records (node_id, seq, kind, at, message_id, prev_hash, hash, "
             f"content, signed_document, signature) VALUES ('{node}', {seq}, 'message', '{at}', "
             f"'m-99', {blob(url, prev)}, {blob(url, digest)}, {blob(url, content)}, "
             f"{blob(url, forged.signed_document or b'')}, {blob(url, forged.signature or b'')})")
    code, report = verify(config)
    assert code == 1
    found = problems(report)
    assert found[0] == (f"forged record inserted at {seq}: the next record chains to record "
                        f"{seq - 1}, not to it")
    assert found[1].startswith(f"order broken: records {seq + 1}..")


def test_truncate_the_tail(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 12)
    sql(url, f"DELETE FROM log_records WHERE seq > {seq}")
    code, report = verify(config)
    assert code == 1
    [problem] = problems(report)
    assert problem.startswith(f"log truncated after record {seq}: the node noted checkpoint")
    assert report["warnings"][0]["message"].endswith("are not yet anchored by a checkpoint")


def test_checkpoint_signature_from_another_checkpoint(config: NodeConfig) -> None:
    url = config.database_url
    first, second = (int(s) for s in sql(
        url, "SELECT seq FROM log_records WHERE kind = 'checkpoint' ORDER BY seq LIMIT 2"
    ).split())
    sql(url, "UPDATE log_records SET signature = (SELECT signature FROM log_records WHERE "
             f"seq = {second}) WHERE seq = {first}")
    code, report = verify(config)
    assert code == 1
    found = problems(report)
    assert len(found) == 1, found
    assert found[0].startswith(f"checkpoint {first} signature invalid: ")
