"""Load generators for the benchmark: wrk (when installed) or a bounded asyncio client.

Both keep ``concurrency`` keep-alive connections busy with the same request, stop at
``duration`` seconds or ``max_requests`` answers, whichever comes first, and report
successful requests, errors and p50/p99 latency.

The Python generator runs as its own process (so it can be pinned to its own core)::

    python scripts/bench_load.py --url http://127.0.0.1:P/echo --size 1024 \
        --concurrency 50 --duration 10 --max-requests 200000 [--header 'K: V' ...]

and prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench_stats import LoadResult, summarise_latencies

JSON_MARKER = "BENCH_JSON "


@dataclass(frozen=True)
class LoadSpec:
    """One load run: POST ``size`` bytes to ``url`` (GET when size is 0)."""

    url: str
    size: int
    concurrency: int
    duration: float
    max_requests: int
    headers: tuple[tuple[str, str], ...] = ()


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script for wrk: the request, the request-count bound and a JSON summary."""
    lines = []
    if spec.size:
        lines += ['wrk.method = "POST"', f'wrk.body = string.rep("x", {spec.size})',
                  'wrk.headers["Content-Type"] = "application/octet-stream"']
    for name, value in spec.headers:
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    lines += [
        f"local max_requests = {spec.max_requests}",
        "local count = 0",
        "function response(status, headers, body)",
        "  count = count + 1",
        "  if count >= max_requests then wrk.thread:stop() end",
        "end",
        "function done(summary, latency, requests)",
        "  local e = summary.errors",
        f'  io.write(string.format("{JSON_MARKER}{{\\"requests\\": %d, \\"duration_us\\": %d, '
        '\\"bytes\\": %d, \\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, '
        '\\"status\\": %d, \\"timeout\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d}\\n", '
        "summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, "
        "e.status, e.timeout, latency:percentile(50), latency:percentile(99)))",
        "end",
    ]
    return "\n".join(lines) + "\n"


def parse_wrk_output(stdout: str) -> LoadResult:
    """Read the JSON line our Lua ``done`` hook prints; fail clearly when it is missing."""
    for line in stdout.splitlines():
        if line.startswith(JSON_MARKER):
            data = json.loads(line[len(JSON_MARKER):])
            bad_status = int(data["status"])
            errors = bad_status + sum(int(data[k]) for k in ("connect", "read", "write",
                                                              "timeout"))
            return LoadResult(requests=max(0, int(data["requests"]) - bad_status),
                              errors=errors, duration_s=int(data["duration_us"]) / 1e6,
                              p50_ms=int(data["p50_us"]) / 1e3,
                              p99_ms=int(data["p99_us"]) / 1e3, bytes_read=int(data["bytes"]))
    raise RuntimeError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")


def run_wrk(spec: LoadSpec, cpu_prefix: list[str]) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(spec))
    try:
        seconds = max(1, math.ceil(spec.duration))
        command = [*cpu_prefix, "wrk", "-t1", f"-c{spec.concurrency}", f"-d{seconds}s",
                   "--timeout", "10s", "-s", script.name, spec.url]
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=seconds + 30)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
        return parse_wrk_output(done.stdout)
    finally:
        Path(script.name).unlink(missing_ok=True)


def run_python_load(spec: LoadSpec, cpu_prefix: list[str]) -> LoadResult:
    """Run this module as a separate (pinnable) process and read its JSON result."""
    command = [*cpu_prefix, sys.executable, str(Path(__file__).resolve()), "--url", spec.url,
               "--size", str(spec.size), "--concurrency", str(spec.concurrency),
               "--duration", str(spec.duration), "--max-requests", str(spec.max_requests)]
    for name, value in spec.headers:
        command += ["--header", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=spec.duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    return LoadResult(requests=data["requests"], errors=data["errors"],
                      duration_s=data["duration_s"], p50_ms=data["p50_ms"] or math.nan,
                      p99_ms=data["p99_ms"] or math.nan, bytes_read=data["bytes_read"])


# --- the Python load generator itself ----------------------------------------------------


def build_request(spec: LoadSpec) -> bytes:
    parts = urlsplit(spec.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    method = "POST" if spec.size else "GET"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in spec.headers]
    if spec.size:
        lines += ["Content-Type: application/octet-stream", f"Content-Length: {spec.size}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + b"x" * spec.size


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Read one response; return (status, body bytes, server wants close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            close = True
    size = 0
    if chunked:
        while True:
            chunk_head = await reader.readuntil(b"\r\n")
            chunk = int(chunk_head.split(b";")[0].strip(), 16)
            await reader.readexactly(chunk + 2)
            size += chunk
            if chunk == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
        size = length
    else:
        size = len(await reader.read())
        close = True
    return status, size, close


async def generate_load(spec: LoadSpec) -> LoadResult:
    parts = urlsplit(spec.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = build_request(spec)
    latencies: list[int] = []
    counters = {"errors": 0, "bytes": 0, "started": 0}
    start = time.perf_counter()
    deadline = start + spec.duration

    async def worker() -> None:
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        try:
            while time.perf_counter() < deadline and counters["started"] < spec.max_requests:
                counters["started"] += 1
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                began = time.perf_counter_ns()
                try:
                    writer.write(request)
                    status, size, close = await asyncio.wait_for(_read_response(reader), 30)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        TimeoutError, ValueError):
                    counters["errors"] += 1
                    writer.close()
                    writer = None
                    await asyncio.sleep(0.01)
                    continue
                if 200 <= status < 400:
                    latencies.append(time.perf_counter_ns() - began)
                    counters["bytes"] += size
                else:
                    counters["errors"] += 1
                if close:
                    writer.close()
                    writer = None
        except OSError:
            counters["errors"] += 1
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return summarise_latencies(latencies, counters["errors"], time.perf_counter() - start,
                               counters["bytes"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args(argv)
    headers = tuple((h.split(":", 1)[0].strip(), h.split(":", 1)[1].strip())
                    for h in args.header)
    spec = LoadSpec(url=args.url, size=args.size, concurrency=args.concurrency,
                    duration=args.duration, max_requests=args.max_requests, headers=headers)
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(generate_load(spec))
    print(json.dumps({"requests": result.requests, "errors": result.errors,
                      "duration_s": result.duration_s,
                      "p50_ms": None if math.isnan(result.p50_ms) else result.p50_ms,
                      "p99_ms": None if math.isnan(result.p99_ms) else result.p99_ms,
                      "bytes_read": result.bytes_read}))


if __name__ == "__main__":
    main()
