"""Helpers for the log tests: a node configuration over a development PKI."""

from __future__ import annotations

from pathlib import Path

from secserver.config import NodeConfig, load_config

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


def node_config(directory: Path, database_url: str, pki: Path, **options: object) -> NodeConfig:
    return load_config(write_node_config(directory, database_url, pki, **options))  # type: ignore[arg-type]
