"""The whole registry as one document (``acl export`` / ``acl import``): backup, review in
version control, or moving a registry to another node."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
    Json,
    RegistryError,
    iso,
    list_admin_events,
    transaction,
    utc,
)
from secserver.acl.registry.consents import consents_json, list_consents, record_hashed_consent
from secserver.acl.registry.groups import (
    add_group,
    add_group_member,
    list_groups,
    remove_group,
    remove_group_member,
    update_group,
)
from secserver.acl.registry.lookups import (
    endpoint_args,
    find_endpoint,
    find_group,
    find_member,
    find_service,
    find_subsystem,
    group_json,
    member_json,
    parse_service,
    require_group,
    require_service,
    service_json,
    subsystem_json,
)
from secserver.acl.registry.members import add_member, list_members, remove_member, update_member
from secserver.acl.registry.rights import grant, list_rights, revoke
from secserver.acl.registry.services import (
    add_endpoint,
    add_service,
    list_endpoints,
    list_services,
    remove_endpoint,
    remove_service,
    update_service,
)
from secserver.acl.registry.subsystems import (
    add_subsystem,
    list_subsystems,
    remove_subsystem,
    update_subsystem,
)
from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId, ServiceId

T = TypeVar("T")
DOCUMENT_FORMAT = "secserver-registry/1"


def export_registry(session: Session) -> Json:
    """The whole registry as a JSON-ready document (data subjects only as keyed hashes)."""
    groups = list_groups(session)
    return {
        "format": DOCUMENT_FORMAT,
        "members": list_members(session),
        "subsystems": list_subsystems(session),
        "services": list_services(session),
        "endpoints": list_endpoints(session),
        "groups": [{"code": g["code"], "description": g["description"]} for g in groups],
        "group_members": [{"group": g["code"], "subsystem": s}
                          for g in groups for s in g["members"]],
        "rights": [{k: v for k, v in r.items() if k != "id"} for r in list_rights(session)],
        "consents": [{k: v for k, v in c.items() if k != "id"}
                     for c in list_consents(session)],
    }


# --- reading a document -------------------------------------------------------------------

def _field(item: Mapping[str, Any], key: str, kind: type[T], default: Any = ...) -> T:
    if key not in item or item[key] is None:
        if default is ...:
            raise RegistryError(f"missing {key!r}")
        return default  # type: ignore[no-any-return]
    value = item[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise RegistryError(f"{key!r} must be {kind.__name__}, got {value!r}")
    return value


def _time_field(item: Mapping[str, Any], key: str) -> datetime | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise RegistryError(f"{key!r} is not an ISO 8601 time: {value!r}") from exc
    if not isinstance(value, datetime):
        raise RegistryError(f"{key!r} must be a time, got {value!r}")
    if value.tzinfo is None:
        raise RegistryError(f"{key!r} must carry a time zone (e.g. +00:00 or Z)")
    return value.astimezone(UTC)


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix errors raised while importing one document item with its position."""
    try:
        yield
    except (RegistryError, InvalidIdentifier) as exc:
        raise RegistryError(f"{where}: {exc.message}", code=exc.code,
                            http_status=exc.http_status) from exc


def _right_key(subject: str, service: str, method: str | None,
               path: str | None) -> tuple[str, str, str | None, str | None]:
    if method is not None and path is not None:
        method, path = endpoint_args(method, path)
    return subject, str(parse_service(service)), method, path


# --- applying a document ------------------------------------------------------------------

class _Import:
    """One import: adds what is missing, settles differences, remembers what it saw."""

    def __init__(self, session: Session, actor: str, data: Mapping[str, Any], replace: bool,
                 at: datetime) -> None:
        self.session, self.actor, self.data = session, actor, data
        self.replace, self.at = replace, at
        self.counts = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0}
        self.wanted: dict[str, set[Any]] = {}

    def each(self, key: str, apply: Callable[[Mapping[str, Any]], None]) -> None:
        """Apply the document's ``key`` items in order; errors name the item's position."""
        items = self.data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise RegistryError(f"document: {key!r} must be a list of tables")
        self.wanted.setdefault(key, set())
        for i, item in enumerate(items):
            with _at(f"{key}[{i}]"):
                apply(item)

    def want(self, key: str, identity: Any) -> None:
        self.wanted[key].add(identity)

    def count(self, created: bool) -> None:
        self.counts["added" if created else "unchanged"] += 1

    def settle(self, existing: Json | None, wanted: Json, add: Callable[[], object],
               update: Callable[[], object]) -> None:
        """Added (``existing`` None), unchanged, updated (replace) or an error naming the
        differing settings."""
        if existing is None:
            add()
            self.count(True)
            return
        diff = [k for k in wanted if existing.get(k) != wanted[k]]
        if not diff:
            self.counts["unchanged"] += 1
            return
        if not self.replace:
            found = ", ".join(f"{k}={existing.get(k)!r}" for k in diff)
            raise RegistryError(f"already registered with different settings ({found}); "
                                "import with replace to change it",
                                code="AlreadyExists", http_status=409)
        update()
        self.counts["updated"] += 1

    def member(self, item: Mapping[str, Any]) -> None:
        s, actor, at = self.session, self.actor, self.at
        member = ClientId.parse(_field(item, "id", str))
        name = _field(item, "name", str, "")
        self.want("members", str(member))
        row = find_member(s, member)
        self.settle(None if row is None else member_json(row), {"name": name},
                    partial(add_member, s, actor, member, name, now=at),
                    partial(update_member, s, actor, member, name, now=at))

    def subsystem(self, item: Mapping[str, Any]) -> None:
        s, actor, at = self.session, self.actor, self.at
        client = ClientId.parse(_field(item, "id", str))
        self.want("subsystems", str(client))
        fields: Json = {
            "local": _field(item, "local", bool, False),
            "auth": _field(item, "auth", str, "none"),
            "tls_cert_sha256": _field(item, "tls_cert_sha256", str, None),
            "allowlist": list(_field(item, "allowlist", list, [])),
        }
        row = find_subsystem(s, client)
        self.settle(None if row is None else subsystem_json(row, client), fields,
                    partial(add_subsystem, s, actor, client, now=at, **fields),
                    partial(update_subsystem, s, actor, client, now=at, **fields))

    def service(self, item: Mapping[str, Any]) -> None:
        s, actor, at = self.session, self.actor, self.at
        service = ServiceId.parse(_field(item, "id", str))
        self.want("services", str(service))
        fields: Json = {
            "backend_url": _field(item, "backend_url", str),
            "timeout": _field(item, "timeout", float, 30.0),
            "requires_consent": _field(item, "requires_consent", bool, False),
            "log_body": _field(item, "log_body", str, "digest"),
        }
        row = find_service(s, service)
        self.settle(None if row is None else service_json(row, service), fields,
                    partial(add_service, s, actor, service, now=at, **fields),
                    partial(update_service, s, actor, service, now=at, **fields))

    def endpoint(self, item: Mapping[str, Any]) -> None:
        s = self.session
        service = ServiceId.parse(_field(item, "service", str))
        verb, pattern = endpoint_args(_field(item, "method", str), _field(item, "path", str))
        self.want("endpoints", (str(service), verb, pattern))
        new = find_endpoint(s, require_service(s, service), verb, pattern) is None
        if new:
            add_endpoint(s, self.actor, service, verb, pattern, now=self.at)
        self.count(new)

    def group(self, item: Mapping[str, Any]) -> None:
        s, actor, at = self.session, self.actor, self.at
        code = _field(item, "code", str)
        description = _field(item, "description", str, "")
        self.want("groups", code)
        row = find_group(s, code)
        self.settle(None if row is None else {"description": row.description},
                    {"description": description},
                    partial(add_group, s, actor, code, description, now=at),
                    partial(update_group, s, actor, code, description, now=at))

    def group_member(self, item: Mapping[str, Any]) -> None:
        s = self.session
        code = _field(item, "group", str)
        client = ClientId.parse(_field(item, "subsystem", str))
        self.want("group_members", (code, str(client)))
        new = str(client) not in group_json(s, require_group(s, code))["members"]
        if new:
            add_group_member(s, self.actor, code, client, now=self.at)
        self.count(new)

    def right(self, item: Mapping[str, Any]) -> None:
        subject = _field(item, "subject", str)
        service = ServiceId.parse(_field(item, "service", str))
        method = _field(item, "method", str, None)
        path = _field(item, "path", str, None)
        self.want("rights", _right_key(subject, str(service), method, path))
        _right, created = grant(
            self.session, self.actor, subject, service, method=method, path=path,
            now=self.at, granted_at=_time_field(item, "granted_at") or self.at,
            granted_by=_field(item, "granted_by", str, self.actor))
        self.count(created)

    def consent(self, item: Mapping[str, Any]) -> None:
        s, actor, at = self.session, self.actor, self.at
        hashed = _field(item, "subject_hash", str)
        client = ClientId.parse(_field(item, "client", str))
        service = ServiceId.parse(_field(item, "service", str))
        purpose = _field(item, "purpose", str)
        valid_from = _time_field(item, "valid_from") or at
        same = [c for c in consents_json(s, list(s.execute(
            select(m.Consent).where(m.Consent.subject_hash == hashed)).scalars()))
            if (c["client"], c["service"], c["purpose"], c["valid_from"])
            == (str(client), str(service), purpose, iso(valid_from))]
        if not same:
            record_hashed_consent(s, actor, at, hashed, client, service, purpose,
                                  valid_from, _time_field(item, "valid_until"),
                                  _time_field(item, "revoked_at"),
                                  (_time_field(item, "recorded_at") or at,
                                   _field(item, "recorded_by", str, actor)))
        self.count(not same)

    def remove(self, what: str, call: Callable[..., Json], *args: str) -> None:
        with _at(f"removing {what}"):
            call(self.session, self.actor, *args, now=self.at)
        self.counts["removed"] += 1

    def remove_unlisted(self) -> None:
        """What the document does not list goes, dependants first (never consents)."""
        s, wanted = self.session, self.wanted
        for right in list_rights(s):
            if _right_key(right["subject"], right["service"], right["method"],
                          right["path"]) not in wanted["rights"]:
                self.remove(f"right {right['id']}", partial(
                    revoke, method=right["method"], path=right["path"]),
                    right["subject"], right["service"])
        for group in list_groups(s):
            for subsystem in group["members"]:
                if (group["code"], subsystem) not in wanted["group_members"]:
                    self.remove(f"{subsystem} from group {group['code']}", remove_group_member,
                                group["code"], subsystem)
            if group["code"] not in wanted["groups"]:
                self.remove(f"group {group['code']}", remove_group, group["code"])
        for endpoint in list_endpoints(s):
            ids = (endpoint["service"], endpoint["method"], endpoint["path"])
            if ids not in wanted["endpoints"]:
                self.remove(f"endpoint {' '.join(ids)}", remove_endpoint, *ids)
        removals: list[tuple[list[Json], str, Callable[..., Json], str]] = [
            (list_services(s), "services", remove_service, "service"),
            (list_subsystems(s), "subsystems", remove_subsystem, "subsystem"),
            (list_members(s), "members", remove_member, "member"),
        ]
        for existing_items, key, remove, what in removals:
            for existing in existing_items:
                if existing["id"] not in wanted[key]:
                    self.remove(f"{what} {existing['id']}", remove, existing["id"])


def import_registry(session: Session, actor: str, data: Mapping[str, Any], *,
                    replace: bool = False, dry_run: bool = False,
                    now: datetime | None = None) -> Json:
    """Apply a document made by :func:`export_registry`, in one transaction.

    Merge (default): missing objects are added; existing ones with different settings are
    an error naming them; nothing is removed. ``replace=True`` makes the registry equal to
    the document: settings are updated, and rights, group memberships, groups, endpoints,
    services, subsystems and members that the document does not list are removed
    (consents are never removed: revoke them explicitly). ``dry_run=True`` does all of it
    and rolls back. Every change writes its admin event as usual.

    Consents are imported by subject hash, so they only mean something under the same
    node key. Returns counts (``added``, ``updated``, ``removed``, ``unchanged``) and
    ``changes``: one ``"action object"`` line per admin event.
    """
    if data.get("format") != DOCUMENT_FORMAT:
        raise RegistryError(f"document format is {data.get('format')!r}; expected "
                            f"{DOCUMENT_FORMAT!r}")
    run = _Import(session, actor, data, replace, utc(now))
    first_event = session.execute(select(func.max(m.AdminEvent.id))).scalar_one() or 0
    with transaction(session, commit=not dry_run):
        for key, apply in (("members", run.member), ("subsystems", run.subsystem),
                           ("services", run.service), ("endpoints", run.endpoint),
                           ("groups", run.group), ("group_members", run.group_member),
                           ("rights", run.right), ("consents", run.consent)):
            run.each(key, apply)
        if replace:
            run.remove_unlisted()
        changes = [f"{e['action']} {e['object']}"
                   for e in list_admin_events(session, after_id=first_event, limit=10**9)]
    return {**run.counts, "changes": changes, "dry_run": dry_run}
