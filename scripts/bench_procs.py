"""Process plumbing for the benchmark: CPU pinning, child processes, ports, peak RSS, TLS.

Every child is started in its own session (process group) and registered; ``stop_all``
terminates the groups, then kills what is left, so nothing outlives the benchmark even on
error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CpuLayout:
    """Which CPUs the servers and the load generator use (empty: not pinned)."""

    server_cpus: tuple[int, ...]
    load_cpus: tuple[int, ...]

    @property
    def pinned(self) -> bool:
        return bool(self.server_cpus)

    def prefix(self, cpus: Sequence[int]) -> list[str]:
        """A ``taskset`` command prefix, or nothing when not pinned."""
        if not self.pinned:
            return []
        return ["taskset", "-c", ",".join(map(str, cpus))]

    def describe(self) -> str:
        if not self.pinned:
            return ("not pinned: load generator and all server processes share every CPU "
                    "(the scheduler decides)")
        return (f"pinned with taskset: all server processes (backend, proxies, nodes, TSA, "
                f"PostgreSQL) on CPU {','.join(map(str, self.server_cpus))}; load generator "
                f"on CPU {','.join(map(str, self.load_cpus))}")


def cpu_layout(pin: bool) -> CpuLayout:
    """Servers on all CPUs but the last, the load generator on the last (needs >= 2 CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return CpuLayout((), ())
    return CpuLayout(tuple(cpus[:-1]), (cpus[-1],))


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Registry of every child process; ``stop_all`` ends them all."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=cwd,
                                       env=dict(env) if env is not None else None,
                                       start_new_session=True)
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace: float = 10.0) -> None:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(grace)
        # Whatever is left in its group (workers, a stuck process) is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signal.SIGKILL)
        try:
            child.process.wait(5)
        except subprocess.TimeoutExpired:
            print(f"warning: {child.name} (pid {child.process.pid}) did not exit",
                  file=sys.stderr)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop(child)
        self.children.clear()


def tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def wait_for_port(port: int, child: Child, timeout: float = 60.0) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail early if the child died."""
    deadline = time.monotonic() + timeout
    while True:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode} before "
                               f"listening on port {port}; its log ({child.log}):\n"
                               f"{tail(child.log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not listen on port {port} within "
                                   f"{timeout:.0f} s; its log ({child.log}):\n"
                                   f"{tail(child.log)}") from None
            time.sleep(0.1)


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants (Linux /proc)."""
    result, pending = [], [pid]
    while pending:
        current = pending.pop()
        result.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(p) for p in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
    return result


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM (write 5 to clear_refs, Linux >= 4.0); False when not permitted."""
    ok = True
    for member in process_tree(pid):
        try:
            Path(f"/proc/{member}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def peak_rss_kib(pid: int) -> int:
    """VmHWM of the process plus its descendants, in KiB (0 when unreadable)."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its descendants, all threads (Linux /proc)."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, ValueError, IndexError):
            continue
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA with a server certificate for 127.0.0.1 and a client certificate."""
    import trustme  # dev dependency, only needed here

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("baseline-client.bench.invalid")
    files = TlsFiles(ca=directory / "ca.pem", server_cert=directory / "server.pem",
                     server_key=directory / "server.key", client_cert=directory / "client.pem",
                     client_key=directory / "client.key")
    ca.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.private_key_pem.write_to_path(str(files.client_key))
    with files.server_cert.open("wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    with files.client_cert.open("wb") as out:
        for blob in client.cert_chain_pems:
            out.write(blob.bytes())
    return files
