"""Shared CLI helpers: an invalid configuration is reported problem by problem, exit 1."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from secserver.cli.options import handle_errors, load_or_fail
from secserver.config import load_config


def _bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text('[node]\nport = "x"\n', encoding="utf-8")
    return path


def test_load_or_fail_lists_every_problem(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_config(tmp_path)
    with pytest.raises(SystemExit) as exited:
        load_or_fail(path)
    assert exited.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"error: configuration {path} is invalid:"
    assert any("[node] port: unknown key" in line for line in lines[1:])
    assert any("server_id" in line for line in lines[1:])
    assert all(line.startswith("  - ") for line in lines[1:]) and len(lines) >= 3


def test_handle_errors_reports_a_config_error(tmp_path: Path) -> None:
    path = _bad_config(tmp_path)

    @click.command()
    @handle_errors
    def command() -> None:
        load_config(path)

    result = CliRunner().invoke(command, [])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: configuration is invalid:"
    assert any("[node] port: unknown key" in line for line in lines[1:])
