"""The demo's child processes: readiness, early exits with their log, stops that always stop."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from secserver.demo.layout import Ports
from secserver.demo.processes import DemoProcessError, ProcessGroup, http_status

pytestmark = pytest.mark.integration


def test_sample_service_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    port = Ports.free().tag_locations
    group = ProcessGroup(tmp_path)
    child = group.start("tags", ["-m", "secserver.examples.tag_locations", "--port",
                                 str(port)], tmp_path)
    try:
        group.wait_http(child, "127.0.0.1", port, "/tags/TAG-0001/status", timeout=60)
        assert http_status("127.0.0.1", port, "/tags/TAG-0404/status") == 404
    finally:
        group.stop_all()
    assert child.process.returncode == 0
    assert group.children == []
    assert f"listening on http://127.0.0.1:{port}/" in child.log_tail()
    assert http_status("127.0.0.1", port, "/") is None


def test_a_child_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    child = group.start("broken", ["-m", "secserver", "serve", "--config",
                                   str(tmp_path / "missing.toml")], tmp_path)
    try:
        with pytest.raises(DemoProcessError) as info:
            group.wait_http(child, "127.0.0.1", Ports.free().tsa, "/healthz", timeout=60)
    finally:
        group.stop_all()
    assert "broken exited with code 1" in info.value.message
    assert info.value.detail is not None and "missing.toml" in info.value.detail


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('ready', flush=True); time.sleep(600)")
    child = group.start("stubborn", ["-c", script], tmp_path)
    deadline = time.monotonic() + 30
    while "ready" not in child.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    code = group.stop(child, timeout=0.5)
    assert code == -9
    assert child.process.poll() is not None
