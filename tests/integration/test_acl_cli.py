"""``secserver acl`` and ``secserver consent`` as real processes on a temporary node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from postgres import create_database

pytestmark = pytest.mark.integration

PROVIDER = "JP-DEV/GOV/TOYONO/RES"
SERVICE = f"{PROVIDER}/people"
CONSUMER = "JP-DEV/COM/OTTA/TAGS"


def write_config(tmp_path: Path, database_url: str | None = None) -> Path:
    (tmp_path / "subject.key").write_bytes(os.urandom(32).hex().encode())
    config = tmp_path / "node.toml"
    text = ('[node]\nserver_id = "JP-DEV/GOV/TOYONO/SS1"\ndata_dir = "data"\n'
            '[acl]\nsubject_key_file = "subject.key"\n')
    if database_url:
        text += f'[database]\nurl = "{database_url}"\n'
    config.write_text(text)
    return config


class Node:
    def __init__(self, config: Path) -> None:
        self.config = config

    def run(self, *args: str, stdin: str | None = None,
            actor: str = "tester") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SECSERVER_ACTOR": actor}
        env.pop("SECSERVER_CONFIG", None)
        return subprocess.run([sys.executable, "-m", "secserver", *args, "--config",
                               str(self.config)], capture_output=True, text=True, env=env,
                              input=stdin, timeout=120, check=False)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(write_config(tmp_path))


def setup_registry(node: Node) -> None:
    node.ok("acl", "members", "add", "JP-DEV/GOV/TOYONO", "--name", "Toyono city")
    node.ok("acl", "members", "add", "JP-DEV/COM/OTTA")
    node.ok("acl", "subsystems", "add", PROVIDER, "--local", "--allow", "127.0.0.1")
    node.ok("acl", "subsystems", "add", CONSUMER)
    node.ok("acl", "services", "add", SERVICE, "--backend", "http://127.0.0.1:9000/",
            "--timeout", "7")
    node.ok("acl", "endpoints", "add", SERVICE, "GET", "/people/*")


def test_registry_and_decisions(node: Node) -> None:
    setup_registry(node)
    granted = node.json("acl", "grant", CONSUMER, SERVICE, "--method", "GET",
                        "--path", "/people/*")
    assert granted["created"] is True and granted["granted_by"] == "tester"
    again = node.ok("acl", "rights", "grant", CONSUMER, SERVICE, "--method", "get",
                    "--path", "/people/*")
    assert again.startswith("already granted")

    allowed = node.run("acl", "check", CONSUMER, SERVICE, "--path", "/people/42")
    assert allowed.returncode == 0 and allowed.stdout.startswith("ALLOWED: ")
    assert "right 1" in allowed.stdout
    trick = node.run("acl", "check", CONSUMER, SERVICE, "--path", "/people/42/../../admin",
                     "--json")
    assert trick.returncode == 1
    decision = json.loads(trick.stdout)
    assert decision["allowed"] is False and "dot segment" in decision["reason"]
    other = node.run("acl", "check", CONSUMER, SERVICE, "--method", "POST", "--path",
                     "/people/42")
    assert other.returncode == 1 and other.stdout.startswith("DENIED: ")

    services = node.json("acl", "services", "list")
    assert services == [{"id": SERVICE, "backend_url": "http://127.0.0.1:9000/",
                         "timeout": 7.0, "requires_consent": False, "log_body": "digest"}]
    shown = node.json("acl", "services", "show", SERVICE)
    assert [e["path"] for e in shown["endpoints"]] == ["/people/*"]
    plain = node.ok("acl", "rights", "list")  # not a terminal: plain columns
    assert plain.splitlines()[0].split()[:3] == ["ID", "KIND", "SUBJECT"]
    assert CONSUMER in plain

    events = node.json("acl", "events")
    assert [e["action"] for e in events][-1] == "right.grant"
    assert {e["actor"] for e in events} == {"tester"}

    assert node.json("acl", "rights", "show", "1")["path"] == "/people/*"
    node.ok("acl", "rights", "remove", "1")
    gone = node.run("acl", "check", CONSUMER, SERVICE, "--path", "/people/42")
    assert gone.returncode == 1 and "has no access right" in gone.stdout


def test_errors_and_exit_codes(node: Node) -> None:
    setup_registry(node)
    unknown = node.run("acl", "grant", CONSUMER, f"{PROVIDER}/nosuch")
    assert unknown.returncode == 1
    assert "nosuch is not registered" in unknown.stderr and SERVICE in unknown.stderr
    unknown_check = node.run("acl", "check", CONSUMER, f"{PROVIDER}/nosuch")
    assert unknown_check.returncode == 1 and unknown_check.stdout.startswith("DENIED: ")
    assert f"registered services: {SERVICE}" in unknown_check.stderr
    half = node.run("acl", "grant", CONSUMER, SERVICE, "--method", "GET")
    assert half.returncode == 2 and "--method and --path go together" in half.stderr
    malformed = node.run("acl", "grant", CONSUMER, "JP-DEV/GOV")
    assert malformed.returncode == 2 and "has 2 parts" in malformed.stderr
    usage = node.run("acl", "frobnicate")
    assert usage.returncode == 2
    duplicate = node.run("acl", "members", "add", "JP-DEV/COM/OTTA")
    assert duplicate.returncode == 1 and "already registered" in duplicate.stderr
    busy = node.run("acl", "subsystems", "remove", PROVIDER)
    assert busy.returncode == 1 and "still has 1 service(s)" in busy.stderr
    helped = subprocess.run([sys.executable, "-m", "secserver", "acl", "--help"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert "Exit codes:" in helped.stdout and "2  usage error" in helped.stdout


def test_consents(node: Node) -> None:
    setup_registry(node)
    node.ok("acl", "services", "set", SERVICE, "--requires-consent")
    node.ok("acl", "grant", CONSUMER, SERVICE)
    missing = node.run("acl", "check", CONSUMER, SERVICE, "--subject", "citizen-7")
    assert missing.returncode == 1 and "consent missing" in missing.stdout
    made = json.loads(node.ok("consent", "record", "-", CONSUMER, SERVICE, "--purpose",
                              "care planning", "--days", "30", "--json",
                              stdin="citizen-7\n"))
    assert "citizen-7" not in json.dumps(made) and len(made["subject_hash"]) == 64
    assert node.run("acl", "check", CONSUMER, SERVICE, "--subject", "citizen-7").returncode == 0
    listed = node.json("consent", "list", "--subject", "citizen-7", "--active")
    assert [c["id"] for c in listed] == [made["id"]]
    node.ok("consent", "revoke", str(made["id"]))
    revoked = node.run("acl", "check", CONSUMER, SERVICE, "--subject", "citizen-7")
    assert revoked.returncode == 1 and "revoked" in revoked.stdout
    assert node.json("consent", "list", "--active") == []
    again = node.run("consent", "revoke", str(made["id"]))
    assert again.returncode == 1 and "already revoked" in again.stderr
    database = node.config.parent / "data" / "secserver.db"
    assert b"citizen-7" not in database.read_bytes()


def test_export_import_round_trip(node: Node, tmp_path: Path) -> None:
    setup_registry(node)
    node.ok("acl", "groups", "add", "partners", "--description", "trusted")
    node.ok("acl", "groups", "add-member", "partners", CONSUMER)
    node.ok("acl", "grant", "partners", SERVICE, "--method", "GET", "--path", "/people/*")
    node.ok("acl", "grant", "JP-DEV/COM/OTTA", SERVICE)
    exported = node.ok("acl", "export")
    assert 'format = "secserver-registry/1"' in exported
    (tmp_path / "registry.toml").write_text(exported)
    as_json = json.loads(node.ok("acl", "export", "--format", "json"))

    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = Node(write_config(fresh_dir))
    summary = json.loads(fresh.ok("acl", "import", str(tmp_path / "registry.toml"), "--json"))
    assert summary["added"] > 0 and summary["unchanged"] == 0
    assert json.loads(fresh.ok("acl", "export", "--format", "json")) == as_json
    again = fresh.json("acl", "import", str(tmp_path / "registry.toml"))
    assert again["added"] == 0
    decided = fresh.run("acl", "check", CONSUMER, SERVICE, "--path", "/people/1")
    assert decided.returncode == 0 and "JP-DEV/COM/OTTA" in decided.stdout

    # Drift on the fresh node, then put it back with --replace (previewed first).
    fresh.ok("acl", "revoke", "JP-DEV/COM/OTTA", SERVICE)
    fresh.ok("acl", "members", "add", "JP-DEV/COM/EXTRA")
    preview = fresh.ok("acl", "import", str(tmp_path / "registry.toml"), "--replace",
                       "--dry-run")
    assert "  right.grant JP-DEV/COM/OTTA -> " in preview
    assert "  member.remove JP-DEV/COM/EXTRA" in preview
    assert "dry run: nothing changed" in preview
    fresh.ok("acl", "import", "-", "--replace", stdin=exported)
    assert json.loads(fresh.ok("acl", "export", "--format", "json"))["members"] == \
        as_json["members"]


@pytest.mark.postgres
def test_cli_on_postgresql(tmp_path: Path, postgres_server: str) -> None:
    node = Node(write_config(tmp_path, create_database(postgres_server)))
    setup_registry(node)
    node.ok("acl", "grant", CONSUMER, SERVICE)
    assert node.run("acl", "check", CONSUMER, SERVICE, "--path", "/x").returncode == 0
    assert [s["id"] for s in node.json("acl", "subsystems", "list", "--local")] == [PROVIDER]
