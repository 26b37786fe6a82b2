"""In-process checks of the ``acl`` command helpers (the full flows run as subprocesses in
tests/integration/test_acl_cli.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from secserver.cli.acl import TIME, _fingerprint, acl, print_table
from secserver.cli.consent import consent


def test_time_parameter() -> None:
    assert TIME.convert("2026-04-01", None, None) == datetime(2026, 4, 1, tzinfo=UTC)
    jst = TIME.convert("2026-04-01T09:00:00+09:00", None, None)
    assert jst.utcoffset() == timedelta(hours=9)
    assert jst.astimezone(UTC) == datetime(2026, 4, 1, tzinfo=UTC)
    assert TIME.convert(datetime(2026, 1, 1, tzinfo=UTC), None, None).year == 2026


@pytest.mark.parametrize("args", [
    ["members", "add", "JP-DEV/GOV", "--config", "x.toml"],
    ["grant", "JP-DEV/COM/OTTA/TAGS", "JP-DEV/GOV/TOYONO/RES", "--config", "x.toml"],
    ["check", "JP-DEV/COM/OTTA/TAGS", "not a service", "--config", "x.toml"],
])
def test_malformed_identifiers_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(acl, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


@pytest.mark.parametrize("command", ["grant", "revoke"])
@pytest.mark.parametrize("half", [["--method", "GET"], ["--path", "/people/*"]])
def test_an_endpoint_needs_method_and_path(command: str, half: list[str]) -> None:
    result = CliRunner().invoke(acl, [command, "JP-DEV/COM/OTTA/TAGS",
                                      "JP-DEV/GOV/TOYONO/RES/people", *half,
                                      "--config", "x.toml"])
    assert result.exit_code == 2
    assert "--method and --path go together" in result.output


def test_missing_configuration_fails_with_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(acl, ["members", "list", "--config",
                                      str(tmp_path / "missing.toml")])
    assert result.exit_code == 1
    assert "configuration file not found" in result.output


def test_consent_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(consent, ["revoke", "3", "--subject", "x", "--config", "x.toml"])
    assert both.exit_code == 2 and "either a CONSENT_ID or --subject" in both.output
    days = runner.invoke(consent, ["record", "s", "JP-DEV/COM/O/T", "JP-DEV/G/T/R/svc",
                                   "--purpose", "p", "--days", "3", "--until", "2027-01-01",
                                   "--config", "x.toml"])
    assert days.exit_code == 2 and "--until or --days" in days.output


def test_plain_table(capsys: pytest.CaptureFixture[str]) -> None:
    print_table([{"id": "JP-DEV/GOV/A", "local": True, "allowlist": ["1.2.3.4/32"]},
                 {"id": "B", "local": False, "allowlist": []}],
                [("id", "subsystem"), ("local", "local"), ("allowlist", "allowlist")],
                "subsystems")
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["SUBSYSTEM     LOCAL  ALLOWLIST",
                     "JP-DEV/GOV/A  yes    1.2.3.4/32",
                     "B             no     -"]


def test_certificate_fingerprint(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("is.example")
    pem = tmp_path / "is.pem"
    cert.cert_chain_pems[0].write_to_path(str(pem))
    expected = hashlib.sha256(x509.load_pem_x509_certificate(pem.read_bytes())
                              .public_bytes(Encoding.DER)).hexdigest()
    assert _fingerprint(pem, None) == expected
    der = tmp_path / "is.der"
    der.write_bytes(x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER))
    assert _fingerprint(der, None) == expected
    assert _fingerprint(None, "ab" * 32) == "ab" * 32
