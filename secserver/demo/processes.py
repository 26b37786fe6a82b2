"""Child processes of the demo: start, wait until they answer, always stop them.

Each child runs in its own session (so a Ctrl-C on the terminal reaches only the demo,
which then stops the children in order) and writes its output to ``logs/NAME.log``.
Stopping sends SIGTERM, waits, and only then SIGKILLs.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from secserver.errors import SecServerError

STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


class DemoProcessError(SecServerError):
    """A child process of the demo did not start or stopped early."""

    code = "DemoProcessFailed"
    http_status = 500


@dataclass
class Child:
    name: str
    args: tuple[str, ...]
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise DemoProcessError(
                f"{self.name} exited with code {code} (log {self.log_path})",
                detail=self.log_tail())


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """The HTTP status of ``GET path``, or ``None`` when nothing answers yet."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


@dataclass
class ProcessGroup:
    """The demo's children, stopped in reverse start order by :meth:`stop_all`."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, args: Sequence[str], cwd: Path) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        try:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log_file.close()
        child = Child(name, tuple(args), log_path, process)
        self.children.append(child)
        return child

    def wait_http(self, child: Child, host: str, port: int, path: str,
                  timeout: float, ok: Sequence[int] = (200,)) -> None:
        """Wait until ``GET path`` answers one of ``ok``; fail early if the child exits."""
        deadline = time.monotonic() + timeout
        while True:
            child.check_alive()
            status = http_status(host, port, path)
            if status in ok:
                return
            if time.monotonic() > deadline:
                raise DemoProcessError(
                    f"{child.name} did not answer GET http://{host}:{port}{path} within "
                    f"{timeout:.0f} s (last status {status}; log {child.log_path})",
                    detail=child.log_tail())
            time.sleep(POLL_INTERVAL)

    def stop(self, child: Child, timeout: float = STOP_TIMEOUT) -> int:
        """Stop one child gracefully (SIGTERM), killing it past ``timeout``."""
        process = child.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if child in self.children:
            self.children.remove(child)
        return process.returncode

    def stop_all(self) -> None:
        """Stop every child still running, newest first. Safe to call more than once."""
        for child in reversed(list(self.children)):
            self.stop(child)
