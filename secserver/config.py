"""Node configuration: one TOML file plus ``SECSERVER_<SECTION>_<KEY>`` overrides.

Every problem is collected, so ``secserver config check`` can report them all at once;
each names the file, the key and what was expected. Relative paths are resolved against
the directory of the configuration file. Secrets are never inline: they are read from
files named by ``*_file`` keys.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from secserver.errors import ConfigError, InvalidIdentifier
from secserver.identifiers import ServerId

ENV_PREFIX = "SECSERVER_"


@dataclass(frozen=True)
class NodeSection:
    server_id: str = ""
    data_dir: Path = Path("data")


@dataclass(frozen=True)
class DatabaseSection:
    url: str = ""  # empty: SQLite file ``secserver.db`` in the data directory
    auto_upgrade: bool = True


@dataclass(frozen=True)
class ClientListenerSection:
    """Where local information systems connect (HTTP, or HTTPS with client certificates)."""

    host: str = "127.0.0.1"
    port: int = 8080
    tls: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class ServerListenerSection:
    """Where other security servers connect: mutual TLS only."""

    host: str = "127.0.0.1"
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    key_passphrase_file: Path | None = None


@dataclass(frozen=True)
class AdminListenerSection:
    host: str = "127.0.0.1"
    port: int = 8081


@dataclass(frozen=True)
class TrustSection:
    ca_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class SigningSection:
    """The member signing key of the member that owns this node."""

    cert_file: Path | None = None
    key_file: Path | None = None
    key_passphrase_file: Path | None = None
    batch: Literal["auto", "off"] = "auto"


@dataclass(frozen=True)
class LogSection:
    """The message log: the node's log key, checkpoints and body policy."""

    cert_file: Path | None = None
    key_file: Path | None = None
    key_passphrase_file: Path | None = None
    checkpoint_interval: float = 1.0
    checkpoint_records: int = 1000
    group_commit_max: int = 256
    body_key_file: Path | None = None


@dataclass(frozen=True)
class TsaSection:
    url: str = ""
    timeout: float = 10.0
    grace_period: float = 3600.0


@dataclass(frozen=True)
class DirectorySection:
    file: Path | None = None


@dataclass(frozen=True)
class AclSection:
    subject_key_file: Path | None = None
    refresh_interval: float = 0.5  # seconds between registry_version polls (one cheap SELECT)


@dataclass(frozen=True)
class LimitsSection:
    max_message_bytes: int = 64 * 1024 * 1024
    spool_threshold_bytes: int = 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_header_count: int = 100
    max_header_bytes: int = 8190
    xml_max_depth: int = 64
    xml_max_elements: int = 10000
    backend_timeout: float = 30.0
    # SOAP envelopes are parsed whole (lxml): a much smaller cap than for streamed bodies
    # (the smaller of this and max_message_bytes applies)
    max_soap_bytes: int = 4 * 1024 * 1024
    # open connections per listener (TLS handshakes included); more are closed at once
    max_connections: int = 500


@dataclass(frozen=True)
class LoggingSection:
    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    node: NodeSection = field(default_factory=NodeSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    client: ClientListenerSection = field(default_factory=ClientListenerSection)
    server: ServerListenerSection = field(default_factory=ServerListenerSection)
    admin: AdminListenerSection = field(default_factory=AdminListenerSection)
    trust: TrustSection = field(default_factory=TrustSection)
    signing: SigningSection = field(default_factory=SigningSection)
    log: LogSection = field(default_factory=LogSection)
    tsa: TsaSection = field(default_factory=TsaSection)
    directory: DirectorySection = field(default_factory=DirectorySection)
    acl: AclSection = field(default_factory=AclSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    @property
    def server_id(self) -> ServerId:
        return ServerId.parse(self.node.server_id)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL (synchronous driver form); SQLite in the data dir by default."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.node.data_dir / 'secserver.db'}"


SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(NodeConfig)[f.name]
    for f in dataclasses.fields(NodeConfig)
    if f.name != "path"
}


def read_secret(path: Path | None, key: str) -> bytes | None:
    """Read a secret from a file named by a ``*_file`` key; ``None`` when unset."""
    if path is None:
        return None
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError([f"{key}: cannot read {path}: {exc.strerror}"]) from exc


def _convert(value: Any, hint: Any, where: str, base_dir: Path, problems: list[str]) -> Any:
    origin = get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(value, options[0], where, base_dir, problems)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            problems.append(f"{where}: expected one of {', '.join(map(repr, allowed))}, "
                            f"got {value!r}")
            return allowed[0]
        return value
    if origin is tuple:
        item_hint = get_args(hint)[0]
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return ()
        return tuple(_convert(v, item_hint, f"{where}[{i}]", base_dir, problems)
                     for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true or false, got {value!r}")
            return False
        return value
    if hint is int or hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = hint(value)
        except (TypeError, ValueError):
            problems.append(f"{where}: expected a {'whole ' if hint is int else ''}number, "
                            f"got {value!r}")
            return hint(0)
        if number < 0:
            problems.append(f"{where}: must not be negative, got {value!r}")
        return number
    if hint is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{where}: expected a file path, got {value!r}")
            return Path()
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base_dir / path)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected text, got {value!r}")
            return ""
        return value
    raise TypeError(f"unsupported config type {hint!r}")  # programming error


def _build_section(name: str, cls: type[Any], raw: Mapping[str, Any], env: Mapping[str, str],
                   source: str, base_dir: Path, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            problems.append(f"{source}: [{name}] {key}: unknown key; known keys are "
                            f"{', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env_name = f"{ENV_PREFIX}{name}_{f.name}".upper()
        before = len(problems)
        if env_name in env:
            value = _convert(env[env_name], hints[f.name], env_name, Path.cwd(), problems)
        elif f.name in raw:
            value = _convert(raw[f.name], hints[f.name], f"{source}: [{name}] {f.name}",
                             base_dir, problems)
        else:
            continue
        if len(problems) == before:  # an invalid value keeps the default: one report only
            values[f.name] = value
    return cls(**values)


def _validate(config: NodeConfig, source: str, problems: list[str]) -> None:
    try:
        ServerId.parse(config.node.server_id)
    except InvalidIdentifier as exc:
        problems.append(f"{source}: [node] server_id: {exc.message}")
    for name in ("client", "server", "admin"):
        section = getattr(config, name)
        if not 0 < section.port < 65536:
            problems.append(f"{source}: [{name}] port: expected 1-65535, got {section.port}")
    try:
        if not ipaddress.ip_address(config.admin.host).is_loopback:
            problems.append(f"{source}: [admin] host: the admin port listens on loopback only, "
                            f"got {config.admin.host}")
    except ValueError:
        problems.append(f"{source}: [admin] host: expected a loopback IP address, "
                        f"got {config.admin.host!r}")
    if config.client.tls and (config.client.cert_file is None or config.client.key_file is None):
        problems.append(f"{source}: [client] tls = true needs cert_file and key_file")
    if config.log.checkpoint_interval <= 0 or config.log.checkpoint_records <= 0:
        problems.append(f"{source}: [log] checkpoint_interval and checkpoint_records must be "
                        "greater than zero")
    limits = config.limits
    if limits.max_connections < 1:
        problems.append(f"{source}: [limits] max_connections: must be at least 1, "
                        f"got {limits.max_connections}")
    if limits.max_soap_bytes < 1:
        problems.append(f"{source}: [limits] max_soap_bytes: must be at least 1, "
                        f"got {limits.max_soap_bytes}")
    if config.database.url and not config.database.url.startswith(("sqlite", "postgresql")):
        problems.append(f"{source}: [database] url: expected a sqlite:/// or postgresql:// URL")
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            paths = value if isinstance(value, tuple) else (value,)
            for path in paths:
                if isinstance(path, Path) and f.name.endswith(("_file", "_files")) \
                        and not path.is_file():
                    problems.append(f"{source}: [{section_name}] {f.name}: file {path} "
                                    "does not exist")


def read_toml(path: Path, source: str, what: str = "file") -> dict[str, Any]:
    """A TOML file's contents, or ConfigError naming ``source`` (missing, unreadable,
    not TOML)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError([f"{source}: {what} not found"]) from exc
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from exc


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Load and validate a node configuration, or raise ConfigError with every problem."""
    path = Path(path)
    env = os.environ if env is None else env
    source = str(path)
    raw = read_toml(path, source, "configuration file")
    problems: list[str] = []
    base_dir = path.resolve().parent
    for key, value in raw.items():
        if key not in SECTIONS:
            problems.append(f"{source}: [{key}]: unknown section; known sections are "
                            f"{', '.join(SECTIONS)}")
        elif not isinstance(value, dict):
            problems.append(f"{source}: {key}: expected a [{key}] table")
    sections = {
        name: _build_section(name, cls, raw.get(name, {}) if isinstance(raw.get(name), dict)
                             else {}, env, source, base_dir, problems)
        for name, cls in SECTIONS.items()
    }
    node = sections["node"]
    if not node.data_dir.is_absolute():
        sections["node"] = dataclasses.replace(node, data_dir=base_dir / node.data_dir)
    config = NodeConfig(path=path.resolve(), **sections)
    _validate(config, source, problems)
    if problems:
        raise ConfigError(problems)
    return config
