"""``secserver sign`` and ``secserver verify`` through click."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pki_fixtures import dev_pki  # noqa: F401

from secserver.cli.main import cli
from secserver.signing.keys import load_certificate, load_private_key
from secserver.signing.pki import DevPki
from secserver.signing.signer import Signer


@pytest.fixture
def config(tmp_path: Path, dev_pki: DevPki) -> Path:  # noqa: F811
    path = tmp_path / "node.toml"
    member = dev_pki.directory / "members/GOV.TOYONO"
    path.write_text(f"""
[node]
server_id = "JP-DEV/GOV/TOYONO/SS1"
[trust]
ca_files = ["{dev_pki.ca_cert}"]
[signing]
cert_file = "{member}/sign.crt"
key_file = "{member}/sign.key"
""")
    return path


def test_sign_then_verify(config: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    document = tmp_path / "doc.txt"
    document.write_bytes(b"signed document\n")
    signed = runner.invoke(cli, ["sign", "--config", str(config), str(document)])
    assert signed.exit_code == 0, signed.stderr
    signature = tmp_path / "doc.p7s"
    signature.write_bytes(signed.stdout_bytes)
    assert signed.stdout_bytes[:1] == b"\x30"
    ok = runner.invoke(cli, ["verify", "--config", str(config), str(document), str(signature),
                             "--member", "JP-DEV/GOV/TOYONO/ELDERCARE"])
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith("ok: signed by JP-DEV/GOV/TOYONO at ") and "(single)" in ok.stdout
    as_json = runner.invoke(cli, ["verify", "--config", str(config), "-", str(signature),
                                  "--json"], input=b"signed document\n")
    assert json.loads(as_json.stdout)["member"] == "JP-DEV/GOV/TOYONO"
    stdin = runner.invoke(cli, ["sign", "--config", str(config), "-", "--out",
                                str(tmp_path / "stdin.p7s")], input=b"signed document\n")
    assert stdin.exit_code == 0
    assert runner.invoke(cli, ["verify", "--config", str(config), str(document),
                               str(tmp_path / "stdin.p7s")]).exit_code == 0


def test_verify_failures(config: Path, tmp_path: Path, dev_pki: DevPki) -> None:  # noqa: F811
    runner = CliRunner()
    document = tmp_path / "doc.txt"
    document.write_bytes(b"original")
    signature = tmp_path / "doc.p7s"
    signature.write_bytes(runner.invoke(cli, ["sign", "--config", str(config),
                                              str(document)]).stdout_bytes)
    document.write_bytes(b"changed!")
    tampered = runner.invoke(cli, ["verify", "--config", str(config), str(document),
                                   str(signature)])
    assert tampered.exit_code == 1 and "does not match the content" in tampered.stderr
    document.write_bytes(b"original")
    wrong = runner.invoke(cli, ["verify", "--config", str(config), str(document),
                                str(signature), "--member", "JP-DEV/COM/OTTA"])
    assert wrong.exit_code == 1 and "claims member JP-DEV/COM/OTTA" in wrong.stderr
    later = runner.invoke(cli, ["verify", "--config", str(config), str(document),
                                str(signature), "--at", "2099-01-01T00:00:00Z"])
    assert later.exit_code == 1 and "expired" in later.stderr
    bad_member = runner.invoke(cli, ["verify", "--config", str(config), str(document),
                                     str(signature), "--member", "x"])
    assert bad_member.exit_code == 2
    # A batch signature made by the library verifies through the CLI as well.
    member = dev_pki.directory / "members/GOV.TOYONO"
    signer = Signer(load_private_key(member / "sign.key"), load_certificate(member / "sign.crt"))
    blobs = signer.sign_many([b"one", b"original", b"three"])
    signature.write_bytes(blobs[1])
    batch = runner.invoke(cli, ["verify", "--config", str(config), str(document),
                                str(signature)])
    assert batch.exit_code == 0 and "batch, document 2 of 3" in batch.stdout


def test_sign_without_key(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nserver_id = "JP-DEV/GOV/TOYONO/SS1"\n')
    (tmp_path / "doc").write_bytes(b"x")
    result = CliRunner().invoke(cli, ["sign", "--config", str(path), str(tmp_path / "doc")])
    assert result.exit_code == 1 and "[signing] cert_file" in result.stderr
