"""``secserver acl``: the access-rights registry (members, subsystems, services, endpoints,
local groups, rights), decisions, export and import. Also the helpers ``consent`` uses.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from secserver.acl import registry
from secserver.acl.decision import decide
from secserver.acl.document import dump_json, dump_toml, load_document
from secserver.acl.models import AUTH_MODES, LOG_BODY_POLICIES
from secserver.acl.snapshot import load_snapshot
from secserver.cli.options import config_option, fail, handle_errors, load_or_fail, print_json
from secserver.config import NodeConfig, read_secret
from secserver.db import migrate
from secserver.db.engine import make_engine, session_factory
from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId, ServiceId

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES = """\b
Exit codes:
  0  success (acl check: the request would be allowed)
  1  failure: the message on stderr says why (acl check: denied)
  2  usage error: unknown command or option, malformed identifier
\b
Subjects of rights: a subsystem INSTANCE/CLASS/MEMBER/SUBSYSTEM, a whole member
INSTANCE/CLASS/MEMBER, or a local group code. Services:
INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]. Endpoint paths: '*' matches within
one segment, '**' across segments.
\b
The database is the node's ([database] url, else SQLite in the data directory); it is
upgraded to the newest schema first unless [database] auto_upgrade = false."""


# --- parameter types: malformed ids are usage errors (exit 2) ------------------------------

class ClientIdType(click.ParamType[ClientId]):
    name = "CLIENT"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> ClientId:
        if isinstance(value, ClientId):
            return value
        try:
            return ClientId.parse(value)
        except InvalidIdentifier as exc:
            self.fail(exc.message, param, ctx)


class ServiceIdType(click.ParamType[ServiceId]):
    name = "SERVICE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> ServiceId:
        if isinstance(value, ServiceId):
            return value
        try:
            return ServiceId.parse(value)
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


CLIENT = ClientIdType()
SERVICE = ServiceIdType()
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

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
                title: str) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (e.g. in a pipe)."""
    if not rows:
        click.echo(f"no {title}", err=True)
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title.capitalize())
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


def print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  - " + ", ".join(f"{k}={_cell(v)}" for k, v in item.items()))
        else:
            click.echo(f"{key}: {_cell(value)}")


def print_list(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str,
               as_json: bool) -> None:
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns, title)


def done(message: str, record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(record)
    else:
        click.echo(message)


# --- the group ------------------------------------------------------------------------------

@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
def acl() -> None:
    """Manage the access-rights registry: who may call which service or endpoint."""


# members

@acl.group()
def members() -> None:
    """Members (organisations): INSTANCE/CLASS/MEMBER."""


@members.command("add")
@config_option
@actor_option
@json_flag
@click.argument("member", type=CLIENT)
@click.option("--name", default="", help="Human-readable name of the organisation.")
@db_errors
def members_add(config_path: Path, actor: str | None, as_json: bool, member: ClientId,
                name: str) -> None:
    """Register a member."""
    with open_registry(config_path) as (_config, session):
        made = registry.add_member(session, actor or default_actor(), member, name)
    done(f"member {made['id']} added", made, as_json)


@members.command("list")
@config_option
@json_flag
@db_errors
def members_list(config_path: Path, as_json: bool) -> None:
    """List members."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_members(session)
    print_list(rows, [("id", "member"), ("name", "name")], "members", as_json)


@members.command("show")
@config_option
@json_flag
@click.argument("member", type=CLIENT)
@db_errors
def members_show(config_path: Path, as_json: bool, member: ClientId) -> None:
    """Show a member and its subsystems."""
    with open_registry(config_path) as (_config, session):
        print_record(registry.show_member(session, member), as_json)


@members.command("remove")
@config_option
@actor_option
@json_flag
@click.argument("member", type=CLIENT)
@db_errors
def members_remove(config_path: Path, actor: str | None, as_json: bool,
                   member: ClientId) -> None:
    """Remove a member (it must have no subsystems, rights or consents left)."""
    with open_registry(config_path) as (_config, session):
        gone = registry.remove_member(session, actor or default_actor(), member)
    done(f"member {gone['id']} removed", gone, as_json)


# subsystems

SUBSYSTEM_COLUMNS = [("id", "subsystem"), ("local", "local"), ("auth", "auth"),
                     ("tls_cert_sha256", "tls cert sha256"), ("allowlist", "allowlist")]


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


def subsystem_options(func: F) -> F:
    for option in reversed([
        click.option("--auth", type=click.Choice(AUTH_MODES), default=None,
                     help="How the local information system proves it may speak for the "
                          "subsystem: tls (pinned client certificate), allowlist (source "
                          "addresses) or none."),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False,
                                                    path_type=Path),
                     help="The IS client certificate (PEM/DER) to pin; sets --auth tls."),
        click.option("--tls-cert-sha256", help="SHA-256 fingerprint of the IS client "
                                               "certificate (hex, colons allowed)."),
        click.option("--allow", "allowlist", multiple=True,
                     help="Source address or CIDR network of the IS (repeatable)."),
    ]):
        func = option(func)
    return func


@acl.group()
def subsystems() -> None:
    """Subsystems: INSTANCE/CLASS/MEMBER/SUBSYSTEM; --local ones belong to this node."""


@subsystems.command("add")
@config_option
@actor_option
@json_flag
@click.argument("subsystem", type=CLIENT)
@click.option("--local", is_flag=True, help="The subsystem is registered on this node.")
@subsystem_options
@db_errors
def subsystems_add(config_path: Path, actor: str | None, as_json: bool, subsystem: ClientId,
                   local: bool, auth: str | None, tls_cert: Path | None,
                   tls_cert_sha256: str | None, allowlist: tuple[str, ...]) -> None:
    """Register a subsystem of a registered member."""
    fingerprint = _fingerprint(tls_cert, tls_cert_sha256)
    if auth is None:
        auth = "tls" if fingerprint else "allowlist" if allowlist else "none"
    with open_registry(config_path) as (_config, session):
        made = registry.add_subsystem(session, actor or default_actor(), subsystem,
                                      local=local, auth=auth, tls_cert_sha256=fingerprint,
                                      allowlist=allowlist)
    done(f"subsystem {made['id']} added ({'local, auth ' + made['auth'] if local else 'remote'})",
         made, as_json)


@subsystems.command("set")
@config_option
@actor_option
@json_flag
@click.argument("subsystem", type=CLIENT)
@click.option("--local/--remote", default=None, help="Whether it belongs to this node.")
@subsystem_options
@db_errors
def subsystems_set(config_path: Path, actor: str | None, as_json: bool, subsystem: ClientId,
                   local: bool | None, auth: str | None, tls_cert: Path | None,
                   tls_cert_sha256: str | None, allowlist: tuple[str, ...]) -> None:
    """Change a subsystem's locality or how its information system authenticates."""
    fingerprint = _fingerprint(tls_cert, tls_cert_sha256)
    with open_registry(config_path) as (_config, session):
        made = registry.update_subsystem(
            session, actor or default_actor(), subsystem, local=local, auth=auth,
            tls_cert_sha256=fingerprint, allowlist=list(allowlist) if allowlist else None)
    done(f"subsystem {made['id']} updated", made, as_json)


@subsystems.command("list")
@config_option
@json_flag
@click.option("--local", "local_only", is_flag=True, help="Only this node's subsystems.")
@db_errors
def subsystems_list(config_path: Path, as_json: bool, local_only: bool) -> None:
    """List subsystems."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_subsystems(session, local_only=local_only)
    print_list(rows, SUBSYSTEM_COLUMNS, "subsystems", as_json)


@subsystems.command("show")
@config_option
@json_flag
@click.argument("subsystem", type=CLIENT)
@db_errors
def subsystems_show(config_path: Path, as_json: bool, subsystem: ClientId) -> None:
    """Show a subsystem with its services, groups and rights."""
    with open_registry(config_path) as (_config, session):
        print_record(registry.show_subsystem(session, subsystem), as_json)


@subsystems.command("remove")
@config_option
@actor_option
@json_flag
@click.argument("subsystem", type=CLIENT)
@db_errors
def subsystems_remove(config_path: Path, actor: str | None, as_json: bool,
                      subsystem: ClientId) -> None:
    """Remove a subsystem (no services, rights, consents or group memberships left)."""
    with open_registry(config_path) as (_config, session):
        gone = registry.remove_subsystem(session, actor or default_actor(), subsystem)
    done(f"subsystem {gone['id']} removed", gone, as_json)


# services

SERVICE_COLUMNS = [("id", "service"), ("backend_url", "backend"), ("timeout", "timeout s"),
                   ("requires_consent", "consent"), ("log_body", "log body")]


@acl.group()
def services() -> None:
    """Services of a provider subsystem: .../SUBSYSTEM/SERVICE[/VERSION]."""


@services.command("add")
@config_option
@actor_option
@json_flag
@click.argument("service", type=SERVICE)
@click.option("--backend", "backend_url", required=True, help="URL the request goes to.")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Backend timeout in seconds.")
@click.option("--requires-consent", is_flag=True,
              help="Requests must name a data subject with an active consent.")
@click.option("--log-body", type=click.Choice(LOG_BODY_POLICIES), default="digest",
              show_default=True, help="What the message log keeps of bodies.")
@db_errors
def services_add(config_path: Path, actor: str | None, as_json: bool, service: ServiceId,
                 backend_url: str, timeout: float, requires_consent: bool,
                 log_body: str) -> None:
    """Register a service of a registered subsystem."""
    with open_registry(config_path) as (_config, session):
        made = registry.add_service(session, actor or default_actor(), service,
                                    backend_url=backend_url, timeout=timeout,
                                    requires_consent=requires_consent, log_body=log_body)
    done(f"service {made['id']} added", made, as_json)


@services.command("set")
@config_option
@actor_option
@json_flag
@click.argument("service", type=SERVICE)
@click.option("--backend", "backend_url", default=None, help="URL the request goes to.")
@click.option("--timeout", type=float, default=None, help="Backend timeout in seconds.")
@click.option("--requires-consent/--no-consent", default=None,
              help="Whether requests need a data subject's consent.")
@click.option("--log-body", type=click.Choice(LOG_BODY_POLICIES), default=None,
              help="What the message log keeps of bodies.")
@db_errors
def services_set(config_path: Path, actor: str | None, as_json: bool, service: ServiceId,
                 backend_url: str | None, timeout: float | None,
                 requires_consent: bool | None, log_body: str | None) -> None:
    """Change a service's settings."""
    with open_registry(config_path) as (_config, session):
        made = registry.update_service(session, actor or default_actor(), service,
                                       backend_url=backend_url, timeout=timeout,
                                       requires_consent=requires_consent, log_body=log_body)
    done(f"service {made['id']} updated", made, as_json)


@services.command("list")
@config_option
@json_flag
@click.option("--provider", type=CLIENT, default=None, help="Only this subsystem's services.")
@db_errors
def services_list(config_path: Path, as_json: bool, provider: ClientId | None) -> None:
    """List services."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_services(session, provider=provider)
    print_list(rows, SERVICE_COLUMNS, "services", as_json)


@services.command("show")
@config_option
@json_flag
@click.argument("service", type=SERVICE)
@db_errors
def services_show(config_path: Path, as_json: bool, service: ServiceId) -> None:
    """Show a service with its endpoints and rights."""
    with open_registry(config_path) as (_config, session):
        print_record(registry.show_service(session, service), as_json)


@services.command("remove")
@config_option
@actor_option
@json_flag
@click.argument("service", type=SERVICE)
@db_errors
def services_remove(config_path: Path, actor: str | None, as_json: bool,
                    service: ServiceId) -> None:
    """Remove a service and its endpoints (no rights or consents may be left)."""
    with open_registry(config_path) as (_config, session):
        gone = registry.remove_service(session, actor or default_actor(), service)
    done(f"service {gone['id']} removed", gone, as_json)


# endpoints

ENDPOINT_COLUMNS = [("service", "service"), ("method", "method"), ("path", "path")]


@acl.group()
def endpoints() -> None:
    """REST endpoints of a service: METHOD (or '*') and a path pattern."""


@endpoints.command("add")
@config_option
@actor_option
@json_flag
@click.argument("service", type=SERVICE)
@click.argument("method")
@click.argument("path")
@db_errors
def endpoints_add(config_path: Path, actor: str | None, as_json: bool, service: ServiceId,
                  method: str, path: str) -> None:
    """Add an endpoint, e.g. GET '/people/*' or '*' '/files/**'."""
    with open_registry(config_path) as (_config, session):
        made = registry.add_endpoint(session, actor or default_actor(), service, method, path)
    done(f"endpoint {made['method']} {made['path']} of {made['service']} added", made,
         as_json)


@endpoints.command("list")
@config_option
@json_flag
@click.argument("service", type=SERVICE, required=False)
@db_errors
def endpoints_list(config_path: Path, as_json: bool, service: ServiceId | None) -> None:
    """List endpoints (of one service, or all)."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_endpoints(session, service)
    print_list(rows, ENDPOINT_COLUMNS, "endpoints", as_json)


@endpoints.command("show")
@config_option
@json_flag
@click.argument("service", type=SERVICE)
@click.argument("method")
@click.argument("path")
@db_errors
def endpoints_show(config_path: Path, as_json: bool, service: ServiceId, method: str,
                   path: str) -> None:
    """Show one endpoint and the rights on it."""
    with open_registry(config_path) as (_config, session):
        shown = registry.show_endpoint(session, service, method, path)
    print_record(shown, as_json)


@endpoints.command("remove")
@config_option
@actor_option
@json_flag
@click.argument("service", type=SERVICE)
@click.argument("method")
@click.argument("path")
@db_errors
def endpoints_remove(config_path: Path, actor: str | None, as_json: bool, service: ServiceId,
                     method: str, path: str) -> None:
    """Remove an endpoint (no rights on it may be left)."""
    with open_registry(config_path) as (_config, session):
        gone = registry.remove_endpoint(session, actor or default_actor(), service, method,
                                        path)
    done(f"endpoint {gone['method']} {gone['path']} of {gone['service']} removed", gone,
         as_json)


# groups

@acl.group()
def groups() -> None:
    """Local groups of subsystems (rights can be granted to a group)."""


@groups.command("add")
@config_option
@actor_option
@json_flag
@click.argument("code")
@click.option("--description", default="", help="What the group is for.")
@db_errors
def groups_add(config_path: Path, actor: str | None, as_json: bool, code: str,
               description: str) -> None:
    """Create a local group."""
    with open_registry(config_path) as (_config, session):
        made = registry.add_group(session, actor or default_actor(), code, description)
    done(f"group {made['code']} added", made, as_json)


@groups.command("list")
@config_option
@json_flag
@db_errors
def groups_list(config_path: Path, as_json: bool) -> None:
    """List local groups."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_groups(session)
    print_list(rows, [("code", "group"), ("description", "description"),
                      ("members", "members")], "groups", as_json)


@groups.command("show")
@config_option
@json_flag
@click.argument("code")
@db_errors
def groups_show(config_path: Path, as_json: bool, code: str) -> None:
    """Show a group, its members and rights."""
    with open_registry(config_path) as (_config, session):
        print_record(registry.show_group(session, code), as_json)


@groups.command("remove")
@config_option
@actor_option
@json_flag
@click.argument("code")
@db_errors
def groups_remove(config_path: Path, actor: str | None, as_json: bool, code: str) -> None:
    """Remove a group (it must hold no rights)."""
    with open_registry(config_path) as (_config, session):
        gone = registry.remove_group(session, actor or default_actor(), code)
    done(f"group {gone['code']} removed", gone, as_json)


@groups.command("add-member")
@config_option
@actor_option
@json_flag
@click.argument("code")
@click.argument("subsystem", type=CLIENT)
@db_errors
def groups_add_member(config_path: Path, actor: str | None, as_json: bool, code: str,
                      subsystem: ClientId) -> None:
    """Put a subsystem into a group (idempotent)."""
    with open_registry(config_path) as (_config, session):
        made = registry.add_group_member(session, actor or default_actor(), code, subsystem)
    done(f"group {code}: members {', '.join(made['members'])}", made, as_json)


@groups.command("remove-member")
@config_option
@actor_option
@json_flag
@click.argument("code")
@click.argument("subsystem", type=CLIENT)
@db_errors
def groups_remove_member(config_path: Path, actor: str | None, as_json: bool, code: str,
                         subsystem: ClientId) -> None:
    """Take a subsystem out of a group."""
    with open_registry(config_path) as (_config, session):
        made = registry.remove_group_member(session, actor or default_actor(), code,
                                            subsystem)
    done(f"group {code}: members {', '.join(made['members']) or '(none)'}", made, as_json)


# rights

RIGHT_COLUMNS = [("id", "id"), ("subject_kind", "kind"), ("subject", "subject"),
                 ("service", "service"), ("method", "method"), ("path", "path"),
                 ("granted_at", "granted at"), ("granted_by", "by")]
endpoint_options = [
    click.option("--method", default=None, help="Endpoint method (with --path)."),
    click.option("--path", default=None, help="Endpoint path pattern (with --method)."),
]


def _endpoint_opts(func: F) -> F:
    for option in reversed(endpoint_options):
        func = option(func)
    return func


@acl.group()
def rights() -> None:
    """Access rights: a subject on a whole service or on one endpoint."""


def _grant(config_path: Path, actor: str | None, as_json: bool, subject: str,
           service: ServiceId, method: str | None, path: str | None) -> None:
    with open_registry(config_path) as (_config, session):
        made, created = registry.grant(session, actor or default_actor(), subject, service,
                                       method=method, path=path)
    target = service if made["method"] is None else f"{made['method']} {made['path']} of {service}"
    done(f"{'granted' if created else 'already granted'}: {subject} -> {target}",
         {**made, "created": created}, as_json)


def _revoke(config_path: Path, actor: str | None, as_json: bool, subject: str,
            service: ServiceId, method: str | None, path: str | None) -> None:
    with open_registry(config_path) as (_config, session):
        gone = registry.revoke(session, actor or default_actor(), subject, service,
                               method=method, path=path)
    target = service if gone["method"] is None else f"{gone['method']} {gone['path']} of {service}"
    done(f"revoked: {subject} -> {target}", gone, as_json)


@rights.command("grant")
@config_option
@actor_option
@json_flag
@click.argument("subject")
@click.argument("service", type=SERVICE)
@_endpoint_opts
@db_errors
def rights_grant(config_path: Path, actor: str | None, as_json: bool, subject: str,
                 service: ServiceId, method: str | None, path: str | None) -> None:
    """Grant SUBJECT access to SERVICE (or one endpoint). Idempotent."""
    _grant(config_path, actor, as_json, subject, service, method, path)


@rights.command("revoke")
@config_option
@actor_option
@json_flag
@click.argument("subject")
@click.argument("service", type=SERVICE)
@_endpoint_opts
@db_errors
def rights_revoke(config_path: Path, actor: str | None, as_json: bool, subject: str,
                  service: ServiceId, method: str | None, path: str | None) -> None:
    """Revoke a right granted with the same arguments."""
    _revoke(config_path, actor, as_json, subject, service, method, path)


@rights.command("show")
@config_option
@json_flag
@click.argument("right_id", type=int)
@db_errors
def rights_show(config_path: Path, as_json: bool, right_id: int) -> None:
    """Show one right by its id (see 'acl rights list')."""
    with open_registry(config_path) as (_config, session):
        print_record(registry.show_right(session, right_id), as_json)


@rights.command("remove")
@config_option
@actor_option
@json_flag
@click.argument("right_id", type=int)
@db_errors
def rights_remove(config_path: Path, actor: str | None, as_json: bool, right_id: int) -> None:
    """Revoke one right by its id (same as 'acl revoke' with its subject and object)."""
    with open_registry(config_path) as (_config, session):
        shown = registry.show_right(session, right_id)
        gone = registry.revoke(session, actor or default_actor(), shown["subject"],
                               shown["service"], method=shown["method"], path=shown["path"])
    done(f"revoked right {right_id}: {gone['subject']} -> {gone['service']}", gone, as_json)


@rights.command("list")
@config_option
@json_flag
@click.option("--subject", default=None, help="Only rights held directly by this subject.")
@click.option("--service", type=SERVICE, default=None, help="Only rights on this service.")
@db_errors
def rights_list(config_path: Path, as_json: bool, subject: str | None,
                service: ServiceId | None) -> None:
    """List rights."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_rights(session, subject=subject, service=service)
    print_list(rows, RIGHT_COLUMNS, "rights", as_json)


@acl.command("grant")
@config_option
@actor_option
@json_flag
@click.argument("subject")
@click.argument("service", type=SERVICE)
@_endpoint_opts
@db_errors
def grant(config_path: Path, actor: str | None, as_json: bool, subject: str,
          service: ServiceId, method: str | None, path: str | None) -> None:
    """Same as 'acl rights grant'."""
    _grant(config_path, actor, as_json, subject, service, method, path)


@acl.command("revoke")
@config_option
@actor_option
@json_flag
@click.argument("subject")
@click.argument("service", type=SERVICE)
@_endpoint_opts
@db_errors
def revoke(config_path: Path, actor: str | None, as_json: bool, subject: str,
           service: ServiceId, method: str | None, path: str | None) -> None:
    """Same as 'acl rights revoke'."""
    _revoke(config_path, actor, as_json, subject, service, method, path)


# decisions, events, export and import

@acl.command("check")
@config_option
@json_flag
@click.argument("client", type=CLIENT)
@click.argument("service", type=SERVICE)
@click.option("--method", default="GET", show_default=True, help="HTTP method.")
@click.option("--path", default="/", show_default=True,
              help="Request path after the service id, as sent (percent-encoded).")
@click.option("--subject", default=None, help="Data subject named by the request.")
@click.option("--at", "at", type=TIME, default=None, help="Decide as of this time "
                                                          "(default: now).")
@db_errors
def check(config_path: Path, as_json: bool, client: ClientId, service: ServiceId, method: str,
          path: str, subject: str | None, at: datetime | None) -> None:
    """Would CLIENT be allowed to call SERVICE? Prints the decision and its rule or reason.

    Exit 0 when allowed, 1 when denied.
    """
    with open_registry(config_path) as (config, session):
        snapshot = load_snapshot(session, subject_key=subject_key(config, required=False))
    decision = decide(snapshot, client, service, method, path, subject,
                      at or datetime.now(UTC))
    if as_json:
        print_json({"allowed": decision.allowed, "reason": decision.reason,
                    "matched_rule": decision.matched_rule, "registry_version": snapshot.version})
    else:
        click.echo(f"{'ALLOWED' if decision.allowed else 'DENIED'}: {decision.reason}")
    sys.exit(0 if decision.allowed else 1)


@acl.command("events")
@config_option
@json_flag
@click.option("--after", "after_id", type=int, default=0, help="Only events after this id.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@db_errors
def events(config_path: Path, as_json: bool, after_id: int, limit: int) -> None:
    """List admin events (every registry change, with actor, before and after)."""
    with open_registry(config_path) as (_config, session):
        rows = registry.list_admin_events(session, after_id=after_id, limit=limit)
    print_list(rows, [("id", "id"), ("at", "at"), ("actor", "actor"), ("action", "action"),
                      ("object", "object")], "events", as_json)


@acl.command("export")
@config_option
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@db_errors
def export(config_path: Path, fmt: str, output: Path | None) -> None:
    """Write the whole registry as a TOML or JSON document (data subjects only hashed)."""
    with open_registry(config_path) as (_config, session):
        document = registry.export_registry(session)
    text = dump_toml(document) if fmt == "toml" else dump_json(document)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"registry written to {output}", err=True)


@acl.command("import")
@config_option
@actor_option
@json_flag
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True,
                                        path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default=None,
              help="Document format (default: from the file name or content).")
@click.option("--replace", is_flag=True,
              help="Make the registry equal to the document: update settings and remove "
                   "what it does not list (consents are never removed).")
@click.option("--dry-run", is_flag=True, help="Show the changes, then roll them back.")
@db_errors
def import_(config_path: Path, actor: str | None, as_json: bool, file: Path,
            fmt: str | None, replace: bool, dry_run: bool) -> None:
    """Apply a registry document (from 'acl export'; '-' reads stdin) in one transaction.

    By default only adds what is missing; existing objects with different settings are an
    error. With --replace the registry becomes what the document says.
    """
    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    if fmt is None and file.suffix.lower() in (".toml", ".json"):
        fmt = file.suffix.lower()[1:]
    document = load_document(text, fmt)
    with open_registry(config_path) as (_config, session):
        summary = registry.import_registry(session, actor or default_actor(), document,
                                           replace=replace, dry_run=dry_run)
    if as_json:
        print_json(summary)
        return
    for change in summary["changes"]:
        click.echo(f"  {change}")
    click.echo(f"{'would import' if dry_run else 'imported'} {file}: {summary['added']} added, "
               f"{summary['updated']} updated, {summary['removed']} removed, "
               f"{summary['unchanged']} unchanged" + (" (dry run: nothing changed)"
                                                      if dry_run else ""))

