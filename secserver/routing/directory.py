"""The member directory: members, their security servers, and the trusted CAs.

For now the directory is a TOML file named by ``[directory] file`` in the node
configuration (a signed, distributed directory comes later)::

    [trust]
    ca_files = ["pki/ca/ca.crt"]          # and/or ca_pems = ["-----BEGIN ..."]

    [[members]]
    id = "JP-DEV/GOV/TOYONO"
    name = "Toyono Town"                   # optional

    [[servers]]
    id = "JP-DEV/GOV/TOYONO/SS1"
    address = "127.0.0.1:8443"             # host:port of its server port
    tls_cert_file = "pki/servers/GOV.TOYONO.SS1/tls.crt"   # or tls_cert_pem = "..."
    members = ["JP-DEV/GOV/TOYONO"]        # optional; default: the server's owner

Relative paths resolve against the directory file's folder. Loading collects every
problem and raises ``ConfigError`` naming the file and key. The lookups are pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from secserver.config import read_toml
from secserver.errors import ConfigError, InvalidIdentifier
from secserver.identifiers import ClientId, ServerId


def certificate_sha256(certificate: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class MemberEntry:
    member_id: ClientId
    name: str = ""


@dataclass(frozen=True)
class ServerEntry:
    server_id: ServerId
    host: str
    port: int
    tls_certificate: x509.Certificate = field(compare=False, repr=False)
    tls_cert_sha256: str
    members: tuple[ClientId, ...]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Directory:
    members: Mapping[ClientId, MemberEntry]
    servers: Mapping[ServerId, ServerEntry]
    ca_certificates: tuple[x509.Certificate, ...] = field(repr=False)
    # indexes of ``servers`` for the per-call lookups (made once; the directory is frozen)
    _by_member: dict[ClientId, tuple[ServerEntry, ...]] = field(
        init=False, repr=False, compare=False)
    _by_cert: dict[str, ServerEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_member: dict[ClientId, list[ServerEntry]] = {}
        by_cert: dict[str, ServerEntry] = {}
        for entry in self.servers.values():
            for member in dict.fromkeys(entry.members):
                by_member.setdefault(member, []).append(entry)
            by_cert.setdefault(entry.tls_cert_sha256, entry)  # the first in file order
        object.__setattr__(self, "_by_member",
                           {member: tuple(entries) for member, entries in by_member.items()})
        object.__setattr__(self, "_by_cert", by_cert)

    def member(self, member_id: ClientId) -> MemberEntry | None:
        return self.members.get(member_id.member)

    def servers_for(self, client: ClientId) -> tuple[ServerEntry, ...]:
        """The security servers that serve ``client``'s member, in file order."""
        return self._by_member.get(client.member, ())

    def server(self, server_id: ServerId) -> ServerEntry | None:
        return self.servers.get(server_id)

    def server_by_cert_sha256(self, fingerprint: str) -> ServerEntry | None:
        """The first server (in file order) whose TLS certificate has this SHA-256."""
        return self._by_cert.get(fingerprint.lower())


def _parse_address(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return host, int(port)


def _load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    certificates = x509.load_pem_x509_certificates(data)
    if not certificates:
        raise ValueError("no PEM certificate found")
    return certificates


def _certificate(raw: Mapping[str, Any], where: str, base: Path,
                 problems: list[str]) -> x509.Certificate | None:
    pem = raw.get("tls_cert_pem")
    file = raw.get("tls_cert_file")
    if (pem is None) == (file is None):
        problems.append(f"{where}: give exactly one of tls_cert_file and tls_cert_pem")
        return None
    try:
        if pem is not None:
            if not isinstance(pem, str):
                raise ValueError("tls_cert_pem must be text")
            return _load_pem_certificates(pem.encode("ascii"))[0]
        if not isinstance(file, str) or not file:
            raise ValueError("tls_cert_file must be a path")
        path = Path(file) if Path(file).is_absolute() else base / file
        return _load_pem_certificates(path.read_bytes())[0]
    except OSError as exc:
        problems.append(f"{where} tls_cert_file: cannot read {file}: {exc.strerror}")
    except ValueError as exc:
        key = "tls_cert_pem" if pem is not None else "tls_cert_file"
        problems.append(f"{where} {key}: not a PEM certificate ({exc})")
    return None


def _client_id(text: Any, where: str, problems: list[str]) -> ClientId | None:
    if not isinstance(text, str):
        problems.append(f"{where}: expected a member id as text, got {text!r}")
        return None
    try:
        member = ClientId.parse(text)
    except InvalidIdentifier as exc:
        problems.append(f"{where}: {exc.message}")
        return None
    if member.is_subsystem:
        problems.append(f"{where}: {text!r} is a subsystem; expected a member id")
        return None
    return member


def _tables(raw: Mapping[str, Any], key: str, source: str,
            problems: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, table)`` for each table of the array of tables ``[[key]]``; anything
    else there is a problem."""
    items = raw.get(key, [])
    if not isinstance(items, list):
        problems.append(f"{source}: {key}: expected [[{key}]] tables")
        return
    for i, item in enumerate(items):
        where = f"{source}: {key}[{i}]"
        if isinstance(item, dict):
            yield where, item
        else:
            problems.append(f"{where}: expected a table")


def parse_directory(raw: Mapping[str, Any], source: str, base: Path) -> Directory:
    """Build a Directory from parsed TOML, or raise ConfigError listing every problem."""
    problems: list[str] = []
    for key in raw:
        if key not in ("trust", "members", "servers"):
            problems.append(f"{source}: {key}: unknown key; expected trust, members, servers")
    cas: list[x509.Certificate] = []
    trust = raw.get("trust", {})
    if not isinstance(trust, dict):
        problems.append(f"{source}: trust: expected a [trust] table")
        trust = {}
    for i, file in enumerate(trust.get("ca_files", [])):
        path = Path(file) if Path(str(file)).is_absolute() else base / str(file)
        try:
            cas.extend(_load_pem_certificates(path.read_bytes()))
        except OSError as exc:
            problems.append(f"{source}: [trust] ca_files[{i}]: cannot read {path}: "
                            f"{exc.strerror}")
        except ValueError as exc:
            problems.append(f"{source}: [trust] ca_files[{i}]: not a PEM certificate ({exc})")
    for i, pem in enumerate(trust.get("ca_pems", [])):
        try:
            cas.extend(_load_pem_certificates(str(pem).encode("ascii")))
        except ValueError as exc:
            problems.append(f"{source}: [trust] ca_pems[{i}]: not a PEM certificate ({exc})")
    if not cas:
        problems.append(f"{source}: [trust]: no trusted CA certificate (ca_files or ca_pems)")

    members: dict[ClientId, MemberEntry] = {}
    for where, item in _tables(raw, "members", source, problems):
        member = _client_id(item.get("id"), f"{where} id", problems)
        if member is None:
            continue
        if member in members:
            problems.append(f"{where} id: member {member} is listed twice")
        members[member] = MemberEntry(member, str(item.get("name", "")))

    servers: dict[ServerId, ServerEntry] = {}
    for where, item in _tables(raw, "servers", source, problems):
        for key in item:
            if key not in ("id", "address", "tls_cert_file", "tls_cert_pem", "members"):
                problems.append(f"{where} {key}: unknown key")
        try:
            server_id = ServerId.parse(str(item.get("id", "")))
        except InvalidIdentifier as exc:
            problems.append(f"{where} id: {exc.message}")
            continue
        try:
            host, port = _parse_address(str(item.get("address", "")))
        except ValueError as exc:
            problems.append(f"{where} address: {exc}")
            continue
        certificate = _certificate(item, where, base, problems)
        served: list[ClientId] = []
        for j, text in enumerate(item.get("members", [str(server_id.owner)])):
            member = _client_id(text, f"{where} members[{j}]", problems)
            if member is None:
                continue
            if member not in members:
                problems.append(f"{where} members[{j}]: {member} is not in [[members]]")
            served.append(member)
        if server_id.owner not in members:
            problems.append(f"{where} id: owner {server_id.owner} is not in [[members]]")
        if server_id in servers:
            problems.append(f"{where} id: server {server_id} is listed twice")
        if certificate is None:
            continue
        servers[server_id] = ServerEntry(server_id, host, port, certificate,
                                         certificate_sha256(certificate), tuple(served))
    fingerprints = [s.tls_cert_sha256 for s in servers.values()]
    if len(set(fingerprints)) != len(fingerprints):
        problems.append(f"{source}: servers: two servers share one TLS certificate")
    if problems:
        raise ConfigError(problems)
    return Directory(members, servers, tuple(cas))


def load_directory(path: Path | str) -> Directory:
    """Load and validate a directory file, or raise ConfigError with every problem."""
    path = Path(path)
    source = f"directory {path}"
    return parse_directory(read_toml(path, source), source, path.resolve().parent)
