#!/usr/bin/env python3
"""Signatures and verifications per second: secserver against the raw primitive.

For ECDSA P-256 and RSA-2048 (PKCS#1 v1.5), in one process, interleaved rounds:

* sign:   ``Signer.sign_now(document)`` (SHA-256, signed attributes, CMS DER) against
          ``key.sign(document, ...)`` of pyca/cryptography;
* verify: ``verify_message(document, blob, trust, now, member)`` (DER parsing, digest,
          signature, certificate path from the trust cache, member binding) against the
          least work that checks the same signature bytes: ``sha256(document)`` and
          ``public_key.verify(signature, signed_attributes, ...)``; both sides go through
          the same 16 distinct messages (message id, signing time, signature) in turn;
* batch:  ``Signer.sign_many`` over N documents (one signature over the Merkle root) and
          ``verify_message`` of all N blobs of a batch (the receiver verifies the shared
          CMS once, then audit paths), per document, against the same primitives.

Each round runs secserver and the raw primitive in alternating slices of about 10 ms for
``--seconds`` in total, so load from other processes hits both alike; the report gives
medians over the rounds of the rates and of the ratios secserver/raw (1.00 = no overhead;
the target is overhead below 20%, a ratio of at least 0.83). Usage:

    python scripts/bench_crypto.py [--rounds 9] [--seconds 0.5] [--batch 64] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from secserver.identifiers import ClientId
from secserver.signing import cms
from secserver.signing.keys import PrivateKey, load_certificate, load_private_key
from secserver.signing.pki import DEV_MEMBERS, KeyType, init_dev_pki
from secserver.signing.signer import Signer, verify_message
from secserver.signing.trust import TrustStore

DOCUMENT = (
    b"secserver-signed-document: 1\nmessage-id: 4f1c2d3e-0000-4000-8000-000000000001\n"
    b"direction: request\nclient: JP-DEV/GOV/TOYONO/ELDERCARE\n"
    b"service: JP-DEV/COM/OTTA/TAGS/location/v1\nmethod: POST\n"
    b"path: /tags/42/position?since=2026-01-01T00%3A00%3A00Z\n"
    b"header: content-type: application/json\n"
    b"body-sha512: 317rZTYcgWL2xciWXsaBebNc/U5tO83cRCvWcT2YRVkkc2EF2bCRgrnb"
    b"Sz+AWArej0zacXMAPfTnZ5lF9rG0FA==\n"
    b"signing-time: 2026-01-15T09:30:00.250000Z\n"
)
MESSAGES = 16  # distinct signed messages the verify rows go through in turn


def paired(ours: Callable[[], object], raw: Callable[[], object], seconds: float,
           per_call: int = 1, slice_seconds: float = 0.01) -> tuple[float, float]:
    """Rates (operations per second) of ``ours`` and ``raw``, measured in alternating short
    slices over about ``seconds`` in total, so load changes on a shared machine hit both."""
    ours()
    raw()  # warm caches

    def calls_per_slice(func: Callable[[], object]) -> int:
        start = time.perf_counter()
        func()
        return max(1, int(slice_seconds / max(time.perf_counter() - start, 1e-7)))

    n_ours, n_raw = calls_per_slice(ours), calls_per_slice(raw)
    spent = {"ours": 0.0, "raw": 0.0}
    done = {"ours": 0, "raw": 0}
    deadline = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < deadline or min(done.values()) == 0:
        order = (("ours", ours, n_ours), ("raw", raw, n_raw))
        for name, func, count in (order if turn % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            for _ in range(count):
                func()
            spent[name] += time.perf_counter() - start
            done[name] += count
        turn += 1
    return done["ours"] * per_call / spent["ours"], done["raw"] / spent["raw"]


def raw_ops(key: PrivateKey, certificate: x509.Certificate,
            messages: Sequence[tuple[bytes, bytes]]
            ) -> tuple[Callable[[], object], Callable[[], object]]:
    """The raw primitive: signing is ``key.sign(document)`` (hash and sign); verifying is
    the least work that checks the same CMS signatures over the same documents as the
    secserver side, in the same order: SHA-256 of the document (for the messageDigest
    attribute) and the public-key verification of the very signature bytes over the
    signed attributes, with the public key of the certificate loaded once."""
    parts = []
    for document, blob in messages:
        parsed = cms.parse_signed_data(blob)
        assert parsed.signed_attrs is not None
        parts.append((document, parsed.signature, parsed.signed_attrs))
    turn = itertools.cycle(parts)
    public = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = ec.ECDSA(hashes.SHA256())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        ec_public = public

        def ec_verify() -> None:
            document, signature, signed_attrs = next(turn)
            hashlib.sha256(document).digest()
            ec_public.verify(signature, signed_attrs, algorithm)
        return lambda: key.sign(DOCUMENT, algorithm), ec_verify
    assert isinstance(key, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey)
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    rsa_public = public

    def rsa_verify() -> None:
        document, signature, signed_attrs = next(turn)
        hashlib.sha256(document).digest()
        rsa_public.verify(signature, signed_attrs, pad, digest)
    return lambda: key.sign(DOCUMENT, pad, digest), rsa_verify


def bench_key(directory: Path, key_type: KeyType, rounds: int, seconds: float,
              batch: int) -> list[dict[str, object]]:
    pki = init_dev_pki(directory / key_type, key_type=key_type)
    member: ClientId = DEV_MEMBERS[0][0]
    folder = pki.member_dir(member)
    key = load_private_key(folder / "sign.key")
    certificate = load_certificate(folder / "sign.crt")
    signer = Signer(key, certificate)
    trust = TrustStore.from_files([pki.ca_cert])
    now = datetime.now(UTC)
    # distinct messages (message id, signing time, signature), verified in turn by both sides
    times = iter([now - timedelta(seconds=i) for i in range(MESSAGES)])
    maker = Signer(key, certificate, clock=lambda: next(times))
    messages = [(doc, maker.sign_now(doc)) for doc in (
        DOCUMENT.replace(b"000000000001", b"%012d" % i) for i in range(MESSAGES))]
    raw_sign, raw_verify = raw_ops(key, certificate, messages)
    turn = itertools.cycle(messages)

    def verify_single() -> None:
        document, blob = next(turn)
        verify_message(document, blob, trust, now, member)

    documents = [DOCUMENT + str(i).encode() for i in range(batch)]
    blobs = signer.sign_many(documents)

    def verify_batch() -> None:
        cms._verified_cache.clear()  # a fresh batch: its CMS is verified once, then reused
        for doc, blob in zip(documents, blobs, strict=True):
            verify_message(doc, blob, trust, now, member)

    cases: dict[str, tuple[Callable[[], object], int, Callable[[], object]]] = {
        "sign": (lambda: signer.sign_now(DOCUMENT), 1, raw_sign),
        "verify": (verify_single, 1, raw_verify),
        f"sign, batch of {batch} (per document)": (lambda: signer.sign_many(documents), batch,
                                                   raw_sign),
        f"verify, batch of {batch} (per document)": (verify_batch, batch, raw_verify),
    }
    samples: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in cases}
    for _round in range(rounds):
        for name, (ours, per_call, raw) in cases.items():
            ours_rate, raw_rate = paired(ours, raw, seconds, per_call)
            samples[name][0].append(ours_rate)
            samples[name][1].append(raw_rate)
    rows: list[dict[str, object]] = []
    for name, (ours_rates, raw_rates) in samples.items():
        ratios = [o / r for o, r in zip(ours_rates, raw_rates, strict=True)]
        rows.append({
            "key": key_type, "operation": name,
            "secserver_per_s": round(statistics.median(ours_rates)),
            "raw_per_s": round(statistics.median(raw_rates)),
            "ratio": round(statistics.median(ratios), 3),
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="time per case and round (both sides together)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 100 or not 0 < args.seconds <= 5 or not 2 <= args.batch <= 4096:
        parser.error("rounds 1-100, seconds 0-5, batch 2-4096")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for key_type in ("ec-p256", "rsa2048"):
            rows += bench_key(Path(tmp), key_type, args.rounds, args.seconds, args.batch)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'key':8} {'operation':36} {'secserver/s':>12} {'raw/s':>10} {'ratio':>6}")
    for row in rows:
        print(f"{row['key']!s:8} {row['operation']!s:36} {row['secserver_per_s']:>12} "
              f"{row['raw_per_s']:>10} {row['ratio']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
