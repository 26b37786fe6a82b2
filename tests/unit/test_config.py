from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from secserver.cli.main import cli
from secserver.config import load_config
from secserver.errors import ConfigError

MINIMAL = """
[node]
server_id = "JP-DEV/COM/OTTA/SS1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert str(config.server_id) == "JP-DEV/COM/OTTA/SS1"
    assert config.node.data_dir == tmp_path / "data"
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'secserver.db'}"
    assert config.signing.batch == "auto"


def test_env_overrides(tmp_path: Path) -> None:
    env = {"SECSERVER_CLIENT_PORT": "9999", "SECSERVER_DATABASE_URL": "postgresql://x@h/db",
           "SECSERVER_CLIENT_TLS": "false"}
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.client.port == 9999
    assert config.database_url == "postgresql://x@h/db"


def test_all_problems_reported_with_file_and_key(tmp_path: Path) -> None:
    text = """
[node]
server_id = "JP-DEV/COM"
[client]
port = "eighty"
colour = "blue"
[signing]
batch = "sometimes"
key_file = "missing.key"
[admin]
host = "0.0.0.0"
[bogus]
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = "\n".join(info.value.problems)
    assert f"{path}: [node] server_id" in problems
    assert "[client] port: expected a whole number, got 'eighty'" in problems
    assert "[client] colour: unknown key" in problems
    assert "[signing] batch: expected one of 'auto', 'off'" in problems
    assert "[signing] key_file: file" in problems and "does not exist" in problems
    assert "[admin] host: the admin port listens on loopback only" in problems
    assert "[bogus]: unknown section" in problems
    assert len(info.value.problems) == 7


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\n"), env={})


def test_config_check_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path, MINIMAL)
    result = runner.invoke(cli, ["config", "check", "--config", str(good)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nserver_id = "x"\n[client]\nport = 0\n', encoding="utf-8")
    result = runner.invoke(cli, ["config", "check", "--config", str(bad), "--json"])
    assert result.exit_code == 1
    assert '"ok": false' in result.output
    assert "port: expected 1-65535" in result.output


def test_soap_limit(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.limits.max_soap_bytes == 4 * 1024 * 1024
    with pytest.raises(ConfigError,
                       match=r"\[limits\] max_soap_bytes: must be at least 1, got 0"):
        load_config(write(tmp_path, MINIMAL), env={"SECSERVER_LIMITS_MAX_SOAP_BYTES": "0"})


def test_connection_limit(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.limits.max_connections == 500
    with pytest.raises(ConfigError,
                       match=r"\[limits\] max_connections: must be at least 1, got 0"):
        load_config(write(tmp_path, MINIMAL), env={"SECSERVER_LIMITS_MAX_CONNECTIONS": "0"})
