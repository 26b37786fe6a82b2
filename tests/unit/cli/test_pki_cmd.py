"""``secserver pki init-dev`` through click."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from secserver.cli.main import cli
from secserver.signing.keys import load_private_key


def test_init_dev_plain_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["pki", "init-dev", "--dir", str(tmp_path / "pki")])
    assert result.exit_code == 0, result.output
    assert "JP-DEV/GOV/TOYONO (subsystem ELDERCARE)" in result.stdout
    assert (tmp_path / "pki/servers/COM.OTTA.SS1/log.key").is_file()
    again = runner.invoke(cli, ["pki", "init-dev", "--dir", str(tmp_path / "pki")])
    assert again.exit_code == 1 and "already exists" in again.stderr
    forced = runner.invoke(cli, ["pki", "init-dev", "--dir", str(tmp_path / "pki"), "--force",
                                 "--json", "--key-type", "rsa2048"])
    assert forced.exit_code == 0, forced.output
    info = json.loads(forced.stdout)
    assert info["key_type"] == "rsa2048" and not info["encrypted"]
    assert info["servers"]["JP-DEV/COM/OTTA/SS1"].endswith("servers/COM.OTTA.SS1")


def test_passphrase_from_env_and_file(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["pki", "init-dev", "--dir", str(tmp_path / "a"),
                                 "--passphrase-env", "PKI_PASS"], env={"PKI_PASS": "from env"})
    assert result.exit_code == 0, result.output
    key = tmp_path / "a/members/COM.OTTA/sign.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    load_private_key(key, b"from env")
    (tmp_path / "pass").write_text("from file\n")
    result = runner.invoke(cli, ["pki", "init-dev", "--dir", str(tmp_path / "b"),
                                 "--passphrase-file", str(tmp_path / "pass")])
    assert result.exit_code == 0, result.output
    load_private_key(tmp_path / "b/ca/ca.key", b"from file")


@pytest.mark.parametrize(("args", "env", "code", "message"), [
    (["--passphrase-env", "NOPE"], {}, 1, "NOPE"),
    (["--passphrase-env", "P", "--passphrase-file", "/etc/hostname"], {"P": "x"}, 2, "not both"),
    (["--key-type", "dsa"], {}, 2, "dsa"),
    (["--passphrase", "x"], {}, 2, "No such option"),
])
def test_errors(tmp_path: Path, args: list[str], env: dict[str, str], code: int,
                message: str) -> None:
    result = CliRunner().invoke(cli, ["pki", "init-dev", "--dir", str(tmp_path / "p"), *args],
                                env=env)
    assert result.exit_code == code
    assert message in result.stderr
