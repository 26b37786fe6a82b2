#!/usr/bin/env python3
"""Benchmark `secserver audit verify`: records per second, and signatures per second
against the raw `cryptography` ECDSA verify on every core, measured in the same run.

Builds a real log in a temporary SQLite database (canonical records, hash chain, a
checkpoint signed with the node's log key every 1000 records; messages carry a CMS
signature by the member key, 1 KiB-class records), then measures:

1. core: the pure verifier (chain, evidence digests, Merkle roots, checkpoint signatures)
   over records already in memory, one process;
2. verify --no-signatures: the whole command path (database reads included, one range
   per core), in a fresh process as the CLI runs it;
3. raw ECDSA P-256 verify with `cryptography` in one process per core;
4. verify with message signatures (database, one range per core, fresh process), as a
   ratio of 3, interleaved with 3 in rounds (median of the rounds' ratios): per wall
   second, and per CPU second (all processes of each side counted).

    python scripts/bench_audit.py [--records 200000] [--signed 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from secserver.audit.chain import GENESIS, chain_hash
from secserver.audit.checks import checkpoint_signature_check, verify_node_log
from secserver.audit.records import (
    CheckpointRecord,
    Evidence,
    MessageRecord,
    SystemRecord,
    canonical_bytes,
    format_time,
)
from secserver.audit.store import StoredRecord, log_records
from secserver.audit.verify import ChainVerifier
from secserver.config import load_config
from secserver.db import migrate
from secserver.db.engine import make_engine
from secserver.signing.cms import CmsSigner
from secserver.signing.keys import load_certificate, load_private_key
from secserver.signing.merkle import merkle_root
from secserver.signing.pki import init_dev_pki
from secserver.signing.trust import TrustStore

NODE = "JP-DEV/GOV/TOYONO/SS1"
CLIENT = "JP-DEV/GOV/TOYONO/ELDERCARE"
SERVICE = "JP-DEV/COM/OTTA/TAGS/locations/v1"
BATCH = 1000


def generate(pki: Path, records: int, signed: int) -> Iterator[dict[str, Any]]:
    """Rows of a valid log: messages (the first ``signed`` with real signatures, the rest
    reusing one), a system record first, a checkpoint after every BATCH records."""
    log_key = load_private_key(pki / "servers/GOV.TOYONO.SS1/log.key")
    log_signer = CmsSigner(log_key, load_certificate(pki / "servers/GOV.TOYONO.SS1/log.crt"))
    member = CmsSigner(load_private_key(pki / "members/GOV.TOYONO/sign.key"),
                       load_certificate(pki / "members/GOV.TOYONO/sign.crt"))
    now = datetime.now(UTC)
    at = format_time(now)
    prev, last_cp, seq, messages = GENESIS, 0, 0, 0
    batch: list[bytes] = []
    shared_doc = b""
    shared_sig = b""
    while seq < records:
        seq += 1
        signature = None
        document = None
        if len(batch) == BATCH:
            cp = CheckpointRecord(first_seq=last_cp + 1, last_seq=seq - 1,
                                  merkle_root=merkle_root(batch), chain_head=prev,
                                  previous_checkpoint=last_cp)
            content = canonical_bytes(NODE, seq, at, cp)
            kind, mid, signature = "checkpoint", None, log_signer.sign(content,
                                                                       signing_time=now)
            batch, last_cp = [], seq
        elif seq == 1:
            content = canonical_bytes(NODE, seq, at, SystemRecord(event="start"))
            kind, mid = "system", None
        else:
            messages += 1
            mid = f"bench-{seq}"
            if messages <= signed or not shared_sig:
                document = (f"version: 1\nmessage-id: {mid}\ndirection: request\n"
                            f"client: {CLIENT}\nservice: {SERVICE}\nbody-digest: "
                            f"{'A' * 88}\n").encode()
                signature = member.sign(document, signing_time=now)
                shared_doc, shared_sig = document, signature
            else:
                document, signature = shared_doc, shared_sig
            record = MessageRecord(
                message_id=mid, direction="request", side="consumer", client=CLIENT,
                service=SERVICE, method="POST", path="/tags/locations?since=2026-01-01",
                body_size=1024, body_digest="A" * 88, at=now, status=200, peer=NODE,
                duration_ms=3.25, signed_document=document, signature=signature)
            content = canonical_bytes(NODE, seq, at, record, Evidence())
            kind = "message"
        digest = chain_hash(prev, content)
        if kind != "checkpoint":
            batch.append(digest)
        yield {"node_id": NODE, "seq": seq, "kind": kind, "at": at, "message_id": mid,
               "prev_hash": prev, "hash": digest, "content": content, "body": None,
               "signed_document": document if kind == "message" else None,
               "signature": signature}
        prev = digest


def build(directory: Path, pki: Path, records: int, signed: int) -> tuple[Path, list[Any]]:
    url = f"sqlite:///{directory / 'bench.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    rows = list(generate(pki, records, signed))
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(log_records.insert(), rows[i:i + 5000])
    engine.dispose()
    config = directory / "node.toml"
    config.write_text(f"""
[node]
server_id = "{NODE}"
data_dir = "{directory / 'data'}"
[database]
url = "{url}"
[trust]
ca_files = ["{pki / 'ca/ca.crt'}"]
[log]
cert_file = "{pki / 'servers/GOV.TOYONO.SS1/log.crt'}"
key_file = "{pki / 'servers/GOV.TOYONO.SS1/log.key'}"
""", encoding="utf-8")
    return config, rows


_ROWS: list[StoredRecord] = []  # inherited by forked workers


def _core_slice(start: int, end: int) -> int:
    records = _ROWS[start:end]
    first = records[0]
    verifier = ChainVerifier(NODE, start_seq=first.seq, prev_hash=first.prev_hash,
                             last_checkpoint=first.seq - 1,
                             check_signature=checkpoint_signature_check(_TRUST[0], NODE))
    verifier.feed_all(records)
    report = verifier.finish()
    assert report.ok, report.problems
    return len(records)


_TRUST: list[TrustStore] = []


def core_rates(rows: list[dict[str, Any]], trust: TrustStore, workers: int
               ) -> tuple[float, float, float]:
    """Records/s of the pure verifier: wall and CPU time in one process, and wall time
    with the records cut at checkpoints into one slice per core (forked processes)."""
    _ROWS[:] = [StoredRecord(r["seq"], r["kind"], r["at"], r["message_id"], r["prev_hash"],
                             r["hash"], r["content"], r["body"], r["signed_document"],
                             r["signature"]) for r in rows]
    _TRUST[:] = [trust]
    wall, cpu = time.perf_counter(), time.process_time()
    count = _core_slice(0, len(_ROWS))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cuts = [0]
    for i in range(1, workers):
        target = i * len(_ROWS) // workers
        while _ROWS[target - 1].kind != "checkpoint":
            target += 1
        cuts.append(target)
    cuts.append(len(_ROWS))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_raw_verify, [0.01] * workers))  # start the processes
        start = time.perf_counter()
        done = sum(pool.map(_core_slice, cuts[:-1], cuts[1:]))
        parallel = time.perf_counter() - start
    return count / wall, count / cpu, done / parallel


def _raw_verify(seconds: float) -> int:
    return _raw_verify_cpu(seconds)[0]


def _raw_verify_cpu(seconds: float) -> tuple[int, float]:
    """Verifies done in ``seconds``, and the CPU seconds they took."""
    key = ec.generate_private_key(ec.SECP256R1())
    data = b"x" * 300
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    count, deadline, cpu = 0, time.perf_counter() + seconds, time.process_time()
    while time.perf_counter() < deadline:
        for _ in range(100):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        count += 100
    return count, time.process_time() - cpu


def raw_rate(seconds: float, workers: int) -> tuple[float, float]:
    """Verifies per second with one process per core, and per CPU second."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_raw_verify, [0.05] * workers))  # warm up the processes
        start = time.perf_counter()
        done = list(pool.map(_raw_verify_cpu, [seconds] * workers))
        elapsed = time.perf_counter() - start
    count = sum(n for n, _ in done)
    return count / elapsed, count / sum(c for _, c in done)


def _timed_verify(config: Path, signatures: bool) -> tuple[float, float, int, int]:
    cfg = load_config(config)
    start, cpu = time.perf_counter(), _cpu_with_children()
    report = verify_node_log(cfg, signatures=signatures)
    elapsed, cpu = time.perf_counter() - start, _cpu_with_children() - cpu
    assert report.ok, report.problems
    return elapsed, cpu, report.records, report.message_signatures


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have ended (range workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def timed_verify(config: Path, signatures: bool) -> tuple[float, float, int, int]:
    """``verify_node_log`` in a fresh process, as the CLI runs it (not counting the
    interpreter start): wall seconds, CPU seconds (range workers included), records,
    message signatures. Forked from this process, which has held every generated row,
    the range workers would start slower and slower (copying a large heap)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_timed_verify, config, signatures).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--signed", type=int, default=20_000,
                        help="size of the signed log for the signature run")
    parser.add_argument("--seconds", type=float, default=3.0, help="raw verify duration")
    parser.add_argument("--rounds", type=int, default=3, help="signature rounds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pki = base / "pki"
        init_dev_pki(pki)
        trust = TrustStore.from_files([pki / "ca/ca.crt"])
        big, rows = build(base / "big", pki, args.records, signed=1)
        core, core_cpu, core_all = core_rates(rows, trust, workers)
        del rows
        _ROWS.clear()
        nosig_s, _cpu, nosig_n, _ = timed_verify(big, signatures=False)
        small, _rows = build(base / "signed", pki, args.signed, signed=args.signed)
        # interleaved rounds: raw, secserver, raw; each round's ratio uses the mean of the
        # raw runs around it, so load from other processes hits both sides alike
        # (the same for CPU seconds: signatures per CPU second against raw verifies per
        # CPU second, which the other processes on a shared machine disturb much less)
        raws, ours, ratios = [raw_rate(args.seconds, workers)], [], []
        cpu_ratios = []
        for _ in range(args.rounds):
            sig_s, sig_cpu, _sig_n, sig_count = timed_verify(small, signatures=True)
            ours.append(sig_count / sig_s)
            raws.append(raw_rate(args.seconds, workers))
            ratios.append(ours[-1] / ((raws[-2][0] + raws[-1][0]) / 2))
            cpu_ratios.append(sig_count / sig_cpu / ((raws[-2][1] + raws[-1][1]) / 2))
    raw = statistics.median(r[0] for r in raws)
    raw_cpu = statistics.median(r[1] for r in raws)
    sig_rate = statistics.median(ours)
    result = {
        "python": platform.python_version(), "cores": workers,
        "records": nosig_n, "core_records_per_s": round(core),
        "core_records_per_cpu_s": round(core_cpu),
        "core_records_per_s_all_cores": round(core_all),
        "verify_no_signatures_records_per_s": round(nosig_n / nosig_s),
        "raw_ecdsa_verify_per_s_all_cores": round(raw),
        "verify_signatures_per_s": round(sig_rate),
        "signature_ratio_to_raw": round(statistics.median(ratios), 3),
        "signature_ratios": [round(r, 3) for r in ratios],
        "raw_ecdsa_verify_per_cpu_s": round(raw_cpu),
        "signature_cpu_ratio_to_raw": round(statistics.median(cpu_ratios), 3),
        "signature_cpu_ratios": [round(r, 3) for r in cpu_ratios],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"cores: {workers}, python {result['python']}, log of {nosig_n} records")
    print(f"core (chain, evidence digests, Merkle, checkpoint signatures), 1 process: "
          f"{result['core_records_per_s']:>9,} records/s "
          f"({result['core_records_per_cpu_s']:,} per CPU second)")
    print(f"core, {workers} processes (slices cut at checkpoints):                  "
          f"{result['core_records_per_s_all_cores']:>9,} records/s")
    print(f"audit verify --no-signatures (SQLite, {workers} ranges):          "
          f"{result['verify_no_signatures_records_per_s']:>9,} records/s")
    print(f"raw cryptography ECDSA P-256 verify, {workers} processes:         "
          f"{result['raw_ecdsa_verify_per_s_all_cores']:>9,} verifies/s")
    print(f"audit verify with message signatures ({args.signed} records):     "
          f"{result['verify_signatures_per_s']:>9,} signatures/s "
          f"(median ratio {result['signature_ratio_to_raw']:.0%} of raw; rounds: "
          f"{', '.join(f'{r:.0%}' for r in ratios)})")
    print(f"  per CPU second (reads and chain checks included) against raw "
          f"({result['raw_ecdsa_verify_per_cpu_s']:,}/CPU s): median "
          f"{result['signature_cpu_ratio_to_raw']:.0%} (rounds: "
          f"{', '.join(f'{r:.0%}' for r in cpu_ratios)})")


if __name__ == "__main__":
    main()
