"""The log verifier: a pure core over stored records, in seq order.

``ChainVerifier.feed(record)`` checks each record as it comes, keeping only the current
batch's record hashes; ``finish()`` returns a ``VerifyReport``. What it checks:

* every record's hash: ``SHA-256(prev_hash || content)`` (else *record N modified*);
* the header columns (``seq``, ``kind``, ``at``, ``message_id``) against the hashed header,
  and the stored body, signed document and signature against their digests in the record;
* the chain: each ``prev_hash`` is the previous record's hash, seqs have no gap
  (*records missing between N and M*), no record sits under another's seq (*order broken*),
  no self-consistent record was slipped in (*forged record inserted at N*);
* each checkpoint: first/last seq, previous checkpoint, RFC 6962 Merkle root of the batch
  and chain head; its CMS signature and its RFC 3161 token (through the checkers given,
  so the core stays free of keys and trust stores);
* message signatures: handed to ``signature_sink`` (the CLI verifies them in a process pool
  and reports failures with ``add_problem``).

Records after the last checkpoint are a warning (not yet anchored), not a problem; so are
checkpoints still waiting for their timestamp when no later checkpoint has one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from secserver.audit.chain import GENESIS
from secserver.audit.records import (
    FORMAT_VERSION,
    escape,
    evidence_tail,
    parse_fields,
    parse_time,
    unescape,
)
from secserver.audit.store import RecordRow, StoredRecord
from secserver.signing.merkle import merkle_root

_sha256 = hashlib.sha256



def _field(content: bytes, name: bytes) -> str:
    """One field's raw (escaped) value, found without parsing the whole record."""
    start = content.find(b"\n" + name + b": ")
    if start < 0:
        return ""
    start += len(name) + 3
    return content[start:content.index(b"\n", start)].decode()


_unescaped = functools.lru_cache(maxsize=4096)(unescape)  # ids repeat from record to record


def _tail(body: bytes | None, document: bytes | None, signature: bytes | None) -> bytes:
    """``records.evidence_tail``, inlined for the hot path."""
    sha = _sha256
    return (f"body-stored: {'' if body is None else sha(body).hexdigest()}\n"
            f"signed-document: {'' if document is None else sha(document).hexdigest()}\n"
            f"signature: {'' if signature is None else sha(signature).hexdigest()}\n"
            ).encode()


CheckpointSignatureCheck = Callable[[bytes, bytes, datetime], None]
"""``(content, signature, at)``: return if the node's log key signed ``content``, else raise."""

TimestampCheck = Callable[[bytes, bytes, datetime], datetime]
"""``(token, content, at)``: return the token's time if it is a valid token over ``content``,
else raise."""


class SignatureJob(NamedTuple):
    """A message signature to verify (done outside the core, in parallel). A named
    tuple: one is made per signed message, on the hot path."""

    seq: int
    at: str
    direction: str
    client: str
    service: str
    signed_document: bytes
    signature: bytes


@dataclass(frozen=True)
class Problem:
    """One finding. ``code``: modified, missing, order, forged, checkpoint, signature,
    timestamp, message-signature, truncated (problems); unanchored, untimestamped
    (warnings)."""

    code: str
    seq: int
    last_seq: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "seq": self.seq, "last_seq": self.last_seq,
                "message": self.message}


@dataclass(frozen=True)
class VerifyReport:
    node: str
    first_seq: int | None
    last_seq: int | None
    records: int
    messages: int
    checkpoints: int
    timestamps: int
    message_signatures: int
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "node": self.node, "first_seq": self.first_seq,
            "last_seq": self.last_seq, "records": self.records, "messages": self.messages,
            "checkpoints": self.checkpoints, "timestamps_checked": self.timestamps,
            "message_signatures_checked": self.message_signatures,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
        }


_RANGE_MESSAGES = {
    "modified": "records {a}..{b} modified",
    "order": "order broken: records {a}..{b} are stored under other sequence numbers",
    "message-signature": "records {a}..{b}: message signatures invalid",
}


def merge_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Merge runs of the same code on consecutive records into one range."""
    merged: list[Problem] = []
    first_message: list[str] = []
    for p in problems:
        last = merged[-1] if merged else None
        if last is not None and last.code == p.code and p.code in _RANGE_MESSAGES \
                and p.seq == last.last_seq + 1:
            text = _RANGE_MESSAGES[p.code].format(a=last.seq, b=p.last_seq)
            if p.code != "order":
                text += f" (first: {first_message[-1]})"
            merged[-1] = Problem(p.code, last.seq, p.last_seq, text)
        else:
            merged.append(p)
            first_message.append(p.message)
    return merged


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@dataclass
class _Checkpoint:
    seq: int
    stamped: bool


@dataclass
class ChainVerifier:
    """Feed records in seq order; see the module docstring.

    ``start_seq``/``prev_hash``: where the range starts and the hash of the record before
    it (defaults: seq 1 and the genesis hash). ``last_checkpoint``: the checkpoint just
    before ``start_seq`` (the first batch starts after it). ``timestamps`` maps checkpoint
    seqs to tokens.
    """

    node: str
    start_seq: int = 1
    prev_hash: bytes = GENESIS
    last_checkpoint: int = 0
    check_signature: CheckpointSignatureCheck | None = None
    check_timestamp: TimestampCheck | None = None
    timestamps: Mapping[int, bytes] = field(default_factory=dict)
    signature_sink: Callable[[SignatureJob], None] | None = None
    anchor_seq: int = 0
    anchor_hash: bytes = b""
    expect_timestamps: bool = True

    def __post_init__(self) -> None:
        self._prefix = f"record: {FORMAT_VERSION}\nnode: {escape(self.node)}\nseq: "
        self._expected_seq = self.start_seq
        self._prev_prev: bytes | None = None
        self._prev_clean = True
        self._suspect: set[bytes] = set()  # hashes of records with a problem
        self._batch: list[bytes] = []
        self._batch_first = self.last_checkpoint + 1
        self._batch_damaged = False
        self._problems: list[Problem] = []
        self._extra: list[Problem] = []
        self._checkpoints: list[_Checkpoint] = []
        self._records = 0
        self._messages = 0
        self._stamps = 0
        self._sigs = 0
        self._first: int | None = None
        self._last: int | None = None

    # -- public --------------------------------------------------------------------

    def add_problem(self, problem: Problem) -> None:
        """Report a finding made outside the core (message signatures)."""
        self._extra.append(problem)
        if problem.code == "message-signature":
            self._sigs += 1

    def count_signature(self) -> None:
        self._sigs += 1

    def feed_all(self, records: Iterable[RecordRow]) -> None:
        feed = self.feed
        for record in records:
            feed(record)

    def feed(self, r: RecordRow) -> None:
        """Check one record (the next in seq order): a ``StoredRecord``, or a plain tuple
        in its field order as the database driver returns it (no object per row)."""
        # Fast path: a correct message, admin or system record. Anything else, and every
        # checkpoint, takes the full path below, which names what is wrong.
        seq, kind, at, mid, prev, digest, content, body, document, signature = r
        if seq == self._expected_seq and prev == self.prev_hash \
                and _sha256(prev + content).digest() == digest \
                and seq != self.anchor_seq and self._first is not None:
            if kind == "message":
                mid = mid or ""
                if "%" in mid or "\n" in mid or "\r" in mid:
                    mid = escape(mid)
                if content.startswith(f"{self._prefix}{seq}\nkind: message\nat: {at}\n"
                                      f"message-id: {mid}\n".encode()) \
                        and content.endswith(_tail(body, document, signature)):
                    self._messages += 1
                    self._records += 1
                    self._last = self._expected_seq = seq
                    self._expected_seq += 1
                    self._batch.append(digest)
                    self._prev_clean = True
                    self._prev_prev, self.prev_hash = prev, digest
                    if self.signature_sink is not None and signature and document:
                        self._sink(seq, at, content, document, signature)
                    return
            elif kind != "checkpoint" and mid is None and content.startswith(
                    f"{self._prefix}{seq}\nkind: {kind}\nat: {at}\n".encode()):
                self._accept(seq, digest)
                return
        self._feed_full(StoredRecord._make(r))

    def _accept(self, seq: int, digest: bytes) -> None:
        self._records += 1
        self._last = seq
        self._batch.append(digest)
        self._prev_clean = True
        self._prev_prev = self.prev_hash
        self.prev_hash = digest
        self._expected_seq = seq + 1

    def _sink(self, seq: int, at: str, content: bytes, document: bytes,
              signature: bytes) -> None:
        assert self.signature_sink is not None
        if _field(content, b"error-code"):
            return  # refused messages keep the signature they arrived with
        self.signature_sink(SignatureJob(
            seq, at, _field(content, b"direction"), _unescaped(_field(content, b"client")),
            _unescaped(_field(content, b"service")), document, signature))

    def _feed_full(self, r: StoredRecord) -> None:
        seq, content = r.seq, r.content
        if self._first is None:
            self._first = seq
        self._last = seq
        self._records += 1
        problems = self._problems
        before = len(problems)

        gap = seq != self._expected_seq
        if gap:
            if seq > self._expected_seq:
                if self._expected_seq == self.start_seq and self.start_seq > 1 \
                        and self.prev_hash == GENESIS:
                    pass  # range starts mid-chain without a known predecessor
                else:
                    a, b = self._expected_seq - 1, seq
                    problems.append(Problem(
                        "missing", a + 1, b - 1,
                        f"records missing between {a} and {b}" + (
                            f" (record {a + 1})" if b - a == 2 else
                            f" ({b - a - 1} records: {a + 1}..{b - 1})")))
            else:
                problems.append(Problem("order", seq, seq,
                                        f"order broken at record {seq}: it repeats an "
                                        "earlier sequence number"))
            self._batch_damaged = True

        self_ok = _sha256(r.prev_hash + content).digest() == r.hash
        header = f"{self._prefix}{seq}\nkind: {r.kind}\nat: {r.at}\n".encode()
        header_ok = content.startswith(header)
        link_ok = gap or r.prev_hash == self.prev_hash
        embedded: int | None = None
        checked = False
        if not header_ok and self_ok:
            embedded = self._embedded_seq(content)

        if not self_ok:
            problems.append(Problem("modified", seq, seq,
                                    f"record {seq} modified: its content does not match its "
                                    "hash"))
        elif not link_ok and self._prev_clean and self._prev_prev is not None \
                and r.prev_hash == self._prev_prev:
            problems.append(Problem(
                "forged", seq - 1, seq - 1,
                f"forged record inserted at {seq - 1}: the next record chains to record "
                f"{seq - 2}, not to it"))
            if embedded is not None and embedded != seq:
                problems.append(self._order(seq, embedded))
        elif not link_ok and embedded is not None and embedded != seq:
            problems.append(self._order(seq, embedded))
        elif not link_ok and r.prev_hash in self._suspect:
            pass  # chains to a record already reported (order broken): the chain resumes
        elif not link_ok:
            problems.append(Problem(
                "forged", seq, seq,
                f"forged record at {seq}: it does not chain to record {seq - 1} "
                "(inserted or replaced)"))
        elif not header_ok:
            if embedded is not None and embedded != seq:
                problems.append(self._order(seq, embedded))
            else:
                problems.append(Problem(
                    "modified", seq, seq,
                    f"record {seq} modified: its stored {self._column_differs(r)} differs "
                    "from the hashed record"))
        elif r.kind == "message":
            self._messages += 1
            self._check_message(r)
        elif r.message_id is not None:
            problems.append(Problem(
                "modified", seq, seq,
                f"record {seq} modified: its stored message id {r.message_id!r} differs from "
                "the hashed record (none)"))
        elif r.kind == "checkpoint":
            self._check_checkpoint(r)
            checked = True

        clean = len(problems) == before
        if not clean:
            if len(self._suspect) > 1000:
                self._suspect.clear()
            self._suspect.add(r.hash)
        if r.kind == "checkpoint":
            if not clean and not checked:
                self._batch_damaged = True
                if self_ok:  # authentic checkpoint in the wrong place: still check it
                    self._check_checkpoint(r)
                else:
                    self._batch, self._batch_first = [], seq + 1
        else:
            if not clean:
                self._batch_damaged = True
            self._batch.append(r.hash)
        if seq == self.anchor_seq and r.hash != self.anchor_hash:
            problems.append(Problem(
                "truncated", seq, seq,
                f"record {seq} is not the checkpoint the node noted in its log head file: "
                "the log was cut back and rewritten from there"))
        self._prev_clean = clean
        self._prev_prev = self.prev_hash
        self.prev_hash = r.hash
        self._expected_seq = seq + 1

    def finish(self) -> VerifyReport:
        warnings: list[Problem] = []
        problems = merge_problems(self._problems)
        stamped_max = max((c.seq for c in self._checkpoints if c.stamped), default=0)
        unstamped = [c.seq for c in self._checkpoints if not c.stamped]
        late = [s for s in unstamped if s > stamped_max]
        for s in unstamped:
            if s < stamped_max:
                problems.append(Problem("timestamp", s, s,
                                        f"checkpoint {s} timestamp missing (later "
                                        "checkpoints have one)"))
        if late and self.check_timestamp is not None and self.expect_timestamps:
            warnings.append(Problem(
                "untimestamped", late[0], late[-1],
                f"checkpoint {late[0]} not yet timestamped" if len(late) == 1 else
                f"{len(late)} checkpoints ({late[0]}..{late[-1]}) not yet timestamped"))
        if self._batch and self._last is not None:
            first = max(self._batch_first, self._first or 0)
            warnings.append(Problem(
                "unanchored", first, self._last,
                f"records {first}..{self._last} are not yet anchored by a checkpoint"))
        last = self._last if self._last is not None else self.start_seq - 1
        beyond = sorted(s for s in self.timestamps if s > last)
        if self.anchor_seq > last:
            problems.append(Problem(
                "truncated", last + 1, self.anchor_seq,
                f"log truncated after record {last}: the node noted checkpoint "
                f"{self.anchor_seq} in its log head file, but the log ends before it"))
        elif beyond:
            problems.append(Problem(
                "truncated", last + 1, beyond[-1],
                f"log truncated after record {last}: checkpoint {beyond[-1]} has a "
                "timestamp but its record is missing"))
        problems.extend(merge_problems(sorted(self._extra, key=lambda p: p.seq)))
        return VerifyReport(self.node, self._first, self._last, self._records, self._messages,
                            len(self._checkpoints), self._stamps, self._sigs,
                            tuple(problems), tuple(warnings))

    # -- checks ----------------------------------------------------------------------

    def _order(self, seq: int, embedded: int) -> Problem:
        return Problem("order", seq, seq,
                       f"order broken: record {embedded} is stored as record {seq}")

    @staticmethod
    def _embedded_seq(content: bytes) -> int | None:
        try:
            line = content.split(b"\n", 3)[2]
            return int(line.partition(b": ")[2]) if line.startswith(b"seq: ") else None
        except (IndexError, ValueError):
            return None

    def _column_differs(self, r: StoredRecord) -> str:
        fields = parse_fields(r.content)
        for name, value in (("kind", r.kind), ("at", r.at), ("node", self.node)):
            if fields.get(name) != value:
                return f"'{name}' column ({value!r}, hashed: {fields.get(name)!r})"
        return "header"

    def _check_message(self, r: StoredRecord) -> None:
        content = r.content
        tail = evidence_tail(r.body, r.signed_document, r.signature)
        if not content.endswith(tail):
            fields = parse_fields(content)
            what = [name for name, data in (("body-stored", r.body),
                                             ("signed-document", r.signed_document),
                                             ("signature", r.signature))
                    if fields.get(name, "") != ("" if data is None
                                                else hashlib.sha256(data).hexdigest())]
            names = {"body-stored": "body", "signed-document": "signed document",
                     "signature": "signature"}
            self._problems.append(Problem(
                "modified", r.seq, r.seq,
                f"record {r.seq} modified: the stored "
                f"{' and '.join(names[w] for w in what) or 'evidence'} does not match its "
                "digest in the record"))
            return
        mid = r.message_id or ""
        if f"\nmessage-id: {escape(mid)}\n".encode() not in content:
            self._problems.append(Problem(
                "modified", r.seq, r.seq,
                f"record {r.seq} modified: its stored message id {mid!r} differs from the "
                "hashed record"))
            return
        if self.signature_sink is not None and r.signature and r.signed_document:
            self._sink(r.seq, r.at, content, r.signed_document, r.signature)

    def _check_checkpoint(self, r: StoredRecord) -> None:
        fields = parse_fields(r.content)
        cp_seq = int(fields.get("seq", r.seq))
        at = parse_time(r.at) if fields.get("at") == r.at else parse_time(fields["at"])
        if not self._batch_damaged:
            expected = {
                "first-seq": str(self._batch_first),
                "last-seq": str(r.seq - 1),
                "count": str(len(self._batch)),
                "previous-checkpoint": str(self.last_checkpoint),
                "chain-head": self.prev_hash.hex(),
                "merkle-root": merkle_root(self._batch).hex(),
            }
            wrong = [name for name, value in expected.items() if fields.get(name) != value]
            if wrong:
                self._problems.append(Problem(
                    "checkpoint", r.seq, r.seq,
                    f"checkpoint {cp_seq} does not match records {self._batch_first}.."
                    f"{r.seq - 1}: {', '.join(wrong)} differ"))
        if self.check_signature is not None:
            try:
                if not r.signature:
                    raise ValueError("the checkpoint carries no signature")
                self.check_signature(r.content, r.signature, at)
            except Exception as exc:
                self._problems.append(Problem(
                    "signature", r.seq, r.seq,
                    f"checkpoint {cp_seq} signature invalid: {_describe(exc)}"))
        token = self.timestamps.get(cp_seq)
        self._checkpoints.append(_Checkpoint(cp_seq, token is not None))
        if token is not None and self.check_timestamp is not None:
            try:
                self.check_timestamp(token, r.content, at)
                self._stamps += 1
            except Exception as exc:
                self._problems.append(Problem(
                    "timestamp", r.seq, r.seq,
                    f"checkpoint {cp_seq} timestamp invalid: {_describe(exc)}"))
        self.last_checkpoint = cp_seq
        self._batch = []
        self._batch_first = r.seq + 1
        self._batch_damaged = False


def verify_records(records: Iterable[StoredRecord], node: str, **options: Any) -> VerifyReport:
    """Verify an iterable of records in one call (see ``ChainVerifier`` for options)."""
    verifier = ChainVerifier(node, **options)
    verifier.feed_all(records)
    return verifier.finish()
