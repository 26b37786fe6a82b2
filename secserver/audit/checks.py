"""Verifying a node's whole log: archives plus database, with keys and trust stores.

The I/O shell around ``verify.ChainVerifier``: reads records in seq order (archive files
first, then the database), checks checkpoint signatures (the node's log certificate, chained
to ``[trust] ca_files``) and RFC 3161 tokens, and verifies message signatures with
``signing.signer.verify_message`` in a process pool (one worker per core).
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, select

from secserver.audit.anchor import anchor_path, read_anchor
from secserver.audit.archive import read_archive
from secserver.audit.chain import GENESIS
from secserver.audit.errors import AuditError
from secserver.audit.records import parse_time
from secserver.audit.store import (
    ArchiveEntry,
    StoredRecord,
    archives,
    checkpoint_bounds,
    log_connection,
    log_records,
    record_chunks,
    timestamps,
)
from secserver.audit.verify import (
    ChainVerifier,
    CheckpointSignatureCheck,
    Problem,
    SignatureJob,
    TimestampCheck,
    VerifyReport,
)
from secserver.config import NodeConfig
from secserver.identifiers import ClientId, ServiceId
from secserver.signing.cms import verify_detached
from secserver.signing.pki import server_id_from_certificate
from secserver.signing.signer import verify_message
from secserver.signing.timestamp import verify_timestamp
from secserver.signing.trust import TrustStore

TIMESTAMP_SKEW = timedelta(minutes=5)
SIGNATURE_CHUNK = 256
INLINE_SIGNATURES = 256  # fewer jobs than this are verified in-process


def trust_store(config: NodeConfig) -> TrustStore:
    if not config.trust.ca_files:
        raise AuditError("no trusted CA: set [trust] ca_files in the configuration")
    return TrustStore.from_files(config.trust.ca_files)


def checkpoint_signature_check(trust: TrustStore, node: str) -> CheckpointSignatureCheck:
    """Checkpoints must be signed by a certificate of ``node`` valid at checkpoint time."""

    def check(content: bytes, signature: bytes, at: datetime) -> None:
        verified = verify_detached(signature, content, trust, at)
        signer = str(server_id_from_certificate(verified.certificate))
        if signer != node:
            raise AuditError(f"signed by the key of {signer}, not by {node}")

    return check


def timestamp_check(trust: TrustStore) -> TimestampCheck:
    """RFC 3161 token over the checkpoint bytes, from a trusted TSA, not older than the
    checkpoint (beyond a small clock skew)."""
    def check(token: bytes, content: bytes, at: datetime) -> datetime:
        when = verify_timestamp(token, content, trust, at).time
        if when < at - TIMESTAMP_SKEW:
            raise AuditError(f"the token's time {when.isoformat()} is before the checkpoint "
                             f"({at.isoformat()})")
        return when

    return check


@functools.lru_cache(maxsize=4096)
def _signer(direction: str, client: str, service: str) -> ClientId:
    if direction == "request":
        return ClientId.parse(client)
    return ServiceId.parse(service).provider


def expected_signer(job: SignatureJob) -> ClientId:
    """Requests are signed by the client's member, responses by the provider's."""
    return _signer(job.direction, job.client, job.service)


_time = functools.lru_cache(maxsize=1024)(parse_time)


def verify_signature_jobs(jobs: list[SignatureJob], trust: TrustStore
                          ) -> list[tuple[int, str | None]]:
    results: list[tuple[int, str | None]] = []
    for job in jobs:
        try:
            verify_message(job.signed_document, job.signature, trust, _time(job.at),
                           expected_member=expected_signer(job))
            results.append((job.seq, None))
        except Exception as exc:
            results.append((job.seq, str(exc) or type(exc).__name__))
    return results


def _mp_context() -> multiprocessing.context.BaseContext:
    """Fork when this process has no other thread (workers start at once, nothing to
    import again); spawn otherwise (forking a threaded process is unsafe)."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


_worker_trust: TrustStore | None = None


def _init_worker(ca_files: tuple[str, ...]) -> None:
    global _worker_trust
    _worker_trust = TrustStore.from_files(ca_files)


def _verify_in_worker(jobs: list[SignatureJob]) -> list[tuple[int, str | None]]:
    assert _worker_trust is not None
    return verify_signature_jobs(jobs, _worker_trust)


class SignaturePool:
    """Message signatures verified in worker processes, in chunks, with bounded backlog
    (``workers=0``: in this process)."""

    def __init__(self, verifier: ChainVerifier, trust: TrustStore,
                 ca_files: tuple[Path, ...], workers: int | None = None) -> None:
        self._verifier = verifier
        self._trust = trust
        self._ca_files = tuple(str(p) for p in ca_files)
        self._workers = (os.cpu_count() or 1) if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._chunk: list[SignatureJob] = []
        self._futures: deque[Future[list[tuple[int, str | None]]]] = deque()
        self._inline: list[SignatureJob] = []

    def __call__(self, job: SignatureJob) -> None:
        self._chunk.append(job)
        if len(self._chunk) >= SIGNATURE_CHUNK:
            self._submit()

    def _submit(self) -> None:
        chunk, self._chunk = self._chunk, []
        if not chunk:
            return
        if self._workers == 0:  # inline: this process is itself one of several workers
            self._collect(verify_signature_jobs(chunk, self._trust))
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers, mp_context=_mp_context(),
                initializer=_init_worker, initargs=(self._ca_files,))
        self._futures.append(self._pool.submit(_verify_in_worker, chunk))
        while len(self._futures) > 4 * self._workers:
            self._collect(self._futures.popleft().result())

    def _collect(self, results: list[tuple[int, str | None]]) -> None:
        for seq, error in results:
            if error is None:
                self._verifier.count_signature()
            else:
                self._verifier.add_problem(Problem(
                    "message-signature", seq, seq,
                    f"record {seq} message signature invalid: {error}"))

    def finish(self) -> None:
        try:
            if self._workers == 0 or (self._pool is None
                                      and len(self._chunk) < INLINE_SIGNATURES):
                self._collect(verify_signature_jobs(self._chunk, self._trust))
                self._chunk = []
            else:
                self._submit()
            while self._futures:
                self._collect(self._futures.popleft().result())
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)


@dataclass(frozen=True)
class LogRange:
    """Which records to read: ``start..end`` (``end`` None: to the head), the hash of the
    record before ``start`` and the checkpoint at or before it."""

    start: int
    end: int | None
    prev_hash: bytes
    last_checkpoint: int


def _record_hash(conn: Connection, node: str, seq: int) -> bytes | None:
    value = conn.execute(select(log_records.c.hash).where(
        log_records.c.node_id == node, log_records.c.seq == seq)).scalar()
    return None if value is None else bytes(value)


def plan_range(conn: Connection, node: str, archived: list[ArchiveEntry],
               from_seq: int | None, to_seq: int | None) -> LogRange:
    """Widen ``from..to`` to whole batches, so every checkpoint in it can be checked."""
    boundaries = sorted({a.last_seq for a in archived} | set(checkpoint_bounds(conn, node)))
    start, prev, last_cp = 1, GENESIS, 0
    if from_seq is not None and from_seq > 1:
        before = [b for b in boundaries if b < from_seq]
        if before:
            last_cp = before[-1]
            start = last_cp + 1
            found = next((a.last_hash for a in archived if a.last_seq == last_cp), None) \
                or _record_hash(conn, node, last_cp)
            if found is None:
                raise AuditError(f"record {last_cp} (the checkpoint before --from) is not in "
                                 "the database or an archive")
            prev = found
    end = None
    if to_seq is not None:
        after = [b for b in boundaries if b >= to_seq]
        end = after[0] if after else to_seq
    return LogRange(start, end, prev, last_cp)


def _archive_records(entries: list[ArchiveEntry], plan: LogRange, tokens: dict[int, bytes],
                     report: Callable[[Problem], None]) -> Iterator[StoredRecord]:
    for entry in entries:
        if entry.last_seq < plan.start or (plan.end is not None and entry.first_seq > plan.end):
            continue
        path = Path(entry.path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            report(Problem("archive", entry.first_seq, entry.last_seq,
                           f"archive {path} of records {entry.first_seq}..{entry.last_seq} "
                           f"cannot be read: {exc.strerror}"))
            continue
        if digest != entry.file_sha256:
            report(Problem("archive", entry.first_seq, entry.last_seq,
                           f"archive {path} was changed after it was written (SHA-256 "
                           "differs from the one recorded)"))
        try:
            for record, token in read_archive(path):
                if record.seq < plan.start or (plan.end is not None and record.seq > plan.end):
                    continue
                if token is not None:
                    tokens[record.seq] = token
                yield record
        except AuditError as exc:
            report(Problem("archive", entry.first_seq, entry.last_seq,
                           f"archive {path} of records {entry.first_seq}..{entry.last_seq} "
                           f"is damaged: {exc.message}"))


PARALLEL_MIN_RECORDS = 50_000  # smaller logs are verified in one process ...
PARALLEL_MIN_SIGNED = 2_000  # ... unless message signatures make them worth spreading


def verify_range(config: NodeConfig, *, from_seq: int | None = None,
                 to_seq: int | None = None, signatures: bool = True,
                 progress: Callable[[int, int], None] | None = None,
                 signature_workers: int | None = None) -> VerifyReport:
    """Verify one range in this process (``signature_workers=0``: signatures inline)."""
    node = config.node.server_id
    trust = trust_store(config)
    with log_connection(config.database_url) as conn:
        archived = archives(conn, node)
        plan = plan_range(conn, node, archived, from_seq, to_seq)
        tokens = timestamps(conn, node, plan.start, plan.end)
        total = max(0, _last_seq(conn, node, archived, plan) - plan.start + 1)
        anchor = read_anchor(anchor_path(config.node.data_dir, node)) \
            if plan.end is None else None
        verifier = ChainVerifier(
            node, start_seq=plan.start, prev_hash=plan.prev_hash,
            last_checkpoint=plan.last_checkpoint,
            check_signature=checkpoint_signature_check(trust, node),
            check_timestamp=timestamp_check(trust), timestamps=tokens,
            expect_timestamps=bool(config.tsa.url),
            anchor_seq=anchor.seq if anchor else 0,
            anchor_hash=anchor.hash if anchor else b"")
        pool = SignaturePool(verifier, trust, config.trust.ca_files,
                             signature_workers) if signatures else None
        verifier.signature_sink = pool
        db_start = max(plan.start, archived[-1].last_seq + 1 if archived else 1)
        done = 0
        try:
            for record in _archive_records(archived, plan, tokens, verifier.add_problem):
                verifier.feed(record)
                done += 1
                if progress is not None and done % 10000 == 0:
                    progress(done, total)
            for rows in record_chunks(conn, node, db_start, plan.end):
                verifier.feed_all(rows)
                done += len(rows)
                if progress is not None:
                    progress(done, total)
        finally:
            if pool is not None:
                pool.finish()
        if progress is not None:
            progress(done, total)
        return verifier.finish()


def _last_seq(conn: Connection, node: str, archived: list[ArchiveEntry],
              plan: LogRange) -> int:
    if plan.end is not None:
        return plan.end
    head = conn.execute(select(log_records.c.seq).where(log_records.c.node_id == node)
                        .order_by(log_records.c.seq.desc()).limit(1)).scalar()
    return int(head or (archived[-1].last_seq if archived else 0))


def split_ranges(start: int, end: int, boundaries: list[int], parts: int
                 ) -> list[tuple[int, int | None]]:
    """Cut ``start..end`` into about ``parts`` ranges that end on checkpoints. Pure."""
    size = (end - start + 1) / parts
    cuts: list[int] = []
    for i in range(1, parts):
        target = start + int(i * size)
        candidates = [b for b in boundaries if b >= target and (not cuts or b > cuts[-1])
                      and b < end]
        if candidates:
            cuts.append(candidates[0])
    ranges: list[tuple[int, int | None]] = []
    first = start
    for cut in cuts:
        ranges.append((first, cut))
        first = cut + 1
    ranges.append((first, None))
    return ranges


def _verify_range_in_worker(config: NodeConfig, from_seq: int, to_seq: int | None,
                            signatures: bool) -> VerifyReport:
    return verify_range(config, from_seq=from_seq, to_seq=to_seq, signatures=signatures,
                        signature_workers=0)


def merge_reports(reports: list[VerifyReport]) -> VerifyReport:
    """Reports of consecutive ranges as one. Pure."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for i, report in enumerate(reports):
        problems.extend(report.problems)
        later_stamped = any(r.timestamps for r in reports[i + 1:])
        for warning in report.warnings:
            if warning.code == "untimestamped" and later_stamped:
                problems.append(Problem("timestamp", warning.seq, warning.last_seq,
                                        f"checkpoints {warning.seq}..{warning.last_seq}: "
                                        "timestamp missing (later checkpoints have one)"))
            elif i == len(reports) - 1 or warning.code != "unanchored":
                warnings.append(warning)
    firsts = [r.first_seq for r in reports if r.first_seq is not None]
    lasts = [r.last_seq for r in reports if r.last_seq is not None]
    return VerifyReport(
        reports[0].node, min(firsts) if firsts else None, max(lasts) if lasts else None,
        sum(r.records for r in reports), sum(r.messages for r in reports),
        sum(r.checkpoints for r in reports), sum(r.timestamps for r in reports),
        sum(r.message_signatures for r in reports), tuple(problems), tuple(warnings))


def verify_node_log(config: NodeConfig, *, from_seq: int | None = None,
                    to_seq: int | None = None, signatures: bool = True,
                    progress: Callable[[int, int], None] | None = None,
                    workers: int | None = None) -> VerifyReport:
    """Verify the node's log (archives and database as one chain).

    Large logs are cut at checkpoints into one range per core, each verified (chain,
    checkpoints, message signatures) in its own process; smaller ones in this process,
    with message signatures in a process pool.
    """
    workers = workers or os.cpu_count() or 1
    node = config.node.server_id
    with log_connection(config.database_url) as conn:
        archived = archives(conn, node)
        plan = plan_range(conn, node, archived, from_seq, to_seq)
        last = _last_seq(conn, node, archived, plan)
        boundaries = sorted({a.last_seq for a in archived} | set(checkpoint_bounds(conn, node)))
    total = last - plan.start + 1
    if workers < 2 or total < (PARALLEL_MIN_SIGNED if signatures else PARALLEL_MIN_RECORDS):
        return verify_range(config, from_seq=from_seq, to_seq=to_seq, signatures=signatures,
                            progress=progress, signature_workers=workers)
    ranges = split_ranges(plan.start, last, boundaries, workers)
    if plan.end is not None:
        ranges[-1] = (ranges[-1][0], plan.end)
    if len(ranges) < 2:
        return verify_range(config, from_seq=from_seq, to_seq=to_seq, signatures=signatures,
                            progress=progress, signature_workers=workers)
    done = 0
    with ProcessPoolExecutor(len(ranges), mp_context=_mp_context()) as pool:
        futures = [pool.submit(_verify_range_in_worker, config, a, b, signatures)
                   for a, b in ranges]
        reports = []
        for (a, b), future in zip(ranges, futures, strict=True):
            reports.append(future.result())
            done += ((b if b is not None else last) - a + 1)
            if progress is not None:
                progress(done, total)
    return merge_reports(reports)
