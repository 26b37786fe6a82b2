"""Tampering straight on the database (sqlite3 / psql and SQL), then `secserver audit verify`.

Each test writes a real log (writer, signed checkpoints, CMS-signed messages), changes it
the way an insider with database access could, and checks the verifier names the problem.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "audit"))

from audit_support import (
    MemberSigners,
    logged_node_fixture,
    pki_fixture,  # noqa: F401 (the pki fixture)
    run_secserver,
    sample_message,
)

from secserver.audit.chain import chain_hash
from secserver.audit.records import MessageRecord, canonical_bytes
from secserver.config import NodeConfig

pytestmark = pytest.mark.integration

# The tests tamper through hand-written SQL on purpose.
# ruff: noqa: S608


config = logged_node_fixture(exchanges=10, checkpoint_records=6)


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
    done = run_secserver("audit", "verify", "--config", str(config.path), "--json", *args)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def problems(report: dict[str, Any]) -> list[str]:
    return [p["message"] for p in report["problems"]]


def tamper(config: NodeConfig, statement: str,
           *verify_args: str) -> tuple[list[str], dict[str, Any]]:
    """Run SQL on the node's database, then `audit verify`, which must fail (exit 1):
    the problems' messages and the whole report."""
    sql(config.database_url, statement)
    code, report = verify(config, *verify_args)
    assert code == 1, report
    return problems(report), report


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
    found, _ = tamper(config, f"UPDATE log_records SET body = {blob(url, changed)} "
                              f"WHERE seq = {seq}", "--no-signatures")
    assert found == [f"record {seq} modified: the stored body does not match its digest in "
                     "the record"]


def test_a_status(config: NodeConfig) -> None:
    url = config.database_url
    seq = message_seq(url, 7)
    if url.startswith("sqlite"):
        statement = ("UPDATE log_records SET content = CAST(replace(CAST(content AS TEXT), "
                     f"'status: 200', 'status: 403') AS BLOB) WHERE seq = {seq}")
    else:
        statement = ("UPDATE log_records SET content = convert_to(replace(convert_from("
                     f"content, 'UTF8'), 'status: 200', 'status: 403'), 'UTF8') WHERE seq = {seq}")
    found, _ = tamper(config, statement)
    assert found == [f"record {seq} modified: its content does not match its hash"]


def test_a_time(config: NodeConfig) -> None:
    seq = message_seq(config.database_url, 2)
    [problem], _ = tamper(config, "UPDATE log_records SET at = '2020-01-01T00:00:00.000000Z' "
                                  f"WHERE seq = {seq}")
    assert problem.startswith(f"record {seq} modified: its stored 'at' column")


def test_delete_a_row(config: NodeConfig) -> None:
    seq = message_seq(config.database_url, 9)
    found, _ = tamper(config, f"DELETE FROM log_records WHERE seq = {seq}")
    assert found == [f"records missing between {seq - 1} and {seq + 1} (record {seq})"]


def test_swap_two_rows(config: NodeConfig) -> None:
    seq = message_seq(config.database_url, 11)
    found, _ = tamper(config, f"UPDATE log_records SET seq = -1 WHERE seq = {seq}; "
                              f"UPDATE log_records SET seq = {seq} WHERE seq = {seq + 1}; "
                              f"UPDATE log_records SET seq = {seq + 1} WHERE seq = -1")
    assert found == [f"order broken: records {seq}..{seq + 1} are stored under other "
                     "sequence numbers"]


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
    found, _ = tamper(
        config,
        f"UPDATE log_records SET seq = -seq - 1 WHERE seq >= {seq}; "
        "UPDATE log_records SET seq = -seq WHERE seq < 0; "
        "INSERT INTO log_records (node_id, seq, kind, at, message_id, prev_hash, hash, "
        f"content, signed_document, signature) VALUES ('{node}', {seq}, 'message', '{at}', "
        f"'m-99', {blob(url, prev)}, {blob(url, digest)}, {blob(url, content)}, "
        f"{blob(url, forged.signed_document or b'')}, {blob(url, forged.signature or b'')})")
    assert found[0] == (f"forged record inserted at {seq}: the next record chains to record "
                        f"{seq - 1}, not to it")
    assert found[1].startswith(f"order broken: records {seq + 1}..")


def test_truncate_the_tail(config: NodeConfig) -> None:
    seq = message_seq(config.database_url, 12)
    [problem], report = tamper(config, f"DELETE FROM log_records WHERE seq > {seq}")
    assert problem.startswith(f"log truncated after record {seq}: the node noted checkpoint")
    assert report["warnings"][0]["message"].endswith("are not yet anchored by a checkpoint")


def test_checkpoint_signature_from_another_checkpoint(config: NodeConfig) -> None:
    first, second = (int(s) for s in sql(
        config.database_url,
        "SELECT seq FROM log_records WHERE kind = 'checkpoint' ORDER BY seq LIMIT 2").split())
    found, _ = tamper(config, "UPDATE log_records SET signature = (SELECT signature FROM "
                              f"log_records WHERE seq = {second}) WHERE seq = {first}")
    assert len(found) == 1, found
    assert found[0].startswith(f"checkpoint {first} signature invalid: ")
