"""``secserver demo`` as a user runs it: a real subprocess, real nodes, a real transcript."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from secserver.demo import run_demo
from secserver.demo.layout import Ports

pytestmark = pytest.mark.integration

STEP_LINES = (
    "[1] ok   allowed REST call",
    "[2] ok   allowed SOAP call",
    "[3] ok   call without a right",
    "[4] ok   personal data without consent",
    "[5] ok   same call after consent",
)


def secserver(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secserver", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("demo")
    directory = root / "demo"
    result = secserver("demo", "--dir", str(directory), cwd=root)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return directory, result.stdout, result.stderr


def test_every_step_behaves_as_expected(demo_run: tuple[Path, str, str]) -> None:
    _, stdout, _ = demo_run
    for line in STEP_LINES:
        assert line in stdout, stdout
    assert "FAIL" not in stdout
    assert re.search(r"^demo passed: (\d) of \1 steps behaved as expected", stdout, re.M), stdout


def test_transcript_shows_what_was_asked_and_answered(demo_run: tuple[Path, str, str]) -> None:
    _, stdout, _ = demo_run
    assert "GET /residents/R-1001/locations" in stdout
    assert "getResident(R-1001)" in stdout
    assert "Yamada Hanako" in stdout
    assert "refused as expected: 403 Server.ServerProxy.AccessDenied" in stdout
    assert "consent recorded: consent 2 of R-1002" in stdout


def test_transcript_never_shows_secrets(demo_run: tuple[Path, str, str]) -> None:
    directory, stdout, stderr = demo_run
    for key_file in (directory / "secrets").iterdir():
        assert key_file.read_text().strip() not in stdout + stderr
    assert "PRIVATE KEY" not in stdout + stderr


@pytest.mark.parametrize("name", ["consumer.toml", "provider.toml"])
def test_left_configurations_pass_config_check(demo_run: tuple[Path, str, str],
                                               name: str, tmp_path: Path) -> None:
    directory, _, _ = demo_run
    result = secserver("config", "check", "--config", str(directory / name), cwd=tmp_path,
                       timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": ok (node JP-DEV/" in result.stdout


def test_left_configuration_works_with_acl_commands(demo_run: tuple[Path, str, str],
                                                    tmp_path: Path) -> None:
    directory, _, _ = demo_run
    result = secserver("acl", "check", "JP-DEV/GOV/TOYONO/ELDERCARE",
                       "JP-DEV/COM/OTTA/TAGS/tag-locations", "--method", "GET",
                       "--path", "/residents/R-1002/locations", "--subject", "R-1002",
                       "--config", str(directory / "provider.toml"), cwd=tmp_path,
                       timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "allow" in result.stdout.lower()


def test_no_process_is_left_running(demo_run: tuple[Path, str, str]) -> None:
    # Every child of the demo runs with the demo directory as its working directory.
    directory, _, _ = demo_run
    leftovers = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = (proc / "cwd").resolve(strict=True)
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == directory.resolve() or str(directory) in args:
            leftovers.append(f"{proc.name}: {args}")
    assert leftovers == []


def test_temporary_directory_is_removed(tmp_path: Path) -> None:
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    result = subprocess.run([sys.executable, "-m", "secserver", "demo"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=240, check=False,
                            env={**os.environ, "TMPDIR": str(env_tmp)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(env_tmp.iterdir()) == []


def test_a_step_that_misbehaves_fails_the_demo(tmp_path: Path) -> None:
    # Nodes that re-read their registry only every 60 s cannot apply the consent of
    # step 5 in time: the demo must say so and exit 1 (it is not a demo that cannot fail).
    result = subprocess.run(
        [sys.executable, "-m", "secserver", "demo", "--dir", str(tmp_path / "demo")],
        cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "SECSERVER_ACL_REFRESH_INTERVAL": "60"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[4] ok   personal data without consent" in result.stdout
    assert "[5] FAIL same call after consent" in result.stdout
    assert "demo FAILED: step(s) 5 did not behave as expected" in result.stdout
    assert "consent missing" in result.stdout


def test_a_directory_with_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    result = secserver("demo", "--dir", str(tmp_path), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "notes.txt" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_port_taken_meanwhile_means_a_fresh_start(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free = Ports.free
    calls: list[Ports] = []

    def free() -> Ports:
        ports = real_free()
        if not calls:  # the first choice collides with a port another program holds
            ports = replace(ports, tag_locations=taken)
        calls.append(ports)
        return ports

    monkeypatch.setattr(Ports, "free", staticmethod(free))
    out: list[str] = []
    progress: list[str] = []
    try:
        result = run_demo(tmp_path / "demo", keep_running=False, echo=out.append,
                          echo_progress=progress.append)
    finally:
        squatter.close()
    assert result.ok, "\n".join(out + progress)
    assert len(calls) == 2
    assert any("took one of the chosen ports" in line for line in progress)
    assert sum(1 for line in out if line.startswith("secserver demo:")) == 1
