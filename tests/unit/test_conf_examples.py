"""The example configurations in conf/ work once the README's quickstart steps ran."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from secserver.config import load_config
from secserver.routing.directory import load_directory
from secserver.signing.pki import init_dev_pki

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_example_configurations_load(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("pki", "secrets", "data"))
    init_dev_pki(conf / "pki")
    (conf / "secrets").mkdir()
    for node in ("toyono", "otta"):
        (conf / "secrets" / f"{node}-subject.key").write_text(secrets.token_hex(32))
    consumer = load_config(conf / "consumer.toml", env={})
    provider = load_config(conf / "provider.toml", env={})
    assert str(consumer.server_id) == "JP-DEV/GOV/TOYONO/SS1"
    assert str(provider.server_id) == "JP-DEV/COM/OTTA/SS1"
    assert consumer.directory.file == provider.directory.file == conf / "directory.toml"
    directory = load_directory(conf / "directory.toml")
    for config in (consumer, provider):
        entry = directory.server(config.server_id)
        assert entry is not None
        assert entry.port == config.server.port
