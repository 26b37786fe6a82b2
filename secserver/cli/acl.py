"""``secserver acl``: the access-rights registry (members, subsystems, services, endpoints,
local groups, rights), decisions, export and import. Also the helpers ``consent`` uses.

Every command has the same shape: parse the arguments (malformed identifiers are usage
errors, exit 2), call one :mod:`secserver.acl.registry` function in a session on the
node's database (:class:`Registry`), print the result (a table or a record, or JSON with
``--json``). Registry errors and database failures print ``error: ...`` and exit 1.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from secserver.acl import registry
from secserver.acl.decision import decide
from secserver.acl.document import dump_json, dump_toml, load_document
from secserver.acl.models import AUTH_MODES, LOG_BODY_POLICIES
from secserver.acl.registry.changes import choices
from secserver.acl.snapshot import load_snapshot
from secserver.cli.options import config_option, fail, handle_errors, load_or_fail, print_json
from secserver.config import NodeConfig, read_secret
from secserver.db import migrate
from secserver.db.engine import make_engine, session_factory
from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId, ServiceId

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
T = TypeVar("T")
Json = dict[str, Any]

EXIT_CODES = """\b
Exit codes:
  0  success (acl check: the request would be allowed)
  1  failure: the message on stderr says why (acl check: denied)
  2  usage error: unknown command or option, malformed identifier, an incomplete
     option pair (--method without --path)
\b
Subjects of rights: a subsystem INSTANCE/CLASS/MEMBER/SUBSYSTEM, a whole member
INSTANCE/CLASS/MEMBER, or a local group code. Services:
INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]. Endpoint paths: '*' matches within
one segment, '**' across segments.
\b
The database is the node's ([database] url, else SQLite in the data directory); it is
upgraded to the newest schema first unless [database] auto_upgrade = false."""


# --- parameter types: malformed ids are usage errors (exit 2) ------------------------------

class IdentifierType(click.ParamType[T]):
    """An identifier parsed by ``parse``; its error message becomes a usage error."""

    def __init__(self, name: str, kind: type[T], parse: Callable[[str], T]) -> None:
        self.name, self.kind, self.parse = name, kind, parse

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> T:
        if isinstance(value, self.kind):
            return value
        try:
            return self.parse(value)
        except InvalidIdentifier as exc:
            self.fail(exc.message, param, ctx)


class TimeType(click.ParamType[datetime]):
    """ISO 8601 time; without a zone it is taken as UTC."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2026-04-01 or "
                      "2026-04-01T09:00:00+09:00)", param, ctx)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


CLIENT = IdentifierType("CLIENT", ClientId, ClientId.parse)
SERVICE = IdentifierType("SERVICE", ServiceId, ServiceId.parse)
TIME = TimeType()

json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
actor_option = click.option(
    "--actor", envvar="SECSERVER_ACTOR", default=None,
    help="Who makes the change, for the admin log (default: the OS user).")


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no USER variable
        return "unknown"


def db_errors(func: F) -> F:
    """SecServerError -> exit 1 (via handle_errors); database failures -> exit 1 too."""
    wrapped = handle_errors(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except SQLAlchemyError as exc:
            fail(f"database error: {type(exc).__name__}: {str(exc).splitlines()[0]}")

    return wrapper  # type: ignore[return-value]


@contextmanager
def open_registry(config_path: Path) -> Iterator[tuple[NodeConfig, Session]]:
    """The node's configuration and a session on its (up-to-date) database."""
    config = load_or_fail(config_path)
    url = config.database_url
    current = migrate.current_revision(url)
    head = migrate.head_revision()
    if current != head:
        if current is not None and not config.database.auto_upgrade:
            fail(f"the database is at schema revision {current}, this secserver needs {head}; "
                 f"run: secserver db upgrade --config {config_path}")
        migrate.upgrade(url)
        click.echo(f"database schema upgraded to {head}", err=True)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            yield config, session
    finally:
        engine.dispose()


def subject_key(config: NodeConfig, *, required: bool = True) -> bytes | None:
    key = read_secret(config.acl.subject_key_file, "[acl] subject_key_file")
    if key is None and required:
        fail(f"{config.path}: [acl] subject_key_file is not set; data subjects are stored "
             "only as keyed hashes, so a node secret is needed (e.g. 32 random bytes: "
             "head -c 32 /dev/urandom | base64 > subject.key)")
    return key


# --- output ---------------------------------------------------------------------------------

class Table(NamedTuple):
    """How a list prints: its title (``no TITLE`` when empty) and (key, heading) columns."""

    title: str
    columns: Sequence[tuple[str, str]]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def print_table(rows: Sequence[Json], columns: Sequence[tuple[str, str]], title: str) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (e.g. in a pipe)."""
    if not rows:
        click.echo(f"no {title}", err=True)
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table as RichTable

        table = RichTable(title=title.capitalize())
        for _, heading in columns:
            table.add_column(heading, overflow="fold")
        for line in cells:
            table.add_row(*line)
        Console().print(table)
        return
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    click.echo("  ".join(h.upper().ljust(w) for (_, h), w in zip(columns, widths, strict=True))
               .rstrip())
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def print_record(record: Json) -> None:
    """``key: value`` lines; lists of records as indented ``- k=v, ...`` lines."""
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  - " + ", ".join(f"{k}={_cell(v)}" for k, v in item.items()))
        else:
            click.echo(f"{key}: {_cell(value)}")


@dataclass(frozen=True)
class Registry:
    """One command's access to the registry: the node, who acts, and how to print."""

    config_path: Path
    as_json: bool
    actor: str = ""

    @contextmanager
    def open(self) -> Iterator[tuple[NodeConfig, Session]]:
        with open_registry(self.config_path) as opened:
            yield opened

    def read(self, call: Callable[Concatenate[Session, P], T], *args: P.args,
             **kwargs: P.kwargs) -> T:
        """``call(session, ...)`` on the node's database."""
        with self.open() as (_config, session):
            return call(session, *args, **kwargs)

    def change(self, call: Callable[Concatenate[Session, str, P], T], *args: P.args,
               **kwargs: P.kwargs) -> T:
        """``call(session, actor, ...)``: one registry change, recorded with the actor."""
        with self.open() as (_config, session):
            return call(session, self.actor, *args, **kwargs)

    def show(self, record: Json) -> None:
        if self.as_json:
            print_json(record)
        else:
            print_record(record)

    def list(self, rows: list[Json], table: Table) -> None:
        if self.as_json:
            print_json(rows)
        else:
            print_table(rows, table.columns, table.title)

    def done(self, message: str, record: Json) -> None:
        """The changed record as JSON, or a one-line message."""
        if self.as_json:
            print_json(record)
        else:
            click.echo(message)


def reads(command: Callable[Concatenate[Registry, P], None]) -> Callable[..., None]:
    """A command that reads the registry: ``--config``, ``--json``; errors exit 1."""

    @functools.wraps(command)
    def run(*args: Any, config_path: Path, as_json: bool, **kwargs: Any) -> None:
        command(Registry(config_path, as_json), *args, **kwargs)

    return config_option(json_flag(db_errors(run)))


def changes(command: Callable[Concatenate[Registry, P], None]) -> Callable[..., None]:
    """A command that changes the registry: also ``--actor`` (default: the OS user)."""

    @functools.wraps(command)
    def run(*args: Any, config_path: Path, as_json: bool, actor: str | None,
            **kwargs: Any) -> None:
        command(Registry(config_path, as_json, actor or default_actor()), *args, **kwargs)

    return config_option(actor_option(json_flag(db_errors(run))))


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator (in the order given)."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def show_command(group: click.Group, argument: str, kind: click.ParamType[Any] | None,
                 show: Callable[[Session, Any], Json], doc: str) -> None:
    """``GROUP show ARGUMENT``: one object and what hangs on it."""

    @group.command("show", help=doc)
    @click.argument(argument, type=kind)
    @reads
    def show_one(reg: Registry, /, **ids: Any) -> None:
        reg.show(reg.read(show, ids[argument]))


def remove_command(group: click.Group, argument: str, kind: click.ParamType[Any] | None,
                   remove: Callable[[Session, str, Any], Json], doc: str, *,
                   what: str | None = None, key: str = "id") -> None:
    """``GROUP remove ARGUMENT``: one registry change, reported as ``WHAT ID removed``
    (``WHAT``: the argument's name unless given; ``ID``: the removed record's ``key``)."""

    @group.command("remove", help=doc)
    @click.argument(argument, type=kind)
    @changes
    def remove_one(reg: Registry, /, **ids: Any) -> None:
        gone = reg.change(remove, ids[argument])
        reg.done(f"{what or argument} {gone[key]} removed", gone)


# --- the group ------------------------------------------------------------------------------

@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
def acl() -> None:
    """Manage the access-rights registry: who may call which service or endpoint."""


# members

MEMBERS = Table("members", [("id", "member"), ("name", "name")])


@acl.group()
def members() -> None:
    """Members (organisations): INSTANCE/CLASS/MEMBER."""


@members.command("add")
@click.argument("member", type=CLIENT)
@click.option("--name", default="", help="Human-readable name of the organisation.")
@changes
def members_add(reg: Registry, member: ClientId, name: str) -> None:
    """Register a member."""
    made = reg.change(registry.add_member, member, name)
    reg.done(f"member {made['id']} added", made)


@members.command("list")
@reads
def members_list(reg: Registry) -> None:
    """List members."""
    reg.list(reg.read(registry.list_members), MEMBERS)


show_command(members, "member", CLIENT, registry.show_member,
             "Show a member and its subsystems.")
remove_command(members, "member", CLIENT, registry.remove_member,
               "Remove a member (it must have no subsystems or rights left, and no consents: "
               "they stay on record, also when revoked).")


# subsystems

SUBSYSTEMS = Table("subsystems", [("id", "subsystem"), ("local", "local"), ("auth", "auth"),
                                  ("tls_cert_sha256", "tls cert sha256"),
                                  ("allowlist", "allowlist")])


def _fingerprint(tls_cert: Path | None, tls_cert_sha256: str | None) -> str | None:
    if tls_cert is None:
        return tls_cert_sha256
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = tls_cert.read_bytes()
    try:
        cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data))
    except ValueError as exc:
        fail(f"{tls_cert}: not a PEM or DER certificate ({exc})")
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


subsystem_auth_options = options(
    click.option("--auth", type=click.Choice(AUTH_MODES), default=None,
                 help="How the local information system proves it may speak for the "
                      "subsystem: tls (pinned client certificate), allowlist (source "
                      "addresses) or none."),
    click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="The IS client certificate (PEM/DER) to pin; sets --auth tls."),
    click.option("--tls-cert-sha256", help="SHA-256 fingerprint of the IS client "
                                           "certificate (hex, colons allowed)."),
    click.option("--allow", "allowlist", multiple=True,
                 help="Source address or CIDR network of the IS (repeatable)."),
)


@acl.group()
def subsystems() -> None:
    """Subsystems: INSTANCE/CLASS/MEMBER/SUBSYSTEM; --local ones belong to this node."""


@subsystems.command("add")
@click.argument("subsystem", type=CLIENT)
@click.option("--local", is_flag=True, help="The subsystem is registered on this node.")
@subsystem_auth_options
@changes
def subsystems_add(reg: Registry, subsystem: ClientId, local: bool, auth: str | None,
                   tls_cert: Path | None, tls_cert_sha256: str | None,
                   allowlist: tuple[str, ...]) -> None:
    """Register a subsystem of a registered member."""
    fingerprint = _fingerprint(tls_cert, tls_cert_sha256)
    if auth is None:
        auth = "tls" if fingerprint else "allowlist" if allowlist else "none"
    made = reg.change(registry.add_subsystem, subsystem, local=local, auth=auth,
                      tls_cert_sha256=fingerprint, allowlist=allowlist)
    where = f"local, auth {made['auth']}" if local else "remote"
    reg.done(f"subsystem {made['id']} added ({where})", made)


@subsystems.command("set")
@click.argument("subsystem", type=CLIENT)
@click.option("--local/--remote", default=None, help="Whether it belongs to this node.")
@subsystem_auth_options
@changes
def subsystems_set(reg: Registry, subsystem: ClientId, local: bool | None, auth: str | None,
                   tls_cert: Path | None, tls_cert_sha256: str | None,
                   allowlist: tuple[str, ...]) -> None:
    """Change a subsystem's locality or how its information system authenticates."""
    made = reg.change(registry.update_subsystem, subsystem, local=local, auth=auth,
                      tls_cert_sha256=_fingerprint(tls_cert, tls_cert_sha256),
                      allowlist=list(allowlist) if allowlist else None)
    reg.done(f"subsystem {made['id']} updated", made)


@subsystems.command("list")
@click.option("--local", "local_only", is_flag=True, help="Only this node's subsystems.")
@reads
def subsystems_list(reg: Registry, local_only: bool) -> None:
    """List subsystems."""
    reg.list(reg.read(registry.list_subsystems, local_only=local_only), SUBSYSTEMS)


show_command(subsystems, "subsystem", CLIENT, registry.show_subsystem,
             "Show a subsystem with its services, groups and rights.")
remove_command(subsystems, "subsystem", CLIENT, registry.remove_subsystem,
               "Remove a subsystem (no services, rights or group memberships left, and no "
               "consents: they stay on record, also when revoked).")


# services

SERVICES = Table("services", [("id", "service"), ("backend_url", "backend"),
                              ("timeout", "timeout s"), ("requires_consent", "consent"),
                              ("log_body", "log body")])


@acl.group()
def services() -> None:
    """Services of a provider subsystem: .../SUBSYSTEM/SERVICE[/VERSION]."""


@services.command("add")
@click.argument("service", type=SERVICE)
@click.option("--backend", "backend_url", required=True, help="URL the request goes to.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Backend timeout in seconds.")
@click.option("--requires-consent", is_flag=True,
              help="Requests must name a data subject with an active consent.")
@click.option("--log-body", type=click.Choice(LOG_BODY_POLICIES), default="digest",
              show_default=True, help="What the message log keeps of bodies.")
@changes
def services_add(reg: Registry, service: ServiceId, backend_url: str, timeout: float,
                 requires_consent: bool, log_body: str) -> None:
    """Register a service of a registered subsystem."""
    made = reg.change(registry.add_service, service, backend_url=backend_url, timeout=timeout,
                      requires_consent=requires_consent, log_body=log_body)
    reg.done(f"service {made['id']} added", made)


@services.command("set")
@click.argument("service", type=SERVICE)
@click.option("--backend", "backend_url", default=None, help="URL the request goes to.")
@click.option("--timeout", type=float, default=None, help="Backend timeout in seconds.")
@click.option("--requires-consent/--no-consent", default=None,
              help="Whether requests need a data subject's consent.")
@click.option("--log-body", type=click.Choice(LOG_BODY_POLICIES), default=None,
              help="What the message log keeps of bodies.")
@changes
def services_set(reg: Registry, service: ServiceId, backend_url: str | None,
                 timeout: float | None, requires_consent: bool | None,
                 log_body: str | None) -> None:
    """Change a service's settings."""
    made = reg.change(registry.update_service, service, backend_url=backend_url,
                      timeout=timeout, requires_consent=requires_consent, log_body=log_body)
    reg.done(f"service {made['id']} updated", made)


@services.command("list")
@click.option("--provider", type=CLIENT, default=None, help="Only this subsystem's services.")
@reads
def services_list(reg: Registry, provider: ClientId | None) -> None:
    """List services."""
    reg.list(reg.read(registry.list_services, provider=provider), SERVICES)


show_command(services, "service", SERVICE, registry.show_service,
             "Show a service with its endpoints and rights.")
remove_command(services, "service", SERVICE, registry.remove_service,
               "Remove a service and its endpoints (no rights may be left, and no consents: "
               "they stay on record, also when revoked).")


# endpoints

ENDPOINTS = Table("endpoints", [("service", "service"), ("method", "method"),
                                ("path", "path")])
endpoint_arguments = options(click.argument("service", type=SERVICE),
                             click.argument("method"), click.argument("path"))


@acl.group()
def endpoints() -> None:
    """REST endpoints of a service: METHOD (or '*') and a path pattern."""


@endpoints.command("add")
@endpoint_arguments
@changes
def endpoints_add(reg: Registry, service: ServiceId, method: str, path: str) -> None:
    """Add an endpoint, e.g. GET '/people/*' or '*' '/files/**'."""
    made = reg.change(registry.add_endpoint, service, method, path)
    reg.done(f"endpoint {made['method']} {made['path']} of {made['service']} added", made)


@endpoints.command("list")
@click.argument("service", type=SERVICE, required=False)
@reads
def endpoints_list(reg: Registry, service: ServiceId | None) -> None:
    """List endpoints (of one service, or all)."""
    reg.list(reg.read(registry.list_endpoints, service), ENDPOINTS)


@endpoints.command("show")
@endpoint_arguments
@reads
def endpoints_show(reg: Registry, service: ServiceId, method: str, path: str) -> None:
    """Show one endpoint and the rights on it."""
    reg.show(reg.read(registry.show_endpoint, service, method, path))


@endpoints.command("remove")
@endpoint_arguments
@changes
def endpoints_remove(reg: Registry, service: ServiceId, method: str, path: str) -> None:
    """Remove an endpoint (no rights on it may be left)."""
    gone = reg.change(registry.remove_endpoint, service, method, path)
    reg.done(f"endpoint {gone['method']} {gone['path']} of {gone['service']} removed", gone)


# groups

GROUPS = Table("groups", [("code", "group"), ("description", "description"),
                          ("members", "members")])


@acl.group()
def groups() -> None:
    """Local groups of subsystems (rights can be granted to a group)."""


@groups.command("add")
@click.argument("code")
@click.option("--description", default="", help="What the group is for.")
@changes
def groups_add(reg: Registry, code: str, description: str) -> None:
    """Create a local group."""
    made = reg.change(registry.add_group, code, description)
    reg.done(f"group {made['code']} added", made)


@groups.command("list")
@reads
def groups_list(reg: Registry) -> None:
    """List local groups."""
    reg.list(reg.read(registry.list_groups), GROUPS)


show_command(groups, "code", None, registry.show_group,
             "Show a group, its members and rights.")
remove_command(groups, "code", None, registry.remove_group,
               "Remove a group (it must hold no rights).", what="group", key="code")


@groups.command("add-member")
@click.argument("code")
@click.argument("subsystem", type=CLIENT)
@changes
def groups_add_member(reg: Registry, code: str, subsystem: ClientId) -> None:
    """Put a subsystem into a group (idempotent)."""
    made = reg.change(registry.add_group_member, code, subsystem)
    reg.done(f"group {code}: members {', '.join(made['members'])}", made)


@groups.command("remove-member")
@click.argument("code")
@click.argument("subsystem", type=CLIENT)
@changes
def groups_remove_member(reg: Registry, code: str, subsystem: ClientId) -> None:
    """Take a subsystem out of a group."""
    made = reg.change(registry.remove_group_member, code, subsystem)
    reg.done(f"group {code}: members {', '.join(made['members']) or '(none)'}", made)


# rights

RIGHTS = Table("rights", [("id", "id"), ("subject_kind", "kind"), ("subject", "subject"),
                          ("service", "service"), ("method", "method"), ("path", "path"),
                          ("granted_at", "granted at"), ("granted_by", "by")])
right_arguments = options(
    click.argument("subject"),
    click.argument("service", type=SERVICE),
    click.option("--method", default=None, help="Endpoint method (with --path)."),
    click.option("--path", default=None, help="Endpoint path pattern (with --method)."),
)


def _endpoint_pair(method: str | None, path: str | None) -> None:
    if (method is None) != (path is None):
        raise click.UsageError("--method and --path go together: both for a right on one "
                               "endpoint, neither for the whole service")


def _target(right: Json) -> str:
    """``SERVICE`` or ``METHOD PATH of SERVICE``."""
    service = right["service"]
    return service if right["method"] is None else \
        f"{right['method']} {right['path']} of {service}"


@acl.group()
def rights() -> None:
    """Access rights: a subject on a whole service or on one endpoint."""


@rights.command("grant")
@right_arguments
@changes
def rights_grant(reg: Registry, subject: str, service: ServiceId, method: str | None,
                 path: str | None) -> None:
    """Grant SUBJECT access to SERVICE (or one endpoint). Idempotent: granting a right
    that exists changes nothing and says 'already granted' (exit 0)."""
    _endpoint_pair(method, path)
    made, created = reg.change(registry.grant, subject, service, method=method, path=path)
    reg.done(f"{'granted' if created else 'already granted'}: {subject} -> {_target(made)}",
             {**made, "created": created})


@rights.command("revoke")
@right_arguments
@changes
def rights_revoke(reg: Registry, subject: str, service: ServiceId, method: str | None,
                  path: str | None) -> None:
    """Revoke a right granted with the same arguments."""
    _endpoint_pair(method, path)
    gone = reg.change(registry.revoke, subject, service, method=method, path=path)
    reg.done(f"revoked: {subject} -> {_target(gone)}", gone)


@rights.command("show")
@click.argument("right_id", type=int)
@reads
def rights_show(reg: Registry, right_id: int) -> None:
    """Show one right by its id (see 'acl rights list')."""
    reg.show(reg.read(registry.show_right, right_id))


@rights.command("remove")
@click.argument("right_id", type=int)
@changes
def rights_remove(reg: Registry, right_id: int) -> None:
    """Revoke one right by its id (same as 'acl revoke' with its subject and object)."""
    shown = reg.read(registry.show_right, right_id)
    gone = reg.change(registry.revoke, shown["subject"], shown["service"],
                      method=shown["method"], path=shown["path"])
    reg.done(f"revoked right {right_id}: {gone['subject']} -> {gone['service']}", gone)


@rights.command("list")
@click.option("--subject", default=None, help="Only rights held directly by this subject.")
@click.option("--service", type=SERVICE, default=None, help="Only rights on this service.")
@reads
def rights_list(reg: Registry, subject: str | None, service: ServiceId | None) -> None:
    """List rights."""
    reg.list(reg.read(registry.list_rights, subject=subject, service=service), RIGHTS)


acl.add_command(rights_grant, "grant")
acl.add_command(rights_revoke, "revoke")


# decisions, events, export and import

EVENTS = Table("events", [("id", "id"), ("at", "at"), ("actor", "actor"),
                          ("action", "action"), ("object", "object")])


@acl.command("check")
@click.argument("client", type=CLIENT)
@click.argument("service", type=SERVICE)
@click.option("--method", default="GET", show_default=True, help="HTTP method.")
@click.option("--path", default="/", show_default=True,
              help="Request path after the service id, as sent (percent-encoded).")
@click.option("--subject", default=None, help="Data subject named by the request.")
@click.option("--at", "at", type=TIME, default=None, help="Decide as of this time "
                                                          "(default: now).")
@reads
def check(reg: Registry, client: ClientId, service: ServiceId, method: str, path: str,
          subject: str | None, at: datetime | None) -> None:
    """Would CLIENT be allowed to call SERVICE? Prints the decision and its rule or reason.

    Exit 0 when allowed, 1 when denied.
    """
    with reg.open() as (config, session):
        snapshot = load_snapshot(session, subject_key=subject_key(config, required=False))
    if snapshot.service(service) is None:
        names = [str(s.id) for s in snapshot.services()]
        click.echo(f"note: {choices(names, 'services')}", err=True)
    decision = decide(snapshot, client, service, method, path, subject,
                      at or datetime.now(UTC))
    if reg.as_json:
        print_json({"allowed": decision.allowed, "reason": decision.reason,
                    "matched_rule": decision.matched_rule, "registry_version": snapshot.version})
    else:
        click.echo(f"{'ALLOWED' if decision.allowed else 'DENIED'}: {decision.reason}")
    sys.exit(0 if decision.allowed else 1)


@acl.command("events")
@click.option("--after", "after_id", type=int, default=0, help="Only events after this id.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@reads
def events(reg: Registry, after_id: int, limit: int) -> None:
    """List admin events (every registry change, with actor, before and after)."""
    reg.list(reg.read(registry.list_admin_events, after_id=after_id, limit=limit), EVENTS)


@acl.command("export")
@config_option
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@db_errors
def export(config_path: Path, fmt: str, output: Path | None) -> None:
    """Write the whole registry as a TOML or JSON document (data subjects only hashed)."""
    document = Registry(config_path, as_json=False).read(registry.export_registry)
    text = dump_toml(document) if fmt == "toml" else dump_json(document)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"registry written to {output}", err=True)


@acl.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                        path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default=None,
              help="Document format (default: from the file name or content).")
@click.option("--replace", is_flag=True,
              help="Make the registry equal to the document: update settings and remove "
                   "what it does not list (consents are never removed).")
@click.option("--dry-run", is_flag=True, help="Show the changes, then roll them back.")
@changes
def import_(reg: Registry, file: Path, fmt: str | None, replace: bool, dry_run: bool) -> None:
    """Apply a registry document (from 'acl export'; '-' reads stdin) in one transaction.

    By default only adds what is missing; existing objects with different settings are an
    error. With --replace the registry becomes what the document says.
    """
    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    if fmt is None and file.suffix.lower() in (".toml", ".json"):
        fmt = file.suffix.lower()[1:]
    document = load_document(text, fmt)
    summary = reg.change(registry.import_registry, document, replace=replace, dry_run=dry_run)
    if reg.as_json:
        print_json(summary)
        return
    for change in summary["changes"]:
        click.echo(f"  {change}")
    click.echo(f"{'would import' if dry_run else 'imported'} {file}: {summary['added']} added, "
               f"{summary['updated']} updated, {summary['removed']} removed, "
               f"{summary['unchanged']} unchanged" + (" (dry run: nothing changed)"
                                                      if dry_run else ""))
