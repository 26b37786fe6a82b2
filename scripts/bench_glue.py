#!/usr/bin/env python3
"""The exchange ports' server glue alone: server CPU per request, this tree against another.

A node's exchange port is aiohttp's low-level ``web.Server`` with the coded-error protocol
(``middleware.use_coded_errors``) and one handler. This benchmark runs that server with
only the glue a handler adds around the exchange itself, as the consumer does for one
1 KiB REST call: ``Expect`` check, ``check_request_head``, the header list, the X-Road
context, ``peer_facts``, ``read_request_body`` (limit, SHA-512, in memory), the answer's
end-to-end headers plus the four X-Road response headers, and ``send_body`` of a 1 KiB
body (``--variant glue``); ``--variant hello`` answers the same body with a bare
``web.Response`` (aiohttp's own floor); ``--variant raw`` with a bare ``asyncio.Protocol``
and one task per request (no aiohttp). No signing, no log, no peer.

Each measurement starts a fresh server process on the server CPU (``PYTHONPATH`` puts one
tree first), loads it with wrk (1 KiB POSTs, ``--concurrency`` keep-alive connections) on
the other CPU, and divides the server's CPU time (user + system, ``/proc``) by the answered
requests. Rounds alternate the order of the trees; the report gives medians.

    python scripts/bench_glue.py --baseline REV [--new REV] [--rounds 5] [--duration 3]
    python scripts/bench_glue.py --baseline HEAD --variants raw,hello,glue

Bounded: one wrk run of ``--duration`` seconds (plus a 1 s warm-up) per tree and round.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

CLIENT = "JP-DEV/GOV/TOYONO/ELDERCARE"
BODY_SIZE = 1024


def serve(port: int, variant: str) -> None:
    """The server (run in a fresh interpreter with one tree on ``PYTHONPATH``)."""
    import asyncio
    import gc

    import uvloop
    from aiohttp import hdrs, web

    from secserver.config import LimitsSection
    from secserver.routing import headers as h
    from secserver.routing.body import SpooledBody
    from secserver.routing.context import (
        check_request_head,
        peer_facts,
        read_request_body,
        send_body,
    )
    from secserver.routing.middleware import (
        CONTEXT,
        coded_error,
        expect_continue,
        use_coded_errors,
    )

    limits = LimitsSection()
    spool_dir = Path(tempfile.mkdtemp(prefix="bench-glue-"))
    hosts = frozenset({"127.0.0.1"})
    answer = bytes(range(256)) * (BODY_SIZE // 256)
    backend_headers = [("content-type", "application/octet-stream"),
                       ("date", "Sun, 22 Nov 2026 05:00:00 GMT"), ("server", "bench"),
                       ("content-length", str(BODY_SIZE))]

    async def glue(request: web.BaseRequest) -> web.StreamResponse:
        try:
            if hdrs.EXPECT in request.headers:
                await expect_continue(request)
            check_request_head(request, hosts)
            pairs = list(request.headers.items())
            request[CONTEXT] = {h.X_CLIENT: CLIENT, h.X_SERVICE: "s", h.X_ID: "i"}
            caller = peer_facts(request)
            body = await read_request_body(request, limits, spool_dir)
            try:
                headers = [*h.end_to_end(backend_headers), (h.X_CLIENT, CLIENT),
                           (h.X_SERVICE, "JP-DEV/COM/OTTA/TAGS/echo"),
                           (h.X_ID, str(len(pairs))), (h.X_REQUEST_HASH, caller.address.exploded)]
                return await send_body(request, 200, headers, SpooledBody.from_bytes(answer))
            finally:
                body.close()
        except Exception as exc:
            return coded_error(request, exc, "ClientProxy")

    async def hello(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(body=answer)

    class Bare(asyncio.Protocol):
        """``--variant raw``: no aiohttp; the head parsed just enough to find the body,
        one task per request (what any server's per-request floor is on uvloop)."""

        reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(answer)) + answer

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports are not asyncio.Transport subclasses
            self.transport = cast(asyncio.Transport, transport)
            self.buffer = bytearray()
            self.tasks: set[asyncio.Task[None]] = set()

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                length = 0
                for line in bytes(self.buffer[:end]).decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(self.buffer) < end + 4 + length:
                    return
                body = bytes(self.buffer[end + 4:end + 4 + length])
                del self.buffer[:end + 4 + length]
                task = asyncio.get_running_loop().create_task(self.respond(body))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        async def respond(self, body: bytes) -> None:
            self.transport.write(self.reply)

    async def main() -> None:
        if variant == "raw":
            await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port)
        else:
            server = web.Server(glue if variant == "glue" else hello, access_log=None,
                                keepalive_timeout=30, lingering_time=0.5)
            use_coded_errors(server, "ClientProxy")
            runner = web.ServerRunner(server, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        gc.collect()
        gc.freeze()  # as secserver serve does (node.settle_garbage_collector)
        gc.set_threshold(20_000, *gc.get_threshold()[1:])
        await asyncio.Event().wait()

    uvloop.run(main())


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the glue server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the glue server did not listen within 60 s")


def measure(tree: Path, variant: str, concurrency: int, duration: float) -> float:
    """Server CPU microseconds per request of one fresh server."""
    from bench_load import LoadSpec, run_wrk
    from bench_procs import cpu_layout, cpu_seconds, free_port

    layout = cpu_layout(True)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    command = [*layout.prefix(layout.server_cpus), sys.executable, str(Path(__file__)),
               "--serve", str(port), "--variant", variant]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_listening(port, process)
        spec = LoadSpec(f"http://127.0.0.1:{port}/r1/JP-DEV/COM/OTTA/TAGS/echo", BODY_SIZE,
                        concurrency, 1, 10**7, (("X-Road-Client", CLIENT),))
        load = layout.prefix(layout.load_cpus)
        run_wrk(spec, load)  # warm-up
        before = cpu_seconds(process.pid)
        result = run_wrk(LoadSpec(spec.url, BODY_SIZE, concurrency, duration, 10**7,
                                  spec.headers), load)
        used = cpu_seconds(process.pid) - before
        if result.errors or not result.requests:
            raise SystemExit(f"{result.errors} errors, {result.requests} answers")
        return used / result.requests * 1e6
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--baseline", default="HEAD", help="git revision of the old code")
    parser.add_argument("--new", default=None,
                        help="git revision of the new code (default: this working tree)")
    parser.add_argument("--variants", default="glue", help="glue, hello, raw (comma separated)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="glue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.variant)
        return 0
    from bench_hotpath import export_tree

    with tempfile.TemporaryDirectory(prefix="bench-glue-") as tmp:
        trees = {"old": export_tree(args.baseline, Path(tmp) / "old"),
                 "new": ROOT if args.new is None else export_tree(args.new, Path(tmp) / "new")}
        cases = [(name, variant) for variant in args.variants.split(",") for name in trees]
        results: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        for round_ in range(args.rounds):
            for name, variant in cases if round_ % 2 == 0 else cases[::-1]:
                value = measure(trees[name], variant, args.concurrency, args.duration)
                results[(name, variant)].append(value)
                print(f"round {round_} {name} {variant}: {value:.1f} us/request",
                      file=sys.stderr)
    print(f"old {args.baseline}, new {args.new or 'working tree'}; server CPU microseconds "
          f"per 1 KiB request, medians of {args.rounds} rounds (c={args.concurrency})")
    for (name, variant), values in results.items():
        print(f"{variant:6} {name:4} {statistics.median(values):7.1f}   "
              f"({', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
