"""Evidence bundles: `audit export`, `audit verify-bundle`, and exactly the openssl commands
and Python snippet of docs/audit.md, on a log written with a real dev TSA."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "audit"))

from audit_support import node_config, run_secserver, write_sample_log
from pki_fixtures import dev_pki, start_tsa  # noqa: F401

from secserver.config import NodeConfig
from secserver.signing.pki import DevPki

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "audit.md"


def doc_blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Checking a bundle without secserver", 1)[1]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.fixture
def logged(migrated_url: str, tmp_path: Path,
           dev_pki: DevPki) -> NodeConfig:  # noqa: F811
    key = tmp_path / "body.key"
    key.write_text("11" * 32 + "\n")
    with start_tsa(dev_pki.directory) as tsa:
        config = node_config(tmp_path / "node", migrated_url, dev_pki.directory,
                             tsa_url=tsa.url, checkpoint_records=6, body_key_file=key)
        asyncio.run(write_sample_log(config, dev_pki.directory, exchanges=6, policy="encrypt"))
    return config


def export(config: NodeConfig, tmp_path: Path, message_id: str) -> tuple[Path, Path]:
    bundle = tmp_path / f"{message_id}.zip"
    done = run_secserver("audit", "export", "--config", str(config.path), "--id", message_id,
                     "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / message_id
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)
    return bundle, folder


def run_doc_commands(folder: Path) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for block in doc_blocks("sh"):
        for line in block.strip().splitlines():
            results.append(subprocess.run(["bash", "-c", line], cwd=folder,
                                          capture_output=True, text=True, timeout=60))
    (folder / "check_path.py").write_text(doc_blocks("python")[0], encoding="utf-8")
    results.append(subprocess.run(["python3", "check_path.py"], cwd=folder,
                                  capture_output=True, text=True, timeout=60))
    return results


def test_bundle_layout_and_offline_checks(logged: NodeConfig, tmp_path: Path,
                                          dev_pki: DevPki) -> None:  # noqa: F811
    bundle, folder = export(logged, tmp_path, "m-4")
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert names == {
        "manifest.json", "proof.json",
        "request/record.txt", "request/signed-document.txt", "request/signature.p7s",
        "request/body.bin", "response/record.txt", "response/signed-document.txt",
        "response/signature.p7s", "response/body.bin",
        "checkpoint/checkpoint.txt", "checkpoint/signature.p7s", "checkpoint/timestamp.tsr",
        "certs/ca.crt", "certs/log-signer.crt", "certs/tsa.crt", "certs/request-signer.crt",
        "certs/response-signer.crt"}
    # encrypted in the log, plain in the bundle
    assert (folder / "request/body.bin").read_bytes().startswith(b'{"tag": 4')

    done = run_secserver("audit", "verify-bundle", str(bundle), "--ca", str(dev_pki.ca_cert),
                     "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["message_id"] == "m-4"
    assert report["problems"] == []

    results = run_doc_commands(folder)
    for result in results:
        assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Verification: OK" in results[4].stdout
    assert "is in checkpoint" in results[-1].stdout
    assert len(results[-1].stdout.splitlines()) == 2


def test_tampered_bundle_fails_every_way(logged: NodeConfig, tmp_path: Path,
                                         dev_pki: DevPki) -> None:  # noqa: F811
    bundle, folder = export(logged, tmp_path, "m-2")
    record = folder / "request/record.txt"
    record.write_bytes(record.read_bytes().replace(b"status: 200", b"status: 500"))
    checkpoint = folder / "checkpoint/checkpoint.txt"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"extra: 1\n")
    document = folder / "response/signed-document.txt"
    document.write_bytes(document.read_bytes().replace(b"m-2", b"m-9"))
    results = run_doc_commands(folder)
    cms_checkpoint, _cms_request, cms_response, _subject, ts_verify, _ts_text, snippet = results
    assert cms_checkpoint.returncode != 0
    assert cms_response.returncode != 0
    assert ts_verify.returncode != 0
    assert snippet.returncode != 0 and "AssertionError" in snippet.stderr

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "request/record.txt":
                data = data.replace(b"status: 200", b"status: 500")
            out.writestr(item, data)
    done = run_secserver("audit", "verify-bundle", str(tampered), "--ca", str(dev_pki.ca_cert),
                     "--json")
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    assert "request/record.txt does not match its SHA-256 in the manifest" in problems
    assert any("record.txt does not hash to the proof's hash" in p for p in problems)


def test_export_from_an_archive(logged: NodeConfig, tmp_path: Path,
                                dev_pki: DevPki) -> None:  # noqa: F811
    tomorrow = "2100-01-01"
    done = run_secserver("audit", "archive", "--config", str(logged.path), "--before", tomorrow,
                     "--out", str(tmp_path / "archive"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["first_seq"] == 1
    bundle, _folder = export(logged, tmp_path, "m-1")
    checked = run_secserver("audit", "verify-bundle", str(bundle), "--ca", str(dev_pki.ca_cert))
    assert checked.returncode == 0, checked.stdout
    assert "bundle of message m-1 from JP-DEV/GOV/TOYONO/SS1: verified" in checked.stdout
    shown = run_secserver("audit", "show", "--config", str(logged.path), "--id", "m-1", "--json")
    assert len(json.loads(shown.stdout)["records"]) == 2


def test_a_token_moved_to_another_checkpoint(logged: NodeConfig) -> None:
    from sqlalchemy import text

    from secserver.db.engine import make_engine

    engine = make_engine(logged.database_url)
    with engine.begin() as conn:
        first, second = conn.execute(text(
            "SELECT checkpoint_seq FROM log_timestamps ORDER BY checkpoint_seq LIMIT 2")
        ).scalars()
        conn.execute(text("UPDATE log_timestamps SET token = (SELECT token FROM log_timestamps "
                          "WHERE checkpoint_seq = :b) WHERE checkpoint_seq = :a"),
                     {"a": first, "b": second})
    engine.dispose()
    done = run_secserver("audit", "verify", "--config", str(logged.path), "--json")
    assert done.returncode == 1
    [problem] = json.loads(done.stdout)["problems"]
    assert problem["message"].startswith(f"checkpoint {first} timestamp invalid: ")
    assert "imprint" in problem["message"]
