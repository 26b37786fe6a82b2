"""The demo's files: configurations every command accepts, a directory that loads."""

from __future__ import annotations

import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from secserver.config import load_config, read_secret
from secserver.demo.layout import OTTA_SS1, TOYONO_SS1, Ports, write_layout
from secserver.demo.run import DemoError, prepare_directory
from secserver.routing.directory import load_directory


def test_free_ports_are_distinct() -> None:
    ports = Ports.free()
    values = [getattr(ports, name) for name in ports.__dataclass_fields__]
    assert len(set(values)) == len(values) == 9
    assert all(0 < v < 65536 for v in values)


@pytest.fixture(scope="module")
def layout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    write_layout(root, Ports(*range(20001, 20010)))
    return root


def test_both_configurations_load_with_the_keys_of_conf(layout_dir: Path) -> None:
    consumer = load_config(layout_dir / "consumer.toml", env={})
    provider = load_config(layout_dir / "provider.toml", env={})
    assert consumer.server_id == TOYONO_SS1
    assert provider.server_id == OTTA_SS1
    assert (consumer.client.port, consumer.server.port, consumer.admin.port) == (
        20001, 20002, 20003)
    assert (provider.client.port, provider.server.port, provider.admin.port) == (
        20004, 20005, 20006)
    assert consumer.tsa.url == provider.tsa.url == "http://127.0.0.1:20007/"
    assert consumer.database_url == f"sqlite:///{layout_dir / 'data/toyono/secserver.db'}"
    example = Path(__file__).parents[3] / "conf" / "consumer.toml"
    sections = {line.strip() for line in example.read_text().splitlines()
                if line.startswith("[")}
    ours = {line.strip() for line in (layout_dir / "consumer.toml").read_text().splitlines()
            if line.startswith("[")}
    assert ours == sections


def test_each_node_has_its_own_private_subject_key(layout_dir: Path) -> None:
    keys = []
    for name in ("consumer", "provider"):
        config = load_config(layout_dir / f"{name}.toml", env={})
        assert config.acl.subject_key_file is not None
        assert stat.S_IMODE(config.acl.subject_key_file.stat().st_mode) == 0o600
        keys.append(read_secret(config.acl.subject_key_file, "subject_key_file"))
    assert keys[0] != keys[1]
    assert all(key is not None and len(key) == 64 for key in keys)


def test_directory_lists_both_servers_with_their_tls_certificates(layout_dir: Path) -> None:
    directory = load_directory(layout_dir / "directory.toml")
    assert set(directory.servers) == {TOYONO_SS1, OTTA_SS1}
    assert directory.servers[TOYONO_SS1].address == "127.0.0.1:20002"
    assert directory.servers[OTTA_SS1].address == "127.0.0.1:20005"
    assert len(directory.ca_certificates) == 1


def test_prepare_directory_replaces_a_previous_demo_but_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "consumer.toml").write_text("old")
    prepare_directory(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match=r"thesis\.tex"):
        prepare_directory(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_prepare_directory_refuses_while_a_previous_demo_still_runs(tmp_path: Path) -> None:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, name="fake-node-admin")
    thread.start()
    try:
        (tmp_path / "provider.toml").write_text(
            f"[admin]\nport = {server.server_address[1]}\n")
        with pytest.raises(DemoError, match="still running"):
            prepare_directory(tmp_path)
        assert (tmp_path / "provider.toml").exists()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    prepare_directory(tmp_path)  # nothing answers any more: replaced
    assert not (tmp_path / "provider.toml").exists()
