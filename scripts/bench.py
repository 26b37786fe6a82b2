#!/usr/bin/env python3
"""Side-by-side benchmark: direct calls, two plain proxies, and the full secserver exchange.

On 127.0.0.1 with one backend (POST echo of 1 KiB / 64 KiB / 1 MiB bodies), one load
generator (wrk when installed, else a bounded asyncio generator) and one concurrency:

1. ``direct``: load generator -> backend;
2. ``baseline``: -> client-side aiohttp proxy -> mutual TLS -> server-side aiohttp proxy ->
   backend, with no signing, checks or logging;
3. ``exchange-sqlite`` / ``exchange-postgresql``: -> consumer ``secserver serve`` -> mutual
   TLS -> provider ``secserver serve`` -> backend, with signatures both ways, access checks,
   the message log with group commit and checkpoints timestamped by the development TSA.

Runs are interleaved (every repetition goes through every size and target, in a rotating
order) and the table shows medians. Results: a table on stdout and ``--json-out FILE``.
Progress goes to stderr. Everything is bounded in time and request count, and every child
process is stopped at the end, also on error or Ctrl-C. See docs/performance.md.

    python scripts/bench.py --quick
    python scripts/bench.py --duration 10 --concurrency 50 --sizes 1k,64k,1m \
        --db sqlite,postgresql --json-out bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))

from bench_load import LoadSpec, run_python_load, run_wrk, wrk_available  # noqa: E402
from bench_procs import (  # noqa: E402
    Child,
    CpuLayout,
    Processes,
    cpu_layout,
    cpu_seconds,
    free_port,
    make_tls_files,
    peak_rss_kib,
    reset_peak_rss,
    wait_for_port,
)
from bench_profile import finish_recorders, pyspy_available, start_recorders  # noqa: E402
from bench_stats import (  # noqa: E402
    LoadResult,
    Run,
    compare,
    cpu_per_request,
    format_size,
    parse_size,
    render_table,
    result_document,
    summarise,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """Something the load generator calls: a URL, headers, and the processes behind it."""

    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    processes: dict[str, Child] = field(default_factory=dict)


class TargetUnavailable(Exception):
    """A target that cannot run here (reason in the message); the rest of the run goes on."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s runs, one repetition, short warm-up")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per measured run (default 10, --quick 2)")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="interleaved repetitions; medians are reported (default 3, "
                             "--quick 1)")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="connections kept busy during the throughput runs (default 50)")
    parser.add_argument("--low-concurrency", type=int, default=1,
                        help="connections for the latency runs at the smallest size; 0 skips "
                             "them (default 1)")
    parser.add_argument("--sizes", default="1k,64k,1m",
                        help="body sizes, comma separated (default 1k,64k,1m)")
    parser.add_argument("--db", default="sqlite,postgresql",
                        help="databases for the exchange: sqlite, postgresql, or both "
                             "(default both)")
    parser.add_argument("--targets", default="direct,baseline,exchange",
                        help="which of direct, baseline, exchange to run (default all)")
    parser.add_argument("--revisions", default="",
                        help="also measure the exchange as of these git revisions, or from "
                             "these directories holding a secserver package (comma "
                             "separated), side by side with the working tree")
    parser.add_argument("--rewarm", type=float, default=None,
                        help="seconds of unmeasured load just before each measured run, so "
                             "connection pools that idled out while other targets ran are "
                             "refilled (default 1, --quick 0)")
    parser.add_argument("--max-requests", type=int, default=500_000,
                        help="upper bound of requests per run (default 500000)")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk if installed (auto), or the asyncio one")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin servers and load generator to separate CPUs")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop of the backend and baseline proxies (default uvloop, "
                             "like secserver serve)")
    parser.add_argument("--json-out", type=Path, help="write the results as JSON here")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="after measuring, profile the exchange nodes with py-spy during "
                             "one extra run per exchange target; write stacks and top lists "
                             "to DIR")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (logs, configs) for inspection")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.repetitions is None:
        args.repetitions = 1 if args.quick else 3
    if args.rewarm is None:
        args.rewarm = 0.0 if args.quick else 1.0
    try:
        args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    args.db_list = [d.strip() for d in args.db.split(",") if d.strip()]
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.revision_list = [r.strip() for r in args.revisions.split(",") if r.strip()]
    for db in args.db_list:
        if db not in ("sqlite", "postgresql"):
            parser.error(f"--db: unknown database {db!r}; use sqlite and/or postgresql")
    for target in args.target_list:
        if target not in ("direct", "baseline", "exchange"):
            parser.error(f"--targets: unknown target {target!r}")
    if args.duration <= 0 or args.repetitions <= 0 or args.concurrency <= 0 \
            or not args.size_list or args.max_requests <= 0:
        parser.error("--duration, --repetitions, --concurrency, --max-requests and --sizes "
                     "must be positive")
    if args.profile and not pyspy_available():
        parser.error("--profile: py-spy is not installed (pip install py-spy)")
    if args.load == "wrk" and not wrk_available():
        parser.error("--load wrk: wrk is not installed (Debian: apt-get install wrk)")
    return args


def start_server(procs: Processes, layout: CpuLayout, name: str, args: list[str],
                 port: int) -> Child:
    command = [*layout.prefix(layout.server_cpus), sys.executable,
               str(SCRIPTS / "bench_servers.py"), *args, "--port", str(port)]
    child = procs.start(name, command)
    wait_for_port(port, child)
    return child


def check_echo(target: Target, size: int) -> None:
    """One request before measuring: the body must come back unchanged."""
    body = b"x" * size
    request = urllib.request.Request(target.url, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream",
                                              **dict(target.headers)})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise TargetUnavailable(f"{target.name}: check request answered {exc.code}: "
                                f"{detail}") from exc
    except OSError as exc:
        raise TargetUnavailable(f"{target.name}: check request failed: {exc}") from exc
    if status != 200 or answer != body:
        raise TargetUnavailable(f"{target.name}: check request answered {status} with "
                                f"{len(answer)} bytes instead of the {size}-byte echo")


@contextlib.contextmanager
def pinned_self(layout: CpuLayout) -> Iterator[None]:
    """Run a block with this process on the server CPUs, so children it starts inherit them."""
    if not layout.pinned:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(layout.server_cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def tool_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unavailable"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or
                                                                    done.stderr) else ""


def environment(layout: CpuLayout, load_tool: str, loop: str) -> dict[str, object]:
    import aiohttp

    commit = tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_layout": layout.describe(),
        "load_generator": (tool_version(["wrk", "--version"]) if load_tool == "wrk"
                           else "scripts/bench_load.py (asyncio, one process)"),
        "event_loop_of_helper_servers": loop,
    }


def run_load(spec: LoadSpec, load_tool: str, layout: CpuLayout) -> LoadResult:
    prefix = layout.prefix(layout.load_cpus)
    return run_wrk(spec, prefix) if load_tool == "wrk" else run_python_load(spec, prefix)


def measure(target: Target, spec: LoadSpec, load_tool: str, layout: CpuLayout) -> tuple[
        LoadResult, dict[str, int], dict[str, float]]:
    """One load run: the result, peak RSS (KiB) and CPU ms per request of each process."""
    for child in target.processes.values():
        reset_peak_rss(child.process.pid)
    cpu_before = {name: cpu_seconds(child.process.pid)
                  for name, child in target.processes.items()}
    result = run_load(spec, load_tool, layout)
    cpu = cpu_per_request({name: cpu_seconds(child.process.pid) - cpu_before[name]
                           for name, child in target.processes.items()}, result.requests)
    rss = {name: peak_rss_kib(child.process.pid) for name, child in target.processes.items()}
    for name, child in target.processes.items():
        if child.process.poll() is not None:
            raise RuntimeError(f"{target.name}: process {name} died during the run "
                               f"(exit {child.process.returncode}); log: {child.log}")
    return result, rss, cpu


def run_benchmark(args: argparse.Namespace, procs: Processes, stack: contextlib.ExitStack,
                  workdir: Path) -> int:
    layout = cpu_layout(not args.no_pin)
    load_tool = args.load if args.load != "auto" else ("wrk" if wrk_available() else "python")
    notes: list[str] = []
    if load_tool == "python" and args.load == "auto":
        notes.append("wrk is not installed (Debian package 'wrk'): using the bounded asyncio "
                     "load generator scripts/bench_load.py, which is slower than wrk, so "
                     "direct-call numbers may be limited by the generator")
    notes.append(f"CPU layout: {layout.describe()}")
    for note in notes:
        log(note)

    tls = make_tls_files(workdir / "tls")
    backend_port = free_port()
    backend = start_server(procs, layout, "backend",
                           ["backend", "--loop", args.loop], backend_port)
    backend_url = f"http://127.0.0.1:{backend_port}"
    targets: list[Target] = []
    if "direct" in args.target_list:
        targets.append(Target("direct", f"{backend_url}/echo", processes={"backend": backend}))
    if "baseline" in args.target_list:
        server_port, client_port = free_port(), free_port()
        server_proxy = start_server(
            procs, layout, "server-proxy",
            ["server-proxy", "--upstream", backend_url, "--cert", str(tls.server_cert),
             "--key", str(tls.server_key), "--ca", str(tls.ca), "--loop", args.loop],
            server_port)
        client_proxy = start_server(
            procs, layout, "client-proxy",
            ["client-proxy", "--upstream", f"https://127.0.0.1:{server_port}",
             "--cert", str(tls.client_cert), "--key", str(tls.client_key), "--ca",
             str(tls.ca), "--loop", args.loop],
            client_port)
        targets.append(Target("baseline", f"http://127.0.0.1:{client_port}/echo",
                              processes={"client-proxy": client_proxy,
                                         "server-proxy": server_proxy, "backend": backend}))
    if "exchange" in args.target_list:
        import bench_exchange

        for db in args.db_list:
            for revision in [None, *args.revision_list]:
                label = Path(revision).name if revision and Path(revision).is_dir() \
                    else revision
                name = f"exchange-{db}" + (f"@{label}" if label else "")
                try:
                    with pinned_self(layout):
                        exchange = bench_exchange.start_exchange(
                            procs, stack, workdir / name.replace("@", "-at-"), db,
                            backend_url, layout.prefix(layout.server_cpus), log, revision)
                    targets.append(Target(name, exchange.url, exchange.headers,
                                          {**exchange.processes, "backend": backend}))
                except bench_exchange.ExchangeUnavailable as exc:
                    notes.append(f"{name} not measured: {exc}")
                    log(notes[-1])

    measured: list[Target] = []
    for target in targets:
        try:
            check_echo(target, args.size_list[0])
            measured.append(target)
        except TargetUnavailable as exc:
            notes.append(f"{target.name} not measured: {exc}")
            log(notes[-1])
    if not measured:
        log("nothing to measure")
        return 1

    warmup = 0.5 if args.quick else 2.0
    for target in measured:
        log(f"warm-up {target.name} ({warmup:.1f} s)")
        spec = LoadSpec(target.url, args.size_list[0], args.concurrency, warmup,
                        args.max_requests, target.headers)
        measure(target, spec, load_tool, layout)

    plan: list[tuple[int, int]] = [(args.concurrency, size) for size in args.size_list]
    if args.low_concurrency > 0 and args.low_concurrency != args.concurrency:
        plan.append((args.low_concurrency, args.size_list[0]))
    total = args.repetitions * len(plan) * len(measured)
    log(f"{total} runs of {args.duration:g} s with {load_tool}")
    runs: list[Run] = []
    for repetition in range(args.repetitions):
        for concurrency, size in plan:
            shift = repetition % len(measured)
            for target in measured[shift:] + measured[:shift]:  # rotate the order
                if args.rewarm > 0:  # pools may have idled out while others ran
                    run_load(LoadSpec(target.url, size, concurrency, args.rewarm,
                                      args.max_requests, target.headers), load_tool, layout)
                spec = LoadSpec(target.url, size, concurrency, args.duration,
                                args.max_requests, target.headers)
                result, rss, cpu = measure(target, spec, load_tool, layout)
                runs.append(Run(target=target.name, size=size, concurrency=concurrency,
                                repetition=repetition, rps=result.rps, p50_ms=result.p50_ms,
                                p99_ms=result.p99_ms, requests=result.requests,
                                errors=result.errors, duration_s=result.duration_s,
                                peak_rss_kib=rss, cpu_ms_per_request=cpu))
                log(f"{len(runs)}/{total} rep {repetition} c={concurrency} "
                    f"{format_size(size)} {target.name}: {result.rps:.0f} req/s "
                    f"p50 {result.p50_ms:.2f} ms p99 {result.p99_ms:.2f} ms "
                    f"errors {result.errors}")
    if args.profile:
        for target in measured:
            if not target.name.startswith("exchange"):
                continue
            pids = {f"{target.name}-{role}": child.process.pid
                    for role, child in target.processes.items()
                    if role in ("consumer", "provider")}
            log(f"profiling {target.name} with py-spy ({args.duration:g} s, not measured)")
            recorders = start_recorders(pids, args.profile, args.duration,
                                        layout.prefix(layout.load_cpus))
            spec = LoadSpec(target.url, args.size_list[0], args.concurrency, args.duration,
                            args.max_requests, target.headers)
            measure(target, spec, load_tool, layout)
            for text in finish_recorders(recorders, args.profile, args.duration + 30):
                print(text, file=sys.stderr)
        log(f"profiles written to {args.profile}")
    summaries = summarise(runs)
    comparisons = compare(summaries)
    if any(r.errors for r in runs):
        notes.append("some runs had errors (see the errors column); their req/s counts only "
                     "successful answers")
    print(render_table(summaries, comparisons))
    print()
    print(f"load generator: {load_tool}; {args.repetitions} interleaved repetition(s) of "
          f"{args.duration:g} s; medians shown; concurrency {args.concurrency} (throughput) and "
          f"{args.low_concurrency} (latency, {format_size(args.size_list[0])} only)")
    for note in notes:
        print(f"note: {note}")
    if args.json_out:
        settings = {"duration_s": args.duration, "repetitions": args.repetitions,
                    "concurrency": args.concurrency, "low_concurrency": args.low_concurrency,
                    "sizes": args.size_list, "databases": args.db_list,
                    "max_requests": args.max_requests, "load_generator": load_tool,
                    "revisions": args.revision_list, "rewarm_s": args.rewarm,
                    "command": " ".join(sys.argv)}
        document = result_document(environment(layout, load_tool, args.loop), settings, runs,
                                   summaries, comparisons, notes)
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")
        log(f"results written to {args.json_out}")
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="secserver-bench-"))
    procs = Processes(workdir)
    try:
        with contextlib.ExitStack() as stack:
            try:
                return run_benchmark(args, procs, stack, workdir)
            finally:
                procs.stop_all()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if args.keep:
            log(f"working directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
