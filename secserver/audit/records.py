"""What the log holds, and the canonical bytes each record is hashed as. Pure.

Four kinds of record: ``message`` (one per direction and side of an exchange, refused and
failed ones included), ``admin`` (a registry, consent, key or configuration change from the
CLI), ``system`` (start, stop, TSA failure and recovery, key changes) and ``checkpoint``
(closes a batch: Merkle root and chain head, signed, later timestamped).

Canonical bytes (``docs/audit.md`` is the reference): UTF-8 text, one ``name: value`` line
per field, every line ending in ``\\n``, fields in the fixed order below. Values have ``%``,
CR and LF percent-encoded (``%25``, ``%0D``, ``%0A``); a missing value is empty. Times are
UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. Binary values appear only as SHA-256 hex digests; the
bytes themselves are stored beside the record and checked against these digests.

Every record starts with the same five header lines::

    record: 1
    node: JP-DEV/GOV/TOYONO/SS1
    seq: 42
    kind: message
    at: 2026-11-22T00:12:07.123456Z

The writer's interface (``secserver.audit.writer.LogWriter``)::

    writer = LogWriter(config)                 # or LogWriter(config, engine=...)
    await writer.start()
    writer.check_accepting(now)                # raises LogTimestampOverdue past the grace
    seq = await writer.append(MessageRecord(...))   # returns once durably committed;
                                                    # raises LoggingFailed otherwise
    writer.health()                            # dict for /healthz
    await writer.stop()                        # drains, final checkpoint
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

FORMAT_VERSION = "1"

RecordKind = Literal["message", "admin", "system", "checkpoint"]
Direction = Literal["request", "response"]
Side = Literal["consumer", "provider"]
BodyPolicy = Literal["digest", "store", "encrypt"]
BODY_POLICIES: tuple[BodyPolicy, ...] = ("digest", "store", "encrypt")

SystemEvent = Literal["start", "stop", "tsa-failure", "tsa-recovered", "key-change"]


@dataclass(frozen=True, kw_only=True)
class MessageRecord:
    """One direction of one exchange as seen by one side.

    ``client`` and ``service`` are formatted identifiers (``str(ClientId)``); ``status``
    is the HTTP status returned (``None`` when the exchange never got one); ``error_code``
    and ``reason`` say why a message was refused or failed (the ACL decision's reason
    included); ``body_digest`` is the digest the signed document carries. ``body`` is
    kept according to ``body_policy``: ``digest`` keeps nothing, ``store`` keeps the bytes,
    ``encrypt`` keeps them AES-256-GCM encrypted with ``[log] body_key_file``.
    """

    message_id: str
    direction: Direction
    side: Side
    client: str
    service: str
    method: str
    path: str
    body_size: int
    body_digest: str
    at: datetime
    status: int | None = None
    error_code: str | None = None
    reason: str | None = None
    body: bytes | None = None
    body_policy: BodyPolicy = "digest"
    signed_document: bytes | None = None
    signature: bytes | None = None
    peer: str | None = None
    duration_ms: float | None = None

    kind: Literal["message"] = "message"


@dataclass(frozen=True, kw_only=True)
class AdminRecord:
    """One row of ``admin_events``, chained in id order."""

    event_id: int
    event_at: datetime
    actor: str
    action: str
    object: str
    before: str | None = None
    after: str | None = None

    kind: Literal["admin"] = "admin"


@dataclass(frozen=True, kw_only=True)
class SystemRecord:
    event: SystemEvent
    detail: str = ""

    kind: Literal["system"] = "system"


@dataclass(frozen=True, kw_only=True)
class CheckpointRecord:
    """Closes the batch ``first_seq..last_seq`` (every record since the previous checkpoint).

    ``merkle_root`` is the RFC 6962 root over the batch's record hashes (each record hash
    is one leaf); ``chain_head`` is the hash of record ``last_seq``.
    """

    first_seq: int
    last_seq: int
    merkle_root: bytes
    chain_head: bytes
    previous_checkpoint: int = 0

    kind: Literal["checkpoint"] = "checkpoint"


Record = MessageRecord | AdminRecord | SystemRecord | CheckpointRecord


@dataclass(frozen=True)
class Evidence:
    """Bytes stored beside a message record (checked against digests in its canonical bytes).

    ``stored_body`` is what the database holds (plain or encrypted); ``body_sha256`` is the
    SHA-256 of the plain body when one was kept.
    """

    stored_body: bytes | None = None
    body_sha256: bytes | None = None


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("record times must be timezone-aware")
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    if at.year >= 1000:  # ISO form = strftime's form ("+00:00" for the "Z")
        return at.isoformat(timespec="microseconds")[:-6] + "Z"
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # %Y does not pad years below 1000


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def escape(value: str) -> str:
    if "%" not in value and "\n" not in value and "\r" not in value:
        return value
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def unescape(value: str) -> str:
    return value.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")


def _digest(data: bytes | None) -> str:
    return "" if data is None else hashlib.sha256(data).hexdigest()


def header_bytes(node: str, seq: int, kind: str, at: str) -> bytes:
    """The five header lines; the verifier compares them with the stored columns."""
    return f"record: {FORMAT_VERSION}\nnode: {escape(node)}\nseq: {seq}\nkind: {kind}\n" \
           f"at: {at}\n".encode()


def evidence_tail(stored_body: bytes | None, signed_document: bytes | None,
                  signature: bytes | None) -> bytes:
    """The last three lines of a message record: digests of the bytes stored beside it."""
    return (f"body-stored: {_digest(stored_body)}\nsigned-document: {_digest(signed_document)}"
            f"\nsignature: {_digest(signature)}\n").encode()


def _opt(value: object) -> str:
    return "" if value is None else escape(str(value))


def record_fields(record: Record, evidence: Evidence | None = None) -> list[tuple[str, str]]:
    """The kind-specific fields in canonical order (after the header)."""
    if isinstance(record, MessageRecord):
        ev = evidence or Evidence()
        duration = "" if record.duration_ms is None else f"{record.duration_ms:.3f}"
        return [
            ("message-id", escape(record.message_id)),
            ("direction", record.direction),
            ("side", record.side),
            ("message-at", format_time(record.at)),
            ("client", escape(record.client)),
            ("service", escape(record.service)),
            ("method", escape(record.method)),
            ("path", escape(record.path)),
            ("status", _opt(record.status)),
            ("error-code", _opt(record.error_code)),
            ("reason", _opt(record.reason)),
            ("peer", _opt(record.peer)),
            ("duration-ms", duration),
            ("body-size", str(record.body_size)),
            ("body-digest", escape(record.body_digest)),
            ("body-policy", record.body_policy),
            ("body-sha256", "" if ev.body_sha256 is None else ev.body_sha256.hex()),
            # the evidence tail (body-stored, signed-document, signature) follows
        ]
    if isinstance(record, AdminRecord):
        return [
            ("event-id", str(record.event_id)),
            ("event-at", format_time(record.event_at)),
            ("actor", escape(record.actor)),
            ("action", escape(record.action)),
            ("object", escape(record.object)),
            ("before", _opt(record.before)),
            ("after", _opt(record.after)),
        ]
    if isinstance(record, SystemRecord):
        return [("event", record.event), ("detail", escape(record.detail))]
    return [
        ("first-seq", str(record.first_seq)),
        ("last-seq", str(record.last_seq)),
        ("count", str(record.last_seq - record.first_seq + 1)),
        ("merkle-root", record.merkle_root.hex()),
        ("chain-head", record.chain_head.hex()),
        ("previous-checkpoint", str(record.previous_checkpoint)),
    ]


def _message_bytes(node: str, seq: int, at: str, record: MessageRecord,
                   evidence: Evidence | None) -> bytes:
    """``canonical_bytes`` of a message record in one piece: the same lines as header,
    ``record_fields`` and ``evidence_tail`` (``tests/unit/audit/test_records.py`` checks
    that they agree)."""
    stored_body = body_sha256 = None
    if evidence is not None:
        stored_body, body_sha256 = evidence.stored_body, evidence.body_sha256
    duration = "" if record.duration_ms is None else f"{record.duration_ms:.3f}"
    status = record.status
    error_code = record.error_code
    reason = record.reason
    peer = record.peer
    return (
        f"record: {FORMAT_VERSION}\nnode: {escape(node)}\nseq: {seq}\nkind: message\n"
        f"at: {at}\n"
        f"message-id: {escape(record.message_id)}\n"
        f"direction: {record.direction}\n"
        f"side: {record.side}\n"
        f"message-at: {format_time(record.at)}\n"
        f"client: {escape(record.client)}\n"
        f"service: {escape(record.service)}\n"
        f"method: {escape(record.method)}\n"
        f"path: {escape(record.path)}\n"
        f"status: {'' if status is None else escape(str(status))}\n"
        f"error-code: {'' if error_code is None else escape(str(error_code))}\n"
        f"reason: {'' if reason is None else escape(str(reason))}\n"
        f"peer: {'' if peer is None else escape(str(peer))}\n"
        f"duration-ms: {duration}\n"
        f"body-size: {record.body_size}\n"
        f"body-digest: {escape(record.body_digest)}\n"
        f"body-policy: {record.body_policy}\n"
        f"body-sha256: {'' if body_sha256 is None else body_sha256.hex()}\n"
        f"body-stored: {_digest(stored_body)}\n"
        f"signed-document: {_digest(record.signed_document)}\n"
        f"signature: {_digest(record.signature)}\n"
    ).encode()


def canonical_bytes(node: str, seq: int, at: str, record: Record,
                    evidence: Evidence | None = None) -> bytes:
    """The bytes a record is hashed as: header, kind fields, and for messages the
    evidence digests (``evidence.stored_body``, ``record.signed_document``,
    ``record.signature``)."""
    if type(record) is MessageRecord:
        return _message_bytes(node, seq, at, record, evidence)
    body = "".join(f"{name}: {value}\n" for name, value in record_fields(record, evidence))
    out = header_bytes(node, seq, record.kind, at) + body.encode()
    if isinstance(record, MessageRecord):
        out += evidence_tail((evidence or Evidence()).stored_body, record.signed_document,
                             record.signature)
    return out


def parse_fields(content: bytes) -> dict[str, str]:
    """Canonical bytes back to ``{name: value}`` (values unescaped)."""
    fields: dict[str, str] = {}
    for line in content.decode("utf-8").split("\n"):
        if not line:
            continue
        name, _, value = line.partition(": ")
        fields[name] = unescape(value)
    return fields
