#!/usr/bin/env python3
"""The pure per-call steps of one REST exchange: this tree against a git revision.

Measures, in microseconds per call, what both nodes do in Python for one 1 KiB REST
exchange besides signing, verifying, the database and the HTTP servers:

* consumer: ``parse_rest_request`` (the IS's request head), ``spool`` of the 1 KiB body
  (one buffered chunk, with the body deadline), ``documents.request_document``,
  ``Trace.record`` plus the log record's canonical bytes and chain hash as
  ``audit.writer`` computes them, ``request_hash`` of the request document;
* provider: ``parse_rest_request`` (the consumer's request head, signature headers
  included), ``documents.check_request``, ``SignedDocument.from_bytes``,
  ``documents.response_document``;
* consumer: ``documents.check_response`` (the provider's response head);
* consumer: ``new_message_id`` (a call without ``X-Road-Id``);
* signing (EC P-256, a fresh development PKI per worker): ``Signer.sign_many`` of 48
  documents (per document: one ECDSA signature shared, the Merkle tree, the blobs),
  ``SignatureBlob.from_bytes`` of a batch blob, and ``verify_message`` of a batch blob
  whose CMS was verified before (the cache-hit path every batched message but the first
  takes; per document).

The old code is the tree of ``--baseline`` (default ``HEAD``), exported with ``git
archive`` to a temporary directory; each measurement runs in a fresh interpreter whose
``PYTHONPATH`` puts one tree first (the worker asserts which ``secserver`` it imported).
Rounds alternate old and new workers so load from other processes hits both alike; each
worker reports, per step, the best of several timed batches over 256 distinct messages
(message id and signing time differ), and the report gives the median over the rounds and
the ratio new/old (< 1: faster). Each worker also returns a SHA-256 over every byte string
the steps produced; the report says whether old and new produced identical bytes.

    python scripts/bench_hotpath.py [--baseline REV] [--rounds 3] [--batch-ms 20] [--json]

Bounded: about 2-3 s per worker, ``2 * rounds`` workers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 256
BATCHES = 5
STEPS = (
    "consumer.parse_rest_request", "consumer.spool_body", "consumer.spool_response",
    "consumer.request_document",
    "consumer.log_record", "consumer.request_hash", "provider.parse_rest_request",
    "provider.check_request", "provider.parse_document", "provider.response_document",
    "consumer.check_response", "consumer.new_message_id", "signer.sign_many_48",
    "signer.blob_from_bytes", "signer.verify_batch_hit",
)


def _worker(batch_ms: float, expect_root: str) -> dict[str, Any]:
    """Run inside the interpreter of one tree: per-step best-of timings and a digest."""
    import base64

    import secserver
    from secserver.audit.chain import chain_hash
    from secserver.audit.records import Evidence, canonical_bytes, format_time
    from secserver.routing import documents
    from secserver.routing.body import SpooledBody, spool
    from secserver.routing.context import Trace
    from secserver.routing.rest import parse_rest_request
    from secserver.signing.document import SignedDocument, request_hash

    imported = Path(secserver.__file__).resolve()
    if not imported.is_relative_to(Path(expect_root).resolve()):
        raise SystemExit(f"imported {imported}, expected the tree {expect_root}")

    base = datetime(2026, 11, 22, 2, 30, 0, 125000, tzinfo=UTC)
    target = "/r1/JP-DEV/COM/OTTA/TAGS/location/v1/tags/42/position?since=2026-01-01"
    body_bytes = bytes(range(256)) * 4  # 1 KiB
    body = SpooledBody.from_bytes(body_bytes)
    response_body = SpooledBody.from_bytes(body_bytes[::-1])
    signature = hashlib.sha512(b"signature").digest() * 11  # ~700 bytes, like a CMS blob
    is_headers = [
        ("Host", "127.0.0.1:8080"), ("User-Agent", "python-requests/2.31.0"),
        ("Accept-Encoding", "gzip, deflate"), ("Accept", "application/json"),
        ("Connection", "keep-alive"), ("Content-Type", "application/json"),
        ("Content-Length", "1024"), ("X-Road-Client", "JP-DEV/GOV/TOYONO/ELDERCARE"),
        ("X-Road-UserId", "JP-DEV-officer-17"), ("X-Road-Issue", "case-2026-0042"),
    ]
    backend_headers = [
        ("Content-Type", "application/json; charset=utf-8"), ("Content-Length", "1024"),
        ("Date", "Sun, 22 Nov 2026 02:30:00 GMT"), ("Server", "uvicorn"),
        ("Cache-Control", "no-store"), ("ETag", '"a1b2c3"'),
    ]

    # 256 distinct messages: ids and signing times differ, identifiers repeat (as in
    # real traffic between two subsystems)
    ids = [f"4f1c2d3e-0000-4000-8000-{i:012d}" for i in range(MESSAGES)]
    times = [base + timedelta(microseconds=37 * i) for i in range(MESSAGES)]
    consumer_exchange = parse_rest_request("POST", target, is_headers)
    request_docs = [documents.request_document(consumer_exchange, ids[i], body, times[i])
                    for i in range(MESSAGES)]
    provider_heads = []
    for i in range(MESSAGES):
        carried = [(k, v) for k, v in is_headers
                   if k.lower() not in ("host", "connection", "content-length")]
        provider_heads.append([
            ("Host", "ss2.example:5500"), ("Content-Length", "1024"), *carried,
            ("X-Road-Id", ids[i]), ("X-Road-Message-Kind", "rest"),
            ("X-Road-Signed-Document", base64.b64encode(request_docs[i]).decode()),
            ("X-Road-Signature", base64.b64encode(signature).decode()),
        ])
    provider_exchanges = [parse_rest_request("POST", target, provider_heads[i])
                          for i in range(MESSAGES)]
    signed_requests = [SignedDocument.from_bytes(d) for d in request_docs]
    from secserver.routing.headers import end_to_end
    signed_response_headers = end_to_end(backend_headers)
    response_docs = [documents.response_document(signed_requests[i], request_docs[i], 200,
                                                 signed_response_headers, response_body,
                                                 times[i])
                     for i in range(MESSAGES)]
    response_heads = [[*backend_headers, ("X-Road-Request-Hash", request_hash(d))]
                      for d in request_docs]
    traces = [Trace("consumer", ids[i], "JP-DEV/GOV/TOYONO/ELDERCARE",
                    "JP-DEV/COM/OTTA/TAGS/location/v1", "POST", "/tags/42/position", 0.0,
                    "JP-DEV/COM/OTTA/SS1") for i in range(MESSAGES)]
    check_times = [t + timedelta(milliseconds=3) for t in times]

    def log_record(i: int) -> bytes:
        record = traces[i].record("request", at=times[i], body=body,
                                  signed_document=request_docs[i], signature=signature)
        content = canonical_bytes("JP-DEV/GOV/TOYONO/SS1", 1000 + i,
                                  format_time(check_times[i]), record, Evidence())
        chain_hash(b"\x00" * 32, content)
        return content

    async def one_chunk() -> AsyncIterator[bytes]:
        yield body_bytes

    from secserver.routing.consumer import new_message_id
    from secserver.signing.keys import load_certificate, load_private_key
    from secserver.signing.pki import DEV_MEMBERS, init_dev_pki
    from secserver.signing.signer import SignatureBlob, Signer, verify_message
    from secserver.signing.trust import TrustStore

    pki_dir = tempfile.mkdtemp(prefix="bench-hotpath-pki-")
    pki = init_dev_pki(Path(pki_dir) / "pki")
    member = DEV_MEMBERS[0][0]
    signer = Signer(load_private_key(pki.member_dir(member) / "sign.key"),
                    load_certificate(pki.member_dir(member) / "sign.crt"))
    trust = TrustStore.from_files([pki.ca_cert])
    batch_docs = request_docs[:48]
    batch_blobs = signer.sign_many(batch_docs)
    verify_now = datetime.now(UTC)
    for d, b in zip(batch_docs, batch_blobs, strict=True):  # the CMS verified once
        verify_message(d, b, trust, verify_now, member)

    def sign_many_48(i: int) -> bytes:
        if i % 48:  # one batch of 48 per 48 calls: the cost per document
            return b""
        blobs = signer.sign_many(batch_docs)
        return b"".join(SignatureBlob.from_bytes(b).batch.path[0] for b in blobs[:2])  # type: ignore[union-attr]

    def blob_from_bytes(i: int) -> bytes:
        proof = SignatureBlob.from_bytes(batch_blobs[i % 48]).batch
        assert proof is not None
        return f"{proof.index}/{proof.size}".encode() + b"".join(proof.path)

    def verify_batch_hit(i: int) -> bytes:
        verified = verify_message(batch_docs[i % 48], batch_blobs[i % 48], trust, verify_now,
                                  member)
        assert verified.batch is not None
        return f"{verified.batch.index}/{verified.batch.size}".encode()

    try:  # the nodes run on uvloop (secserver serve)
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()

    async def spool_body(_i: int) -> bytes:  # a request body: [limits] body_timeout
        spooled = await spool(one_chunk(), max_bytes=1 << 20, threshold=1 << 20,
                              spool_dir=None, deadline_s=30.0)
        return spooled.digest_b64.encode()

    async def spool_response(_i: int) -> bytes:  # a response body (http1): no deadline
        spooled = await spool(one_chunk(), max_bytes=1 << 20, threshold=1 << 20,
                              spool_dir=None, deadline_s=None)
        return spooled.digest_b64.encode()

    async_steps: dict[str, Callable[[int], Awaitable[bytes]]] = {
        "consumer.spool_body": spool_body, "consumer.spool_response": spool_response}

    def in_loop(step: Callable[[int], Awaitable[bytes]]) -> Callable[[int], object]:
        return lambda i: loop.run_until_complete(step(i))

    def timed_async(step: Callable[[int], Awaitable[bytes]], rounds: int) -> float:
        async def batch() -> float:  # timed inside the loop: no run_until_complete per call
            start_ns = time.perf_counter_ns()
            for _ in range(rounds):
                for i in range(MESSAGES):
                    await step(i)
            return (time.perf_counter_ns() - start_ns) / (rounds * MESSAGES)
        return loop.run_until_complete(batch())

    steps: dict[str, Callable[[int], object]] = {
        "consumer.parse_rest_request": lambda i: parse_rest_request("POST", target,
                                                                    is_headers),
        **{name: in_loop(step) for name, step in async_steps.items()},
        "consumer.request_document": lambda i: documents.request_document(
            consumer_exchange, ids[i], body, times[i]),
        "consumer.log_record": log_record,
        "consumer.request_hash": lambda i: request_hash(request_docs[i]).encode(),
        "provider.parse_rest_request": lambda i: parse_rest_request("POST", target,
                                                                    provider_heads[i]),
        "provider.check_request": lambda i: documents.check_request(
            request_docs[i], provider_exchanges[i], body, check_times[i], 300.0),
        "provider.parse_document": lambda i: SignedDocument.from_bytes(request_docs[i]),
        "provider.response_document": lambda i: documents.response_document(
            signed_requests[i], request_docs[i], 200, signed_response_headers,
            response_body, times[i]),
        "consumer.check_response": lambda i: documents.check_response(
            response_docs[i], consumer_exchange, ids[i], request_docs[i], 200,
            response_heads[i], response_body),
        "consumer.new_message_id": lambda i: len(new_message_id()).to_bytes(),
        "signer.sign_many_48": sign_many_48,
        "signer.blob_from_bytes": blob_from_bytes,
        "signer.verify_batch_hit": verify_batch_hit,
    }
    # the digest of everything produced, to compare old and new byte for byte
    digest = hashlib.sha256()
    for name in STEPS:
        for i in range(MESSAGES):
            out = steps[name](i)
            digest.update(name.encode())
            digest.update(out if isinstance(out, bytes) else repr(out).encode())
    result: dict[str, float] = {}
    for name in STEPS:
        fn = steps[name]
        start = time.perf_counter()
        for i in range(MESSAGES):
            fn(i)
        per_call = (time.perf_counter() - start) / MESSAGES
        rounds = max(1, int(batch_ms / 1000 / per_call / MESSAGES))
        best = float("inf")
        for _ in range(BATCHES):
            if name in async_steps:
                best = min(best, timed_async(async_steps[name], rounds))
                continue
            start_ns = time.perf_counter_ns()
            for _ in range(rounds):
                for i in range(MESSAGES):
                    fn(i)
            best = min(best, (time.perf_counter_ns() - start_ns) / (rounds * MESSAGES))
        result[name] = best / 1000  # microseconds
    loop.close()
    shutil.rmtree(pki_dir, ignore_errors=True)
    return {"us": result, "digest": digest.hexdigest(), "secserver": str(imported)}


def export_tree(revision: str, into: Path) -> Path:
    """``git archive revision secserver`` unpacked below ``into``; returns the tree root."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "secserver"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_worker(tree: Path, batch_ms: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           "--tree", str(tree), "--batch-ms", str(batch_ms)],
                          check=True, capture_output=True, text=True, env=env, timeout=120)
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--baseline", default="HEAD",
                        help="git revision of the old code (default HEAD)")
    parser.add_argument("--new", default=None,
                        help="git revision of the new code (default: this working tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-ms", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.batch_ms, args.tree)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp:
        old_tree = export_tree(args.baseline, Path(tmp) / "old")
        new_tree = ROOT if args.new is None else export_tree(args.new, Path(tmp) / "new")
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            runs["old"].append(run_worker(old_tree, args.batch_ms))
            runs["new"].append(run_worker(new_tree, args.batch_ms))
    table = {}
    for step in STEPS:
        old = statistics.median(r["us"][step] for r in runs["old"])
        new = statistics.median(r["us"][step] for r in runs["new"])
        table[step] = {"old_us": round(old, 2), "new_us": round(new, 2),
                       "ratio": round(new / old, 3)}
    old_total = sum(v["old_us"] for v in table.values())
    new_total = sum(v["new_us"] for v in table.values())
    digests = {r["digest"] for r in runs["old"] + runs["new"]}
    summary = {"baseline": args.baseline, "new": args.new or "working tree",
               "rounds": args.rounds, "steps": table,
               "total": {"old_us": round(old_total, 2), "new_us": round(new_total, 2),
                         "ratio": round(new_total / old_total, 3)},
               "identical_bytes": len(digests) == 1}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"old {args.baseline}, new {args.new or 'working tree'}; medians of "
              f"{args.rounds} rounds, best-of {BATCHES} batches each, microseconds per call")
        print(f"{'step':32} {'old':>9} {'new':>9} {'new/old':>8}")
        for step, row in table.items():
            print(f"{step:32} {row['old_us']:9.2f} {row['new_us']:9.2f} {row['ratio']:8.3f}")
        print(f"{'total':32} {old_total:9.2f} {new_total:9.2f} {new_total / old_total:8.3f}")
        print("old and new produced identical bytes" if summary["identical_bytes"]
              else "WARNING: old and new produced DIFFERENT bytes")
    return 0 if summary["identical_bytes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
