"""Canonical record bytes: the exact text docs/audit.md defines."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secserver.audit.records import (
    AdminRecord,
    CheckpointRecord,
    Evidence,
    MessageRecord,
    SystemRecord,
    canonical_bytes,
    escape,
    format_time,
    parse_fields,
    parse_time,
    unescape,
)

NODE = "JP-DEV/GOV/TOYONO/SS1"
AT = "2026-11-22T00:12:07.123456Z"
WHEN = datetime(2026, 11, 22, 0, 12, 7, 5, tzinfo=UTC)


def message(**changes: object) -> MessageRecord:
    values: dict[str, object] = dict(
        message_id="abc-1", direction="request", side="consumer",
        client="JP-DEV/GOV/TOYONO/ELDERCARE", service="JP-DEV/COM/OTTA/TAGS/locations/v1",
        method="GET", path="/tags?since=1", body_size=3, body_digest="AAAA", at=WHEN,
        status=200, peer="JP-DEV/COM/OTTA/SS1", duration_ms=12.5,
        signed_document=b"doc", signature=b"sig")
    values.update(changes)
    return MessageRecord(**values)  # type: ignore[arg-type]


def test_message_record_bytes_are_exactly_as_documented() -> None:
    content = canonical_bytes(NODE, 42, AT, message(),
                              Evidence(stored_body=b"abc", body_sha256=bytes(32)))
    assert content.decode() == (
        "record: 1\n"
        "node: JP-DEV/GOV/TOYONO/SS1\n"
        "seq: 42\n"
        "kind: message\n"
        "at: 2026-11-22T00:12:07.123456Z\n"
        "message-id: abc-1\n"
        "direction: request\n"
        "side: consumer\n"
        "message-at: 2026-11-22T00:12:07.000005Z\n"
        "client: JP-DEV/GOV/TOYONO/ELDERCARE\n"
        "service: JP-DEV/COM/OTTA/TAGS/locations/v1\n"
        "method: GET\n"
        "path: /tags?since=1\n"
        "status: 200\n"
        "error-code: \n"
        "reason: \n"
        "peer: JP-DEV/COM/OTTA/SS1\n"
        "duration-ms: 12.500\n"
        "body-size: 3\n"
        "body-digest: AAAA\n"
        "body-policy: digest\n"
        f"body-sha256: {'00' * 32}\n"
        "body-stored: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        f"signed-document: {hashlib.sha256(b'doc').hexdigest()}\n"
        f"signature: {hashlib.sha256(b'sig').hexdigest()}\n")


def test_values_cannot_forge_lines() -> None:
    record = message(path="/a\nstatus: 500", reason="50% off\r\n")
    content = canonical_bytes(NODE, 1, AT, record)
    assert b"path: /a%0Astatus: 500\n" in content
    assert b"reason: 50%25 off%0D%0A\n" in content
    fields = parse_fields(content)
    assert fields["path"] == "/a\nstatus: 500"
    assert fields["reason"] == "50% off\r\n"
    assert fields["status"] == "200"


@pytest.mark.parametrize("text", ["", "%", "%0A", "a\nb\rc%25", "日本語 %%"])
def test_escape_round_trip(text: str) -> None:
    assert unescape(escape(text)) == text
    assert "\n" not in escape(text) and "\r" not in escape(text)


def test_other_kinds() -> None:
    admin = AdminRecord(event_id=7, event_at=WHEN, actor="alice", action="acl.grant",
                        object="right 3", before=None, after='{"a": 1}')
    assert canonical_bytes(NODE, 2, AT, admin).decode().endswith(
        "kind: admin\nat: 2026-11-22T00:12:07.123456Z\nevent-id: 7\n"
        "event-at: 2026-11-22T00:12:07.000005Z\nactor: alice\naction: acl.grant\n"
        'object: right 3\nbefore: \nafter: {"a": 1}\n')
    system = SystemRecord(event="tsa-failure", detail="http://tsa/: timeout")
    assert canonical_bytes(NODE, 3, AT, system).endswith(
        b"event: tsa-failure\ndetail: http://tsa/: timeout\n")
    checkpoint = CheckpointRecord(first_seq=1, last_seq=3, merkle_root=b"\x01" * 32,
                                  chain_head=b"\x02" * 32, previous_checkpoint=0)
    assert canonical_bytes(NODE, 4, AT, checkpoint).endswith(
        f"first-seq: 1\nlast-seq: 3\ncount: 3\nmerkle-root: {'01' * 32}\n"
        f"chain-head: {'02' * 32}\nprevious-checkpoint: 0\n".encode())


def test_times_are_utc_with_microseconds() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert format_time(datetime(2026, 1, 1, 9, 0, tzinfo=tokyo)) == "2026-01-01T00:00:00.000000Z"
    assert parse_time("2026-01-01T00:00:00.000000Z") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))


# --- the one-piece message bytes against the field-by-field composition ---

def _reference_bytes(node: str, seq: int, at: str, record: MessageRecord,
                     evidence: Evidence | None) -> bytes:
    """``canonical_bytes`` of a message as composed before the fast path (8795409)."""
    from secserver.audit.records import evidence_tail, header_bytes, record_fields
    body = "".join(f"{name}: {value}\n" for name, value in record_fields(record, evidence))
    return header_bytes(node, seq, record.kind, at) + body.encode() + evidence_tail(
        (evidence or Evidence()).stored_body, record.signed_document, record.signature)


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=10)


@settings(max_examples=150, deadline=None)
@given(text=_text, number=st.none() | st.integers(min_value=100, max_value=599),
       duration=st.none() | st.floats(min_value=0, max_value=1e6),
       stored=st.none() | st.binary(max_size=8), sha=st.none() | st.binary(min_size=32,
                                                                         max_size=32),
       nothing=st.booleans(), direction=st.sampled_from(["request", "response"]),
       when=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                         timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))])))
def test_message_bytes_equal_the_field_composition(
        text: str, number: int | None, duration: float | None, stored: bytes | None,
        sha: bytes | None, nothing: bool, direction: str, when: datetime) -> None:
    record = message(message_id=f"m{text}", path=text, client=f"a%{text}", status=number,
                     reason=None if nothing else f"r\r\n{text}", error_code=text or None,
                     peer=None if nothing else text, duration_ms=duration,
                     signed_document=None if nothing else text.encode(),
                     direction=direction, at=when, body_digest=text)
    evidence = None if nothing else Evidence(stored_body=stored, body_sha256=sha)
    assert canonical_bytes(f"N%{text}", 7, AT, record, evidence) == _reference_bytes(
        f"N%{text}", 7, AT, record, evidence)
    assert format_time(when) == when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
