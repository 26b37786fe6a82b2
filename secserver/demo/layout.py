"""The demo's files: development PKI, node secrets, two node configurations, the directory.

Everything lives under one directory, with the same layout and keys as ``conf/``::

    DIR/consumer.toml        TOYONO's security server SS1 (calls OTTA, serves resident-registry)
    DIR/provider.toml        OTTA's security server SS1 (serves tag-locations)
    DIR/directory.toml       members, their servers (address, TLS certificate), trusted CA
    DIR/pki/                 ``secserver pki init-dev`` layout
    DIR/secrets/*.key        each node's data-subject hashing key (mode 0600)
    DIR/data/{toyono,otta}/  each node's SQLite database
    DIR/logs/*.log           output of every process the demo starts

The TOML texts are built by pure functions from :class:`Ports`; only :func:`write_layout`
touches the disk.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, fields
from pathlib import Path

from secserver.identifiers import ClientId, ServerId, ServiceId

TOYONO = ClientId("JP-DEV", "GOV", "TOYONO")
OTTA = ClientId("JP-DEV", "COM", "OTTA")
TOYONO_ELDERCARE = ClientId("JP-DEV", "GOV", "TOYONO", "ELDERCARE")
OTTA_TAGS = ClientId("JP-DEV", "COM", "OTTA", "TAGS")
TOYONO_SS1 = ServerId(TOYONO, "SS1")
OTTA_SS1 = ServerId(OTTA, "SS1")
TAG_LOCATIONS = ServiceId(OTTA_TAGS, "tag-locations")
RESIDENT_REGISTRY = ServiceId(TOYONO_ELDERCARE, "resident-registry")
HOST = "127.0.0.1"
#: How often the demo nodes re-read their registry (seconds): a recorded consent takes
#: effect within this time.
ACL_REFRESH_INTERVAL = 0.2


@dataclass(frozen=True)
class Ports:
    """Every port the demo listens on, all on 127.0.0.1."""

    toyono_client: int
    toyono_server: int
    toyono_admin: int
    otta_client: int
    otta_server: int
    otta_admin: int
    tsa: int
    tag_locations: int
    resident_registry: int

    @classmethod
    def free(cls) -> Ports:
        """Ports the kernel reports free right now (all held open together, so distinct)."""
        held: list[socket.socket] = []
        try:
            for _ in fields(cls):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((HOST, 0))
                held.append(sock)
            return cls(*(s.getsockname()[1] for s in held))
        finally:
            for sock in held:
                sock.close()


@dataclass(frozen=True)
class NodeFiles:
    """What differs between the two demo nodes."""

    role: str  # "consumer" or "provider": the configuration file name
    server: ServerId
    data_name: str  # folder under data/ and secret file name
    client_port: int
    server_port: int
    admin_port: int

    @property
    def pki_member(self) -> str:
        return f"{self.server.owner.member_class}.{self.server.owner.member_code}"

    @property
    def pki_server(self) -> str:
        return f"{self.pki_member}.{self.server.code}"


@dataclass(frozen=True)
class Layout:
    """Paths of one demo directory."""

    root: Path
    ports: Ports

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def consumer_config(self) -> Path:
        return self.root / "consumer.toml"

    @property
    def provider_config(self) -> Path:
        return self.root / "provider.toml"

    @property
    def directory_file(self) -> Path:
        return self.root / "directory.toml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def toyono(self) -> NodeFiles:
        p = self.ports
        return NodeFiles("consumer", TOYONO_SS1, "toyono", p.toyono_client, p.toyono_server,
                         p.toyono_admin)

    @property
    def otta(self) -> NodeFiles:
        p = self.ports
        return NodeFiles("provider", OTTA_SS1, "otta", p.otta_client, p.otta_server,
                         p.otta_admin)

    def config_path(self, node: NodeFiles) -> Path:
        return self.root / f"{node.role}.toml"

    def secret_path(self, node: NodeFiles) -> Path:
        return self.root / "secrets" / f"{node.data_name}-subject.key"

    @property
    def tsa_url(self) -> str:
        return f"http://{HOST}:{self.ports.tsa}/"

    @property
    def tag_locations_url(self) -> str:
        return f"http://{HOST}:{self.ports.tag_locations}/"

    @property
    def resident_registry_url(self) -> str:
        return f"http://{HOST}:{self.ports.resident_registry}/"


def node_config_text(node: NodeFiles, tsa_url: str) -> str:
    """A node configuration with the keys of ``conf/consumer.toml``; paths relative."""
    return f"""\
# secserver demo: {node.server}'s security server ({node.role} side in the demo).
# Paths are relative to this file. Made by `secserver demo`; every secserver command
# accepts it, e.g. `secserver config check --config {node.role}.toml`.
[node]
server_id = "{node.server}"
data_dir = "data/{node.data_name}"

[database]
# Empty: SQLite file data_dir/secserver.db.
auto_upgrade = true

[client]
host = "{HOST}"
port = {node.client_port}

[server]
host = "{HOST}"
port = {node.server_port}
cert_file = "pki/servers/{node.pki_server}/tls.crt"
key_file = "pki/servers/{node.pki_server}/tls.key"

[admin]
host = "{HOST}"
port = {node.admin_port}

[trust]
ca_files = ["pki/ca/ca.crt"]

[signing]
cert_file = "pki/members/{node.pki_member}/sign.crt"
key_file = "pki/members/{node.pki_member}/sign.key"
batch = "auto"

[log]
cert_file = "pki/servers/{node.pki_server}/log.crt"
key_file = "pki/servers/{node.pki_server}/log.key"
checkpoint_interval = 1.0
checkpoint_records = 1000

[tsa]
url = "{tsa_url}"
grace_period = 3600

[directory]
file = "directory.toml"

[acl]
subject_key_file = "secrets/{node.data_name}-subject.key"
refresh_interval = {ACL_REFRESH_INTERVAL}
"""


def directory_text(nodes: tuple[NodeFiles, ...]) -> str:
    """The member directory file (format: ``secserver/routing/directory.py``)."""
    names = {TOYONO: "Toyono Town", OTTA: "Otta Watch Tags Inc."}
    parts = ["# secserver demo: the member directory every node trusts.\n",
             '[trust]\nca_files = ["pki/ca/ca.crt"]\n']
    for node in nodes:
        owner = node.server.owner
        parts.append(f'\n[[members]]\nid = "{owner}"\nname = "{names.get(owner, "")}"\n')
    for node in nodes:
        parts.append(f'\n[[servers]]\nid = "{node.server}"\n'
                     f'address = "{HOST}:{node.server_port}"\n'
                     f'tls_cert_file = "pki/servers/{node.pki_server}/tls.crt"\n')
    return "".join(parts)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_layout(root: Path, ports: Ports) -> Layout:
    """Create the PKI, the secrets, both node configurations and the directory file."""
    from secserver.signing.pki import init_dev_pki

    layout = Layout(root, ports)
    root.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(exist_ok=True)
    init_dev_pki(layout.pki, force=True)
    nodes = (layout.toyono, layout.otta)
    for node in nodes:
        _write_private(layout.secret_path(node), secrets.token_hex(32).encode("ascii") + b"\n")
        layout.config_path(node).write_text(node_config_text(node, layout.tsa_url),
                                            encoding="utf-8")
    layout.directory_file.write_text(directory_text(nodes), encoding="utf-8")
    return layout
