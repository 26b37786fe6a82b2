#!/usr/bin/env python3
"""One hop of the lean HTTP/1.1 client (``secserver.routing.http1``): this tree against a
git revision, client-process CPU per request.

A server process on 127.0.0.1 (plain asyncio, uvloop when available) answers every
request with a 1 KiB body (``Content-Length``, kept alive), over plain TCP or TLS (a
throw-away self-signed certificate the client trusts). Client workers, each a fresh
interpreter whose ``PYTHONPATH`` puts one tree first, send ``POST`` requests with a 1 KiB
body through ``http1.request`` (pool, deadline, spooled response body, as ``peer.py`` and
``backend.py`` call it): ``--requests`` one after another (``seq``), then the same number
with ``--concurrency`` in flight (``conc``). Each worker reports CPU µs per request
(``time.process_time``: the client process only) and wall µs per request. Rounds
alternate old and new workers so load from other processes hits both alike; the report
gives medians over the rounds and new/old ratios (< 1: cheaper).

    python scripts/bench_http1.py [--baseline REV] [--rounds 3] [--requests 4000]
        [--concurrency 50] [--tls both|on|off] [--json]

Bounded: each worker sends at most ``2 * --requests`` requests (plus 200 to warm up) and
stops after 120 s whatever happens; the server process stops when the script ends.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BODY = 1024
WARMUP = 200
WORKER_LIMIT_S = 120.0


def _loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Answer(asyncio.Protocol):
    """Answers each request (head + Content-Length body) with 1 KiB, kept alive."""

    RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nDate: Sun, 22 Nov 2026 03:00:00 GMT\r\n"
                b"Server: bench\r\n\r\n" % BODY) + b"r" * BODY

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            assert self.transport is not None
            self.transport.write(self.RESPONSE)


def _serve(port_file: Path, cert: str | None, key: str | None) -> None:
    _loop_policy()

    async def main() -> None:
        import ssl
        context = None
        if cert and key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Answer, "127.0.0.1", 0, ssl=context)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))  # noqa: ASYNC240
        await asyncio.sleep(3600)

    asyncio.run(main())


def _worker(port: int, cert: str | None, requests: int, concurrency: int,
            expect_root: str) -> dict[str, Any]:
    """Inside the interpreter of one tree: CPU and wall µs per request, seq and conc."""
    import ssl

    import secserver
    from secserver.routing import http1
    from secserver.routing.body import SpooledBody
    from secserver.routing.errors import NetworkError, PeerUnreachable

    root = str(Path(secserver.__file__).resolve().parent.parent)
    assert root == expect_root, (root, expect_root)
    _loop_policy()
    failures = http1.Failures(what="bench server", unreachable=PeerUnreachable,
                              connect=NetworkError, timeout=NetworkError,
                              malformed=NetworkError, tls=NetworkError, too_large=NetworkError)
    limits = http1.ResponseLimits(max_bytes=10 * 1024 * 1024, spool_threshold=1024 * 1024,
                                  spool_dir=None)
    context = None
    if cert:
        context = ssl.create_default_context(cafile=cert)
    body = SpooledBody.from_bytes(b"q" * BODY)
    headers = [("Content-Type", "application/octet-stream"), ("X-Road-Id", "m-1"),
               ("X-Road-Client", "DEV/COM/1234/client"), ("User-Agent", "bench")]

    async def main() -> dict[str, Any]:
        pool = http1.ConnectionPool(idle_timeout=30.0, max_idle=concurrency + 8)

        async def connect() -> http1.Connection:
            return await pool.connect("127.0.0.1", port, context, "localhost", failures)

        async def one() -> None:
            response = await http1.request(pool, "bench", connect, "POST", "/echo",
                                           f"127.0.0.1:{port}", headers, body, limits,
                                           failures, 10.0)
            if response.status != 200 or response.body.size != BODY:
                raise RuntimeError(f"unexpected answer {response.status}")

        async def run(count: int, parallel: int) -> tuple[float, float]:
            done = 0

            async def lane() -> None:
                nonlocal done
                while done < count:
                    done += 1
                    await one()

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(parallel)))
            return ((time.process_time() - cpu) / count * 1e6,
                    (time.perf_counter() - wall) / count * 1e6)

        async with asyncio.timeout(WORKER_LIMIT_S):
            await run(WARMUP, concurrency)  # connections open, code warm
            seq = await run(requests, 1)
            conc = await run(requests, concurrency)
        await pool.close()
        return {"seq_cpu_us": seq[0], "seq_wall_us": seq[1],
                "conc_cpu_us": conc[0], "conc_wall_us": conc[1]}

    return asyncio.run(main())


def _export(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "secserver"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _run_worker(tree: Path, args: argparse.Namespace, port: int, cert: str | None) -> dict[
        str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, __file__, "--worker", "--port", str(port),
               "--requests", str(args.requests), "--concurrency", str(args.concurrency),
               "--expect-root", str(tree.resolve())]
    if cert:
        command += ["--cert", cert]
    done = subprocess.run(command, env=env, check=False, capture_output=True, text=True,
                          timeout=WORKER_LIMIT_S + 30)
    if done.returncode != 0:
        raise SystemExit(f"worker for {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision of the old code")
    parser.add_argument("--new", default=None,
                        help="git revision of the new code (default: this working tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--tls", choices=("both", "on", "off"), default="both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cert", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--expect-root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.requests = max(1, min(args.requests, 100_000))
    args.concurrency = max(1, min(args.concurrency, 200))
    if args.worker:
        print(json.dumps(_worker(args.port, args.cert, args.requests, args.concurrency,
                                 args.expect_root)))
        return
    if args.serve:
        _serve(Path(args.serve), args.cert, args.key)
        return

    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.tls]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http1-") as temp:
        (Path(temp) / "old").mkdir()
        base = _export(args.baseline, Path(temp) / "old")
        if args.new is None:
            new = ROOT
        else:
            (Path(temp) / "new").mkdir()
            new = _export(args.new, Path(temp) / "new")
        cert_path, key_path = _make_cert(Path(temp))
        trees = {"old": base, "new": new}
        for tls in modes:
            port_file = Path(temp) / f"port-{tls}"
            command = [sys.executable, __file__, "--serve", str(port_file)]
            if tls:
                command += ["--cert", str(cert_path), "--key", str(key_path)]
            server = subprocess.Popen(command)
            try:
                for _ in range(200):
                    if port_file.exists() and port_file.read_text():
                        break
                    time.sleep(0.05)
                port = int(port_file.read_text())
                samples: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
                for round_no in range(args.rounds):
                    order = ("old", "new") if round_no % 2 == 0 else ("new", "old")
                    for name in order:
                        samples[name].append(_run_worker(
                            trees[name], args, port, str(cert_path) if tls else None))
                        print(f"tls={tls} round {round_no + 1} {name}: "
                              f"{samples[name][-1]}", file=sys.stderr)
            finally:
                server.terminate()
                server.wait(timeout=10)
            label = "tls" if tls else "tcp"
            report[label] = {
                name: {key: statistics.median(s[key] for s in samples[name])
                       for key in samples[name][0]}
                for name in ("old", "new")}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"old = {args.baseline}, new = {args.new or 'working tree'}; 1 KiB POST, 1 KiB "
          f"answer, {args.requests} requests per mode, medians of {args.rounds} rounds")
    print(f"{'hop':4} {'measure':22} {'old':>9} {'new':>9} {'new/old':>8}")
    for label, result in report.items():
        for key, title in (("seq_cpu_us", "CPU µs/req, c=1"),
                           ("seq_wall_us", "wall µs/req, c=1"),
                           ("conc_cpu_us", f"CPU µs/req, c={args.concurrency}"),
                           ("conc_wall_us", f"wall µs/req, c={args.concurrency}")):
            old, new_value = result["old"][key], result["new"][key]
            print(f"{label:4} {title:22} {old:9.1f} {new_value:9.1f} {new_value / old:8.2f}")


if __name__ == "__main__":
    main()
