"""``secserver demo --keep-running``: everything stays up and usable until interrupted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

START_TIMEOUT = 180.0


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"no line with {marker!r}; got:\n" + "\n".join(lines))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_keep_running_serves_until_interrupted(tmp_path: Path, signum: int) -> None:
    directory = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "secserver", "demo", "--dir", str(directory), "--keep-running"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = read_until(process, "TOYONO resident-registry:", START_TIMEOUT)
        transcript = "\n".join(lines)
        assert "everything keeps running until Ctrl-C" in transcript
        match = re.search(r"TOYONO SS1 \(consumer\.toml\): client (http://127\.0\.0\.1:\d+/)",
                          transcript)
        assert match, transcript
        # An information system can use the running exchange.
        request = urllib.request.Request(
            match.group(1) + "r1/JP-DEV/COM/OTTA/TAGS/tag-locations/tags/TAG-0002/status",
            headers={"X-Road-Client": "JP-DEV/GOV/TOYONO/ELDERCARE",
                     "X-Road-Data-Subject": "R-1002"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            assert response.status == 200
            assert json.loads(response.read())["batteryPercent"] == 12
            assert response.headers["X-Road-Request-Hash"]
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stdout + stderr
    assert "[6] ok   audit log verified" in stdout
    assert "demo passed" in stdout
    assert "interrupted: stopping" in stderr
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = (proc / "cwd").resolve(strict=True)
            except OSError:
                continue
            assert cwd != directory.resolve(), f"process {proc.name} still runs in the demo"
