"""Helpers for the log tests (unit and integration): a development PKI, a node
configuration over it, a log written by a real writer, SQL reads, the CLI as a process.

The ``pki`` fixture is imported under its function name (``pki_fixture``), so a test's
``pki`` argument does not shadow the import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from secserver.config import NodeConfig, load_config
from secserver.db.engine import make_engine
from secserver.signing.pki import init_dev_pki

NODE = "JP-DEV/GOV/TOYONO/SS1"
NODE_DIR = "GOV.TOYONO.SS1"


def write_node_config(directory: Path, database_url: str, pki: Path, *, node: str = NODE,
                      node_dir: str = NODE_DIR, tsa_url: str = "", grace_period: float = 3600,
                      checkpoint_interval: float = 1.0, checkpoint_records: int = 1000,
                      group_commit_max: int = 256, body_key_file: Path | None = None) -> Path:
    """Write ``directory/node.toml`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    body_key = f'body_key_file = "{body_key_file}"\n' if body_key_file else ""
    text = f"""
[node]
server_id = "{node}"
data_dir = "{directory / 'data'}"

[database]
url = "{database_url}"

[trust]
ca_files = ["{pki / 'ca/ca.crt'}"]

[log]
cert_file = "{pki / 'servers' / node_dir / 'log.crt'}"
key_file = "{pki / 'servers' / node_dir / 'log.key'}"
checkpoint_interval = {checkpoint_interval}
checkpoint_records = {checkpoint_records}
group_commit_max = {group_commit_max}
{body_key}
[tsa]
url = "{tsa_url}"
timeout = 2.0
grace_period = {grace_period}
"""
    path = directory / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of a development PKI (``secserver pki init-dev`` layout)."""
    return init_dev_pki(tmp_path_factory.mktemp("pki")).directory


def node_config(directory: Path, database_url: str, pki: Path, **options: object) -> NodeConfig:
    return load_config(write_node_config(directory, database_url, pki, **options))  # type: ignore[arg-type]


def logged_node(directory: Path, database_url: str, pki: Path, *, exchanges: int,
                policy: str = "store", **options: object) -> NodeConfig:
    """A node configuration (``options`` as ``write_node_config``) whose log holds
    ``exchanges`` request/response pairs, written by a started and stopped writer."""
    config = node_config(directory, database_url, pki, **options)
    asyncio.run(write_sample_log(config, pki, exchanges=exchanges, policy=policy))
    return config


def logged_node_fixture(*, exchanges: int, **options: Any) -> Any:
    """A function-scoped fixture (assign it to ``config`` in a test module) giving
    ``logged_node(tmp_path / "node", migrated_url, pki, exchanges=..., **options)``."""

    @pytest.fixture
    def config(migrated_url: str, tmp_path: Path, pki: Path) -> NodeConfig:
        return logged_node(tmp_path / "node", migrated_url, pki, exchanges=exchanges,
                           **options)

    return config


def db_rows(url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """Run one SQL statement (committed) and return its rows."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` every 20 ms; fail the test when ``timeout`` passes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def run_secserver(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m secserver ARGS`` as a process; output captured as text."""
    return subprocess.run([sys.executable, "-m", "secserver", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


CLIENT = "JP-DEV/GOV/TOYONO/ELDERCARE"
SERVICE = "JP-DEV/COM/OTTA/TAGS/locations/v1"


class MemberSigners:
    """Signs signed documents as TOYONO (requests) and OTTA (responses), plain CMS."""

    def __init__(self, pki: Path) -> None:
        from secserver.signing.cms import CmsSigner
        from secserver.signing.keys import load_certificate, load_private_key

        def signer(folder: str) -> CmsSigner:
            base = pki / "members" / folder
            return CmsSigner(load_private_key(base / "sign.key"),
                             load_certificate(base / "sign.crt"))

        self.client = signer("GOV.TOYONO")
        self.provider = signer("COM.OTTA")

    def sign(self, direction: str, document: bytes) -> bytes:
        from datetime import UTC, datetime

        signer = self.client if direction == "request" else self.provider
        return signer.sign(document, signing_time=datetime.now(UTC))


def sample_message(signers: MemberSigners, number: int, direction: str = "request", *,
                   policy: str = "store", status: int | None = 200,
                   error_code: str | None = None) -> Any:
    from datetime import UTC, datetime

    from secserver.audit.records import MessageRecord

    body = f'{{"tag": {number}, "lat": 34.78, "lon": 135.47}}'.encode()
    document = (f"version: 1\nmessage-id: m-{number}\ndirection: {direction}\n"
                f"client: {CLIENT}\nservice: {SERVICE}\n").encode()
    return MessageRecord(
        message_id=f"m-{number}", direction=direction,  # type: ignore[arg-type]
        side="consumer", client=CLIENT, service=SERVICE, method="GET",
        path=f"/tags/{number}", body_size=len(body), body_digest="sha512-of-body",
        at=datetime.now(UTC), status=status, error_code=error_code, body=body,
        body_policy=policy,  # type: ignore[arg-type]
        signed_document=document, signature=signers.sign(direction, document),
        peer="JP-DEV/COM/OTTA/SS1", duration_ms=1.5)


async def write_sample_log(config: NodeConfig, pki: Path, exchanges: int = 10,
                           policy: str = "store", **writer_options: Any) -> None:
    """Start a writer, log ``exchanges`` request/response pairs concurrently, stop."""
    from secserver.audit.writer import LogWriter

    signers = MemberSigners(pki)
    writer = LogWriter(config, **writer_options)
    await writer.start()
    try:
        for number in range(exchanges):
            await asyncio.gather(
                writer.append(sample_message(signers, number, "request", policy=policy)),
                writer.append(sample_message(signers, number, "response", policy=policy)))
    finally:
        await writer.stop()
