"""The pure verifier over in-memory records: each kind of damage, named precisely."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from secserver.audit.chain import GENESIS, chain_hash
from secserver.audit.records import (
    CheckpointRecord,
    Evidence,
    MessageRecord,
    SystemRecord,
    canonical_bytes,
)
from secserver.audit.store import StoredRecord
from secserver.audit.verify import ChainVerifier, Problem, merge_problems, verify_records
from secserver.signing.merkle import merkle_root

NODE = "JP-DEV/GOV/TOYONO/SS1"
AT = "2026-11-22T00:12:07.123456Z"
KEY = b"checkpoint-key"


def sign(content: bytes) -> bytes:
    return hashlib.sha256(KEY + content).digest()


def check_signature(content: bytes, signature: bytes, _at: datetime) -> None:
    if signature != sign(content):
        raise ValueError("bad signature")


def check_timestamp(token: bytes, content: bytes, at: datetime) -> datetime:
    if token != hashlib.sha256(b"tsa" + content).digest():
        raise ValueError("bad token")
    return at


def build(count: int, batch: int = 5) -> tuple[list[StoredRecord], dict[int, bytes]]:
    """A valid log: system record 1, messages, a checkpoint after every ``batch``."""
    records: list[StoredRecord] = []
    tokens: dict[int, bytes] = {}
    prev, last_cp = GENESIS, 0
    hashes: list[bytes] = []
    for seq in range(1, count + 1):
        body = signature = document = None
        if len(hashes) == batch:
            cp = CheckpointRecord(first_seq=last_cp + 1, last_seq=seq - 1,
                                  merkle_root=merkle_root(hashes), chain_head=prev,
                                  previous_checkpoint=last_cp)
            content = canonical_bytes(NODE, seq, AT, cp)
            kind, mid, signature = "checkpoint", None, sign(content)
            tokens[seq] = hashlib.sha256(b"tsa" + content).digest()
            hashes, last_cp = [], seq
        elif seq == 1:
            kind, mid = "system", None
            content = canonical_bytes(NODE, seq, AT, SystemRecord(event="start"))
        else:
            kind, mid = "message", f"m-{seq}"
            body, document, signature = b"body %d" % seq, b"doc", b"sig"
            record = MessageRecord(message_id=mid, direction="request", side="consumer",
                                   client="JP-DEV/GOV/TOYONO/X", service="JP-DEV/COM/OTTA/Y/s",
                                   method="GET", path="/", body_size=7, body_digest="d",
                                   at=datetime(2026, 1, 1, tzinfo=UTC), body=body,
                                   body_policy="store", signed_document=document,
                                   signature=signature)
            content = canonical_bytes(NODE, seq, AT, record, Evidence(stored_body=body))
        digest = chain_hash(prev, content)
        records.append(StoredRecord(seq, kind, AT, mid, prev, digest, content, body, document,
                                    signature))
        if kind != "checkpoint":
            hashes.append(digest)
        prev = digest
    return records, tokens


def check(records: list[StoredRecord], tokens: dict[int, bytes] | None = None,
          **options: object) -> tuple[list[str], list[str]]:
    report = verify_records(records, NODE, check_signature=check_signature,
                            check_timestamp=check_timestamp,
                            timestamps=tokens or {}, **options)
    return [p.message for p in report.problems], [w.message for w in report.warnings]


def test_a_valid_log() -> None:
    records, tokens = build(24)
    report = verify_records(records, NODE, check_signature=check_signature,
                            check_timestamp=check_timestamp, timestamps=tokens)
    assert report.ok and report.warnings == ()
    assert (report.records, report.checkpoints, report.timestamps) == (24, 4, 4)
    assert report.messages == 19


def test_unanchored_tail_is_a_warning() -> None:
    records, tokens = build(27)
    problems, warnings = check(records, tokens)
    assert problems == []
    assert warnings == ["records 25..27 are not yet anchored by a checkpoint"]


def test_waiting_timestamps_warn_but_a_missing_one_in_between_is_a_problem() -> None:
    records, tokens = build(24)
    del tokens[24]
    assert check(records, tokens) == ([], ["checkpoint 24 not yet timestamped"])
    del tokens[12]
    problems, _ = check(records, tokens)
    assert problems == ["checkpoint 12 timestamp missing (later checkpoints have one)"]


def test_edited_content() -> None:
    records, tokens = build(24)
    r = records[8]
    records[8] = r._replace(content=r.content.replace(b"GET", b"PUT"))
    assert check(records, tokens)[0] == ["record 9 modified: its content does not match its hash"]


def test_edited_body() -> None:
    records, tokens = build(24)
    records[3] = records[3]._replace(body=b"other")
    assert check(records, tokens)[0] == [
        "record 4 modified: the stored body does not match its digest in the record"]


def test_edited_column() -> None:
    records, tokens = build(24)
    records[3] = records[3]._replace(message_id="m-99")
    assert check(records, tokens)[0] == [
        "record 4 modified: its stored message id 'm-99' differs from the hashed record"]


def test_message_id_put_on_another_kind_of_record() -> None:
    records, tokens = build(12)
    records[0] = records[0]._replace(message_id="m-5")
    records[5] = records[5]._replace(message_id="m-5")
    assert check(records, tokens)[0] == [
        "record 1 modified: its stored message id 'm-5' differs from the hashed record (none)",
        "record 6 modified: its stored message id 'm-5' differs from the hashed record (none)"]


def test_rewritten_history_fails_at_the_checkpoint_signature() -> None:
    """A forger who rewrites a record and rehashes every later record and checkpoint
    cannot sign the changed checkpoint."""
    records, tokens = build(12)
    prev = records[2].prev_hash
    out = records[:2]
    hashes: list[bytes] = []
    for r in records[2:]:
        content = r.content.replace(b"body 3", b"body X") if r.seq == 3 else r.content
        if r.kind == "checkpoint":
            content = content.split(b"merkle-root: ")[0] + \
                f"merkle-root: {merkle_root([out[1].hash, *hashes]).hex()}\nchain-head: " \
                f"{prev.hex()}\nprevious-checkpoint: 0\n".encode() if r.seq == 6 else content
        digest = chain_hash(prev, content)
        out.append(r._replace(prev_hash=prev, hash=digest, content=content,
                              body=b"body X" if r.seq == 3 else r.body))
        if r.kind != "checkpoint":
            hashes.append(digest)
        prev = digest
    problems, _ = check(out, tokens)
    assert problems[0] == "record 3 modified: the stored body does not match its digest " \
                          "in the record" or problems[0].startswith("checkpoint 6")
    assert any(p.startswith("checkpoint 6 signature invalid: bad signature") for p in problems)
    assert any(p.startswith("checkpoint 6 timestamp invalid: bad token") for p in problems)


def test_gap_swap_forgery_and_truncation() -> None:
    records, tokens = build(30)
    assert check(records[:9] + records[10:], tokens)[0] == [
        "records missing between 9 and 11 (record 10)"]
    swapped = list(records)
    swapped[14], swapped[15] = (records[15]._replace(seq=15), records[14]._replace(seq=16))
    assert check(swapped, tokens)[0] == [
        "order broken: records 15..16 are stored under other sequence numbers"]
    problems, warnings = check(records[:20], tokens)
    assert problems == ["log truncated after record 20: checkpoint 30 has a timestamp but its "
                        "record is missing"]
    assert warnings == ["records 19..20 are not yet anchored by a checkpoint"]
    problems, _ = check(records[:20], anchor_seq=24, anchor_hash=records[23].hash)
    assert problems[0].startswith("log truncated after record 20: the node noted checkpoint 24")


def test_forged_insertion_with_renumbering() -> None:
    records, _ = build(18)
    base = records[7]
    forged_content = base.content.replace(b"m-8", b"m-x")
    forged = base._replace(content=forged_content, message_id="m-x",
                           hash=chain_hash(base.prev_hash, forged_content))
    shifted = [r._replace(seq=r.seq + 1) for r in records[7:]]
    problems, _ = check([*records[:7], forged, *shifted])
    assert problems[0] == "forged record inserted at 8: the next record chains to record 7, " \
                          "not to it"
    assert problems[1].startswith("order broken: records 9..19")


def test_range_start_mid_chain() -> None:
    records, tokens = build(24)
    problems, warnings = check(records[12:], tokens, start_seq=13,
                               prev_hash=records[11].hash, last_checkpoint=12)
    assert (problems, warnings) == ([], [])
    problems, _ = check(records[12:], tokens, start_seq=13, prev_hash=GENESIS,
                        last_checkpoint=12)
    assert problems == ["forged record at 13: it does not chain to record 12 (inserted or "
                        "replaced)"]


def test_merge_problems() -> None:
    merged = merge_problems([Problem("modified", s, s, f"record {s} modified: x")
                             for s in (3, 4, 5, 9)])
    assert [p.message for p in merged] == [
        "records 3..5 modified (first: record 3 modified: x)", "record 9 modified: x"]


def test_message_signature_jobs_skip_refused_messages() -> None:
    records, _ = build(4)
    jobs: list[object] = []
    verifier = ChainVerifier(NODE, signature_sink=jobs.append)
    verifier.feed_all(records)
    assert len(jobs) == 3


@pytest.mark.parametrize("index", range(1, 24))
def test_any_single_deletion_or_edit_is_caught(index: int) -> None:
    records, tokens = build(24)
    assert check(records[:index] + records[index + 1:], tokens)[0] != []
    r = records[index]
    changed = r._replace(content=r.content[:-2] + bytes([r.content[-2] ^ 1]) + b"\n")
    assert check([*records[:index], changed, *records[index + 1:]], tokens)[0] != []
