"""Changing and reading the access-rights registry (synchronous, on a SQLAlchemy Session).

Used by the ``secserver acl`` / ``secserver consent`` commands and by the demo. Every
change is one transaction (committed before the function returns, rolled back on error)
that also appends an ``admin_events`` row (actor, time, action, object, before and after
as JSON) and bumps ``registry_version``, so running servers reload and the log can chain
the event. Read functions return plain JSON-ready dicts.

Errors are :class:`RegistryError` with a code (``UnknownObject``, ``AlreadyExists``,
``InUse``, ``InvalidValue``) and a message that names what exists instead.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.paths import InvalidPath, normalise_method, normalise_pattern
from secserver.acl.snapshot import as_utc, subject_hash
from secserver.errors import InvalidIdentifier, SecServerError
from secserver.identifiers import ClientId, ServiceId, validate_part

T = TypeVar("T")
Json = dict[str, Any]
DOCUMENT_FORMAT = "secserver-registry/1"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class RegistryError(SecServerError):
    """A registry change or lookup that cannot be done; the message says what exists."""

    code = "InvalidValue"
    http_status = 400


def _unknown(message: str) -> RegistryError:
    return RegistryError(message, code="UnknownObject", http_status=404)


def _exists(message: str) -> RegistryError:
    return RegistryError(message, code="AlreadyExists", http_status=409)


def _in_use(message: str) -> RegistryError:
    return RegistryError(message, code="InUse", http_status=409)


def _choices(names: Sequence[str], what: str, limit: int = 20) -> str:
    if not names:
        return f"no {what} are registered"
    shown = ", ".join(sorted(names)[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"registered {what}: {shown}{more}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise RegistryError("times must be timezone-aware (UTC)")
    return now.astimezone(UTC)


# --- transactions and admin events -------------------------------------------------------

_OUTER = "secserver.acl.registry.transaction"


@contextmanager
def _transaction(session: Session, *, commit: bool = True) -> Iterator[None]:
    """One change = one transaction; inside another (an import) it joins the outer one."""
    if session.info.get(_OUTER):
        yield
        return
    session.info[_OUTER] = True
    try:
        yield
        if commit:
            session.commit()
        else:
            session.rollback()
    except IntegrityError as exc:
        session.rollback()
        raise RegistryError(f"the database refused the change: {exc.orig}",
                            code="AlreadyExists", http_status=409) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop(_OUTER, None)


def _event(session: Session, actor: str, now: datetime, action: str, obj: str,
           before: Any, after: Any) -> None:
    if not actor:
        raise RegistryError("the actor of a change must not be empty")
    # Bump the version first: its row lock (held until commit) serialises changes, so
    # admin_events ids are allocated in commit order and a reader that follows
    # "id > last seen" never skips an event that commits later with a smaller id.
    session.execute(update(m.RegistryVersion).where(m.RegistryVersion.id == 1)
                    .values(version=m.RegistryVersion.version + 1, changed_at=now))
    session.add(m.AdminEvent(
        at=now, actor=actor, action=action, object=obj,
        before=None if before is None else json.dumps(before, sort_keys=True,
                                                      ensure_ascii=False),
        after=None if after is None else json.dumps(after, sort_keys=True, ensure_ascii=False),
    ))
    session.flush()


def registry_version(session: Session) -> int:
    """The current change counter."""
    value = session.execute(select(m.RegistryVersion.version)
                            .where(m.RegistryVersion.id == 1)).scalar_one_or_none()
    return int(value or 0)


def list_admin_events(session: Session, *, after_id: int = 0, limit: int = 1000) -> list[Json]:
    """Admin events in id order (``id > after_id``), for the log and for review."""
    rows = session.execute(select(m.AdminEvent).where(m.AdminEvent.id > after_id)
                           .order_by(m.AdminEvent.id).limit(limit)).scalars()
    return [{"id": r.id, "at": _iso(r.at), "actor": r.actor, "action": r.action,
             "object": r.object,
             "before": None if r.before is None else json.loads(r.before),
             "after": None if r.after is None else json.loads(r.after)} for r in rows]


# --- lookups ------------------------------------------------------------------------------

def _parse_client(text: str | ClientId) -> ClientId:
    return text if isinstance(text, ClientId) else ClientId.parse(text)


def _parse_service(text: str | ServiceId) -> ServiceId:
    return text if isinstance(text, ServiceId) else ServiceId.parse(text)


def _member_text(row: m.Member) -> str:
    return f"{row.instance}/{row.member_class}/{row.member_code}"


def _member_row(session: Session, member: ClientId) -> m.Member | None:
    return session.execute(select(m.Member).where(
        m.Member.instance == member.instance, m.Member.member_class == member.member_class,
        m.Member.member_code == member.member_code)).scalar_one_or_none()


def _require_member(session: Session, member: ClientId) -> m.Member:
    row = _member_row(session, member.member)
    if row is None:
        names = [_member_text(r) for r in session.execute(select(m.Member)).scalars()]
        raise _unknown(f"member {member.member} is not registered; "
                       f"{_choices(names, 'members')}")
    return row


def _subsystem_ids(session: Session) -> dict[int, ClientId]:
    members = {r.id: r for r in session.execute(select(m.Member)).scalars()}
    return {r.id: ClientId(members[r.member_id].instance, members[r.member_id].member_class,
                           members[r.member_id].member_code, r.code)
            for r in session.execute(select(m.Subsystem)).scalars()}


def _subsystem_row(session: Session, client: ClientId) -> m.Subsystem | None:
    return session.execute(
        select(m.Subsystem).join(m.Member, m.Member.id == m.Subsystem.member_id).where(
            m.Member.instance == client.instance, m.Member.member_class == client.member_class,
            m.Member.member_code == client.member_code, m.Subsystem.code == client.subsystem,
        )).scalar_one_or_none()


def _require_subsystem(session: Session, client: ClientId) -> m.Subsystem:
    if client.subsystem is None:
        raise RegistryError(f"{client} is a member; a subsystem id has four parts "
                            "INSTANCE/CLASS/MEMBER/SUBSYSTEM")
    row = _subsystem_row(session, client)
    if row is None:
        names = [str(c) for c in _subsystem_ids(session).values()]
        raise _unknown(f"subsystem {client} is not registered; "
                       f"{_choices(names, 'subsystems')}")
    return row


def _service_ids(session: Session) -> dict[int, ServiceId]:
    subsystems = _subsystem_ids(session)
    return {r.id: ServiceId(subsystems[r.subsystem_id], r.code, r.version)
            for r in session.execute(select(m.Service)).scalars()}


def _service_row(session: Session, service: ServiceId) -> m.Service | None:
    subsystem = _subsystem_row(session, service.provider)
    if subsystem is None:
        return None
    version_clause = (m.Service.version.is_(None) if service.version is None
                      else m.Service.version == service.version)
    return session.execute(select(m.Service).where(
        m.Service.subsystem_id == subsystem.id, m.Service.code == service.code,
        version_clause)).scalar_one_or_none()


def _require_service(session: Session, service: ServiceId) -> m.Service:
    row = _service_row(session, service)
    if row is None:
        names = [str(s) for s in _service_ids(session).values()]
        raise _unknown(f"service {service} is not registered; {_choices(names, 'services')}")
    return row


def _group_row(session: Session, code: str) -> m.LocalGroup | None:
    return session.execute(select(m.LocalGroup).where(m.LocalGroup.code == code)
                           ).scalar_one_or_none()


def _require_group(session: Session, code: str) -> m.LocalGroup:
    row = _group_row(session, code)
    if row is None:
        names = list(session.execute(select(m.LocalGroup.code)).scalars())
        raise _unknown(f"local group {code!r} does not exist; {_choices(names, 'groups')}")
    return row


def _endpoint_row(session: Session, service_row: m.Service, method: str,
                  path: str) -> m.Endpoint | None:
    return session.execute(select(m.Endpoint).where(
        m.Endpoint.service_id == service_row.id, m.Endpoint.method == method,
        m.Endpoint.path == path)).scalar_one_or_none()


def _endpoint_args(method: str, path: str) -> tuple[str, str]:
    try:
        return normalise_method(method), normalise_pattern(path)
    except InvalidPath as exc:
        raise RegistryError(exc.message, code=exc.code) from exc


# --- JSON views ---------------------------------------------------------------------------

def _member_json(row: m.Member) -> Json:
    return {"id": _member_text(row), "name": row.name}


def _subsystem_json(row: m.Subsystem, client: ClientId) -> Json:
    return {"id": str(client), "local": bool(row.local), "auth": row.auth,
            "tls_cert_sha256": row.tls_cert_sha256, "allowlist": json.loads(row.allowlist)}


def _service_json(row: m.Service, service: ServiceId) -> Json:
    return {"id": str(service), "backend_url": row.backend_url, "timeout": float(row.timeout),
            "requires_consent": bool(row.requires_consent), "log_body": row.log_body}


def _endpoint_json(row: m.Endpoint, service: ServiceId) -> Json:
    return {"service": str(service), "method": row.method, "path": row.path}


# --- members ------------------------------------------------------------------------------

def _add_member(session: Session, actor: str, now: datetime, member: ClientId,
                name: str) -> Json:
    if member.subsystem is not None:
        raise RegistryError(f"{member} is a subsystem; a member id has three parts "
                            "INSTANCE/CLASS/MEMBER (add subsystems with subsystems add)")
    if _member_row(session, member) is not None:
        raise _exists(f"member {member} is already registered")
    row = m.Member(instance=member.instance, member_class=member.member_class,
                   member_code=member.member_code, name=name)
    session.add(row)
    session.flush()
    after = _member_json(row)
    _event(session, actor, now, "member.add", str(member), None, after)
    return after


def add_member(session: Session, actor: str, member: ClientId | str, name: str = "", *,
               now: datetime | None = None) -> Json:
    """Register a member (``INSTANCE/CLASS/MEMBER``)."""
    with _transaction(session):
        return _add_member(session, actor, _now(now), _parse_client(member), name)


def update_member(session: Session, actor: str, member: ClientId | str, name: str, *,
                  now: datetime | None = None) -> Json:
    """Change a member's name."""
    client = _parse_client(member)
    with _transaction(session):
        row = _require_member(session, client)
        before = _member_json(row)
        row.name = name
        session.flush()
        after = _member_json(row)
        if after != before:
            _event(session, actor, _now(now), "member.update", str(client.member), before,
                   after)
        return after


def list_members(session: Session) -> list[Json]:
    rows = session.execute(select(m.Member).order_by(
        m.Member.instance, m.Member.member_class, m.Member.member_code)).scalars()
    return [_member_json(r) for r in rows]


def show_member(session: Session, member: ClientId | str) -> Json:
    """A member with its subsystems."""
    client = _parse_client(member).member
    row = _require_member(session, client)
    subsystems = session.execute(select(m.Subsystem).where(m.Subsystem.member_id == row.id)
                                 .order_by(m.Subsystem.code)).scalars()
    ids = client.instance, client.member_class, client.member_code
    return {**_member_json(row),
            "subsystems": [_subsystem_json(s, ClientId(*ids, s.code)) for s in subsystems]}


def remove_member(session: Session, actor: str, member: ClientId | str, *,
                  now: datetime | None = None) -> Json:
    """Remove a member that has no subsystems, rights or consents left."""
    client = _parse_client(member)
    with _transaction(session):
        row = _require_member(session, client)
        if client.subsystem is not None:
            raise RegistryError(f"{client} is a subsystem; use subsystems remove")
        subsystems = list(session.execute(select(m.Subsystem.code).where(
            m.Subsystem.member_id == row.id)).scalars())
        if subsystems:
            raise _in_use(f"member {client} still has subsystems {', '.join(subsystems)}; "
                          "remove them first")
        rights = session.execute(select(func.count()).select_from(m.Right).where(
            m.Right.subject_member_id == row.id)).scalar_one()
        consents = session.execute(select(func.count()).select_from(m.Consent).where(
            m.Consent.client_member_id == row.id)).scalar_one()
        if rights or consents:
            raise _in_use(f"member {client} still holds {rights} right(s) and {consents} "
                          "consent(s); revoke them first")
        before = _member_json(row)
        session.delete(row)
        session.flush()
        _event(session, actor, _now(now), "member.remove", str(client), before, None)
        return before


# --- subsystems ---------------------------------------------------------------------------

def _check_subsystem_fields(client: ClientId, local: bool, auth: str,
                            tls_cert_sha256: str | None,
                            allowlist: Sequence[str]) -> tuple[str | None, list[str]]:
    if auth not in m.AUTH_MODES:
        raise RegistryError(f"auth {auth!r} is not valid; expected one of "
                            f"{', '.join(m.AUTH_MODES)}")
    fingerprint = None
    if tls_cert_sha256:
        fingerprint = tls_cert_sha256.replace(":", "").strip().lower()
        if not _SHA256_HEX.fullmatch(fingerprint):
            raise RegistryError(f"tls_cert_sha256 {tls_cert_sha256!r} is not a SHA-256 "
                                "fingerprint (64 hex digits, colons allowed)")
    networks = []
    for entry in allowlist:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError as exc:
            raise RegistryError(f"allowlist entry {entry!r} is not an IP address or CIDR "
                                "network") from exc
    if auth == "tls" and fingerprint is None:
        raise RegistryError(f"subsystem {client}: auth 'tls' needs tls_cert_sha256, the "
                            "SHA-256 fingerprint of the IS client certificate")
    if auth == "allowlist" and not networks:
        raise RegistryError(f"subsystem {client}: auth 'allowlist' needs at least one "
                            "allowlist address or network")
    if not local and (auth != "none" or fingerprint or networks):
        raise RegistryError(f"subsystem {client}: auth, tls_cert_sha256 and allowlist apply "
                            "only to local subsystems (registered on this node)")
    return fingerprint, networks


def _add_subsystem(session: Session, actor: str, now: datetime, client: ClientId, local: bool,
                   auth: str, tls_cert_sha256: str | None, allowlist: Sequence[str]) -> Json:
    if client.subsystem is None:
        raise RegistryError(f"{client} is a member; a subsystem id has four parts "
                            "INSTANCE/CLASS/MEMBER/SUBSYSTEM")
    member = _require_member(session, client)
    if _subsystem_row(session, client) is not None:
        raise _exists(f"subsystem {client} is already registered")
    fingerprint, networks = _check_subsystem_fields(client, local, auth, tls_cert_sha256,
                                                    allowlist)
    row = m.Subsystem(member_id=member.id, code=client.subsystem, local=local, auth=auth,
                      tls_cert_sha256=fingerprint, allowlist=json.dumps(networks))
    session.add(row)
    session.flush()
    after = _subsystem_json(row, client)
    _event(session, actor, now, "subsystem.add", str(client), None, after)
    return after


def add_subsystem(session: Session, actor: str, subsystem: ClientId | str, *,
                  local: bool = False, auth: str = "none", tls_cert_sha256: str | None = None,
                  allowlist: Sequence[str] = (), now: datetime | None = None) -> Json:
    """Register a subsystem of a registered member.

    ``local=True`` marks this node's own subsystems; ``auth`` says how their information
    system proves it may speak for them: ``tls`` (pinned certificate fingerprint),
    ``allowlist`` (source addresses/CIDRs) or ``none``.
    """
    with _transaction(session):
        return _add_subsystem(session, actor, _now(now), _parse_client(subsystem), local,
                              auth, tls_cert_sha256, allowlist)


def update_subsystem(session: Session, actor: str, subsystem: ClientId | str, *,
                     local: bool | None = None, auth: str | None = None,
                     tls_cert_sha256: str | None = None,
                     allowlist: Sequence[str] | None = None,
                     now: datetime | None = None) -> Json:
    """Change a subsystem's locality or IS authentication (unset arguments stay)."""
    client = _parse_client(subsystem)
    with _transaction(session):
        row = _require_subsystem(session, client)
        before = _subsystem_json(row, client)
        new_local = before["local"] if local is None else local
        new_auth = before["auth"] if auth is None else auth
        new_cert = before["tls_cert_sha256"] if tls_cert_sha256 is None else tls_cert_sha256
        new_list = before["allowlist"] if allowlist is None else list(allowlist)
        if not new_local and local is False and auth is None:
            new_auth, new_cert, new_list = "none", None, []
        fingerprint, networks = _check_subsystem_fields(client, new_local, new_auth,
                                                        new_cert or None, new_list)
        row.local, row.auth = new_local, new_auth
        row.tls_cert_sha256, row.allowlist = fingerprint, json.dumps(networks)
        session.flush()
        after = _subsystem_json(row, client)
        if after != before:
            _event(session, actor, _now(now), "subsystem.update", str(client), before, after)
        return after


def list_subsystems(session: Session, *, local_only: bool = False) -> list[Json]:
    ids = _subsystem_ids(session)
    rows = session.execute(select(m.Subsystem)).scalars()
    out = [_subsystem_json(r, ids[r.id]) for r in rows if r.local or not local_only]
    return sorted(out, key=lambda s: s["id"])


def show_subsystem(session: Session, subsystem: ClientId | str) -> Json:
    """A subsystem with its services, groups and the rights it holds directly."""
    client = _parse_client(subsystem)
    row = _require_subsystem(session, client)
    services = [_service_json(s, ServiceId(client, s.code, s.version)) for s in session.execute(
        select(m.Service).where(m.Service.subsystem_id == row.id)).scalars()]
    groups = list(session.execute(
        select(m.LocalGroup.code).join(m.GroupMember, m.GroupMember.group_id == m.LocalGroup.id)
        .where(m.GroupMember.subsystem_id == row.id).order_by(m.LocalGroup.code)).scalars())
    return {**_subsystem_json(row, client),
            "services": sorted(services, key=lambda s: s["id"]), "groups": groups,
            "rights": list_rights(session, subject=str(client))}


def remove_subsystem(session: Session, actor: str, subsystem: ClientId | str, *,
                     now: datetime | None = None) -> Json:
    """Remove a subsystem with no services, rights, consents or group memberships left."""
    client = _parse_client(subsystem)
    with _transaction(session):
        row = _require_subsystem(session, client)
        uses = {
            "service(s)": select(func.count()).select_from(m.Service)
            .where(m.Service.subsystem_id == row.id),
            "right(s)": select(func.count()).select_from(m.Right)
            .where(m.Right.subject_subsystem_id == row.id),
            "consent(s)": select(func.count()).select_from(m.Consent)
            .where(m.Consent.client_subsystem_id == row.id),
            "group membership(s)": select(func.count()).select_from(m.GroupMember)
            .where(m.GroupMember.subsystem_id == row.id),
        }
        found = {name: session.execute(q).scalar_one() for name, q in uses.items()}
        busy = [f"{n} {name}" for name, n in found.items() if n]
        if busy:
            raise _in_use(f"subsystem {client} still has {', '.join(busy)}; remove or revoke "
                          "them first")
        before = _subsystem_json(row, client)
        session.delete(row)
        session.flush()
        _event(session, actor, _now(now), "subsystem.remove", str(client), before, None)
        return before


# --- services and endpoints ---------------------------------------------------------------

def _check_service_fields(backend_url: str, timeout: float, log_body: str) -> None:
    parts = urlsplit(backend_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistryError(f"backend URL {backend_url!r} is not an http:// or https:// URL")
    if not timeout > 0:
        raise RegistryError(f"timeout must be greater than zero seconds, got {timeout}")
    if log_body not in m.LOG_BODY_POLICIES:
        raise RegistryError(f"log_body {log_body!r} is not valid; expected one of "
                            f"{', '.join(m.LOG_BODY_POLICIES)}")


def _add_service(session: Session, actor: str, now: datetime, service: ServiceId,
                 backend_url: str, timeout: float, requires_consent: bool,
                 log_body: str) -> Json:
    provider = _require_subsystem(session, service.provider)
    if _service_row(session, service) is not None:
        raise _exists(f"service {service} is already registered")
    _check_service_fields(backend_url, timeout, log_body)
    row = m.Service(subsystem_id=provider.id, code=service.code, version=service.version,
                    backend_url=backend_url, timeout=timeout,
                    requires_consent=requires_consent, log_body=log_body)
    session.add(row)
    session.flush()
    after = _service_json(row, service)
    _event(session, actor, now, "service.add", str(service), None, after)
    return after


def add_service(session: Session, actor: str, service: ServiceId | str, *, backend_url: str,
                timeout: float = 30.0, requires_consent: bool = False,
                log_body: str = "digest", now: datetime | None = None) -> Json:
    """Register a service of a registered subsystem, with its backend URL."""
    with _transaction(session):
        return _add_service(session, actor, _now(now), _parse_service(service), backend_url,
                            timeout, requires_consent, log_body)


def update_service(session: Session, actor: str, service: ServiceId | str, *,
                   backend_url: str | None = None, timeout: float | None = None,
                   requires_consent: bool | None = None, log_body: str | None = None,
                   now: datetime | None = None) -> Json:
    """Change a service's settings (unset arguments stay)."""
    service_id = _parse_service(service)
    with _transaction(session):
        row = _require_service(session, service_id)
        before = _service_json(row, service_id)
        if backend_url is not None:
            row.backend_url = backend_url
        if timeout is not None:
            row.timeout = timeout
        if requires_consent is not None:
            row.requires_consent = requires_consent
        if log_body is not None:
            row.log_body = log_body
        _check_service_fields(row.backend_url, row.timeout, row.log_body)
        session.flush()
        after = _service_json(row, service_id)
        if after != before:
            _event(session, actor, _now(now), "service.update", str(service_id), before, after)
        return after


def list_services(session: Session, *, provider: ClientId | str | None = None) -> list[Json]:
    ids = _service_ids(session)
    wanted = None if provider is None else _parse_client(provider)
    out = [_service_json(r, ids[r.id]) for r in session.execute(select(m.Service)).scalars()
           if wanted is None or ids[r.id].provider == wanted]
    return sorted(out, key=lambda s: s["id"])


def show_service(session: Session, service: ServiceId | str) -> Json:
    """A service with its endpoints and the rights on it."""
    service_id = _parse_service(service)
    row = _require_service(session, service_id)
    return {**_service_json(row, service_id),
            "endpoints": list_endpoints(session, service_id),
            "rights": list_rights(session, service=service_id)}


def remove_service(session: Session, actor: str, service: ServiceId | str, *,
                   now: datetime | None = None) -> Json:
    """Remove a service with no rights or consents left (its endpoints go with it)."""
    service_id = _parse_service(service)
    with _transaction(session):
        row = _require_service(session, service_id)
        rights = session.execute(select(func.count()).select_from(m.Right).where(
            m.Right.service_id == row.id)).scalar_one()
        consents = session.execute(select(func.count()).select_from(m.Consent).where(
            m.Consent.service_id == row.id)).scalar_one()
        if rights or consents:
            raise _in_use(f"service {service_id} still has {rights} right(s) and {consents} "
                          "consent(s); revoke them first")
        endpoints = list(session.execute(select(m.Endpoint).where(
            m.Endpoint.service_id == row.id).order_by(m.Endpoint.id)).scalars())
        before = {**_service_json(row, service_id),
                  "endpoints": [_endpoint_json(e, service_id) for e in endpoints]}
        for endpoint in endpoints:
            session.delete(endpoint)
        session.flush()
        session.delete(row)
        session.flush()
        _event(session, actor, _now(now), "service.remove", str(service_id), before, None)
        return before


def _add_endpoint(session: Session, actor: str, now: datetime, service: ServiceId,
                  method: str, path: str) -> Json:
    row = _require_service(session, service)
    verb, pattern = _endpoint_args(method, path)
    if _endpoint_row(session, row, verb, pattern) is not None:
        raise _exists(f"endpoint {verb} {pattern} of service {service} already exists")
    endpoint = m.Endpoint(service_id=row.id, method=verb, path=pattern)
    session.add(endpoint)
    session.flush()
    after = _endpoint_json(endpoint, service)
    _event(session, actor, now, "endpoint.add", f"{service} {verb} {pattern}", None, after)
    return after


def add_endpoint(session: Session, actor: str, service: ServiceId | str, method: str,
                 path: str, *, now: datetime | None = None) -> Json:
    """Add a REST endpoint (method or ``*``, path pattern with ``*``/``**``) to a service."""
    with _transaction(session):
        return _add_endpoint(session, actor, _now(now), _parse_service(service), method, path)


def list_endpoints(session: Session, service: ServiceId | str | None = None) -> list[Json]:
    ids = _service_ids(session)
    query = select(m.Endpoint).order_by(m.Endpoint.path, m.Endpoint.method)
    if service is not None:
        query = query.where(m.Endpoint.service_id == _require_service(
            session, _parse_service(service)).id)
    rows = session.execute(query).scalars()
    return sorted((_endpoint_json(r, ids[r.service_id]) for r in rows),
                  key=lambda e: (e["service"], e["path"], e["method"]))


def _require_endpoint(session: Session, service_row: m.Service, service: ServiceId,
                      method: str, path: str) -> m.Endpoint:
    verb, pattern = _endpoint_args(method, path)
    row = _endpoint_row(session, service_row, verb, pattern)
    if row is None:
        existing = [f"{e['method']} {e['path']}" for e in list_endpoints(session, service)]
        raise _unknown(f"endpoint {verb} {pattern} of service {service} does not exist; "
                       f"{_choices(existing, 'endpoints of this service')}")
    return row


def show_endpoint(session: Session, service: ServiceId | str, method: str,
                  path: str) -> Json:
    """One endpoint with the rights granted on it."""
    service_id = _parse_service(service)
    service_row = _require_service(session, service_id)
    row = _require_endpoint(session, service_row, service_id, method, path)
    rights = session.execute(select(m.Right).where(m.Right.endpoint_id == row.id)
                             .order_by(m.Right.id)).scalars()
    return {**_endpoint_json(row, service_id), "rights": _rights_json(session, list(rights))}


def remove_endpoint(session: Session, actor: str, service: ServiceId | str, method: str,
                    path: str, *, now: datetime | None = None) -> Json:
    """Remove an endpoint that no right refers to."""
    service_id = _parse_service(service)
    with _transaction(session):
        service_row = _require_service(session, service_id)
        row = _require_endpoint(session, service_row, service_id, method, path)
        rights = session.execute(select(func.count()).select_from(m.Right).where(
            m.Right.endpoint_id == row.id)).scalar_one()
        if rights:
            raise _in_use(f"endpoint {row.method} {row.path} of {service_id} still has "
                          f"{rights} right(s); revoke them first")
        before = _endpoint_json(row, service_id)
        session.delete(row)
        session.flush()
        _event(session, actor, _now(now), "endpoint.remove",
               f"{service_id} {before['method']} {before['path']}", before, None)
        return before


# --- local groups -------------------------------------------------------------------------

def _group_json(session: Session, row: m.LocalGroup) -> Json:
    ids = _subsystem_ids(session)
    members = sorted(str(ids[s]) for s in session.execute(
        select(m.GroupMember.subsystem_id).where(m.GroupMember.group_id == row.id)).scalars())
    return {"code": row.code, "description": row.description, "members": members}


def _add_group(session: Session, actor: str, now: datetime, code: str,
               description: str) -> Json:
    try:
        validate_part(code, "group code")
    except InvalidIdentifier as exc:
        raise RegistryError(exc.message) from exc
    if _group_row(session, code) is not None:
        raise _exists(f"local group {code!r} already exists")
    row = m.LocalGroup(code=code, description=description)
    session.add(row)
    session.flush()
    after = _group_json(session, row)
    _event(session, actor, now, "group.add", code, None, after)
    return after


def add_group(session: Session, actor: str, code: str, description: str = "", *,
              now: datetime | None = None) -> Json:
    """Create a local group (a code without '/')."""
    with _transaction(session):
        return _add_group(session, actor, _now(now), code, description)


def update_group(session: Session, actor: str, code: str, description: str, *,
                 now: datetime | None = None) -> Json:
    """Change a local group's description."""
    with _transaction(session):
        row = _require_group(session, code)
        before = _group_json(session, row)
        row.description = description
        session.flush()
        after = _group_json(session, row)
        if after != before:
            _event(session, actor, _now(now), "group.update", code, before, after)
        return after


def list_groups(session: Session) -> list[Json]:
    return [_group_json(session, r) for r in session.execute(
        select(m.LocalGroup).order_by(m.LocalGroup.code)).scalars()]


def show_group(session: Session, code: str) -> Json:
    row = _require_group(session, code)
    return {**_group_json(session, row), "rights": list_rights(session, subject=code)}


def remove_group(session: Session, actor: str, code: str, *,
                 now: datetime | None = None) -> Json:
    """Remove a local group that holds no rights (its memberships go with it)."""
    with _transaction(session):
        row = _require_group(session, code)
        rights = session.execute(select(func.count()).select_from(m.Right).where(
            m.Right.subject_group_id == row.id)).scalar_one()
        if rights:
            raise _in_use(f"local group {code!r} still holds {rights} right(s); revoke them "
                          "first")
        before = _group_json(session, row)
        for member in session.execute(select(m.GroupMember).where(
                m.GroupMember.group_id == row.id)).scalars():
            session.delete(member)
        session.flush()
        session.delete(row)
        session.flush()
        _event(session, actor, _now(now), "group.remove", code, before, None)
        return before


def _add_group_member(session: Session, actor: str, now: datetime, code: str,
                      client: ClientId) -> Json:
    group = _require_group(session, code)
    subsystem = _require_subsystem(session, client)
    before = _group_json(session, group)
    if str(client) in before["members"]:
        return before
    session.add(m.GroupMember(group_id=group.id, subsystem_id=subsystem.id))
    session.flush()
    after = _group_json(session, group)
    _event(session, actor, now, "group.member.add", f"{code} {client}", before, after)
    return after


def add_group_member(session: Session, actor: str, code: str, subsystem: ClientId | str, *,
                     now: datetime | None = None) -> Json:
    """Put a registered subsystem into a local group (idempotent)."""
    with _transaction(session):
        return _add_group_member(session, actor, _now(now), code, _parse_client(subsystem))


def remove_group_member(session: Session, actor: str, code: str, subsystem: ClientId | str, *,
                        now: datetime | None = None) -> Json:
    client = _parse_client(subsystem)
    with _transaction(session):
        group = _require_group(session, code)
        row = _require_subsystem(session, client)
        before = _group_json(session, group)
        member = session.execute(select(m.GroupMember).where(
            m.GroupMember.group_id == group.id, m.GroupMember.subsystem_id == row.id)
        ).scalar_one_or_none()
        if member is None:
            raise _unknown(f"subsystem {client} is not in local group {code!r}; "
                           f"{_choices(before['members'], 'members of the group')}")
        session.delete(member)
        session.flush()
        after = _group_json(session, group)
        _event(session, actor, _now(now), "group.member.remove", f"{code} {client}",
               before, after)
        return after


# --- rights -------------------------------------------------------------------------------

def _subject_ref(session: Session, subject: str) -> tuple[str, int]:
    """(kind, row id) for a subject text: a client id (with '/') or a local group code."""
    if "/" not in subject:
        return "group", _require_group(session, subject).id
    client = ClientId.parse(subject)
    if client.subsystem is None:
        return "member", _require_member(session, client).id
    return "subsystem", _require_subsystem(session, client).id


_SUBJECT_COLUMNS = {"subsystem": "subject_subsystem_id", "member": "subject_member_id",
                    "group": "subject_group_id"}


def _subject_filter(session: Session, subject: str) -> tuple[str, int, Any]:
    kind, row_id = _subject_ref(session, subject)
    return kind, row_id, getattr(m.Right, _SUBJECT_COLUMNS[kind]) == row_id


def _right_json(row: m.Right, subjects: Mapping[tuple[str, int], str],
                services: Mapping[int, ServiceId],
                endpoints: Mapping[int, m.Endpoint]) -> Json:
    subject_id = {"subsystem": row.subject_subsystem_id, "member": row.subject_member_id,
                  "group": row.subject_group_id}[row.subject_kind]
    assert subject_id is not None
    endpoint = None if row.endpoint_id is None else endpoints[row.endpoint_id]
    return {"id": row.id, "subject_kind": row.subject_kind,
            "subject": subjects[(row.subject_kind, subject_id)],
            "service": str(services[row.service_id]),
            "method": None if endpoint is None else endpoint.method,
            "path": None if endpoint is None else endpoint.path,
            "granted_at": _iso(row.granted_at), "granted_by": row.granted_by}


def _rights_json(session: Session, rows: Sequence[m.Right]) -> list[Json]:
    subsystem_ids = _subsystem_ids(session)
    subjects: dict[tuple[str, int], str] = {("subsystem", k): str(v)
                                            for k, v in subsystem_ids.items()}
    subjects.update({("member", r.id): _member_text(r)
                     for r in session.execute(select(m.Member)).scalars()})
    subjects.update({("group", r.id): r.code
                     for r in session.execute(select(m.LocalGroup)).scalars()})
    services = _service_ids(session)
    endpoints = {e.id: e for e in session.execute(select(m.Endpoint)).scalars()}
    return [_right_json(r, subjects, services, endpoints) for r in rows]


def _find_rights(session: Session, subject: str, service: ServiceId, method: str | None,
                 path: str | None) -> tuple[str, int, m.Service, m.Endpoint | None,
                                            list[m.Right]]:
    """The subject's rights with exactly this object (normally zero or one; two concurrent
    grants can race past the idempotency check, and revoke must remove both)."""
    kind, row_id, clause = _subject_filter(session, subject)
    service_row = _require_service(session, service)
    endpoint = None
    if method is not None or path is not None:
        if method is None or path is None:
            raise RegistryError("an endpoint right needs both a method and a path")
        endpoint = _require_endpoint(session, service_row, service, method, path)
    endpoint_clause = (m.Right.endpoint_id.is_(None) if endpoint is None
                       else m.Right.endpoint_id == endpoint.id)
    matching = list(session.execute(select(m.Right).where(
        clause, m.Right.service_id == service_row.id, endpoint_clause)
        .order_by(m.Right.id)).scalars())
    return kind, row_id, service_row, endpoint, matching


def _grant(session: Session, actor: str, now: datetime, subject: str, service: ServiceId,
           method: str | None, path: str | None, granted: tuple[datetime, str] | None = None,
           ) -> tuple[Json, bool]:
    kind, row_id, service_row, endpoint, existing = _find_rights(session, subject, service,
                                                                 method, path)
    if existing:
        return _rights_json(session, existing[:1])[0], False
    row = m.Right(subject_kind=kind, service_id=service_row.id,
                  endpoint_id=None if endpoint is None else endpoint.id,
                  granted_at=granted[0] if granted else now,
                  granted_by=granted[1] if granted else actor, **{_SUBJECT_COLUMNS[kind]: row_id})
    session.add(row)
    session.flush()
    after = _rights_json(session, [row])[0]
    target = str(service) if endpoint is None else f"{service} {endpoint.method} {endpoint.path}"
    _event(session, actor, now, "right.grant", f"{subject} -> {target}", None, after)
    return after, True


def grant(session: Session, actor: str, subject: str, service: ServiceId | str, *,
          method: str | None = None, path: str | None = None,
          now: datetime | None = None) -> tuple[Json, bool]:
    """Grant ``subject`` access to a service, or to one of its endpoints. Idempotent.

    ``subject`` is a subsystem id (4 parts), a member id (3 parts: all its subsystems) or a
    local group code. The endpoint (``method`` and ``path``) must be registered. Returns the
    right and whether it was created (False: it existed; nothing changed, no event).
    """
    with _transaction(session):
        return _grant(session, actor, _now(now), subject, _parse_service(service), method,
                      path)


def revoke(session: Session, actor: str, subject: str, service: ServiceId | str, *,
           method: str | None = None, path: str | None = None,
           now: datetime | None = None) -> Json:
    """Revoke a right granted with the same arguments."""
    service_id = _parse_service(service)
    with _transaction(session):
        _kind, _row_id, _service_row, endpoint, existing = _find_rights(
            session, subject, service_id, method, path)
        if not existing:
            held = [f"{r['service']}" + (f" {r['method']} {r['path']}" if r["method"] else "")
                    for r in list_rights(session, subject=subject, service=service_id)]
            what = "the whole service" if endpoint is None else \
                f"endpoint {endpoint.method} {endpoint.path}"
            raise _unknown(f"{subject} holds no right on {what} of {service_id}; "
                           f"{_choices(held, 'rights of this subject on the service')}")
        before = _rights_json(session, existing[:1])[0]
        for row in existing:
            session.delete(row)
        session.flush()
        target = str(service_id) if endpoint is None else \
            f"{service_id} {endpoint.method} {endpoint.path}"
        _event(session, actor, _now(now), "right.revoke", f"{subject} -> {target}",
               before, None)
        return before


def show_right(session: Session, right_id: int) -> Json:
    """One right by id."""
    row = session.get(m.Right, right_id)
    if row is None:
        ids = [str(i) for i in session.execute(select(m.Right.id).order_by(m.Right.id)
                                               .limit(20)).scalars()]
        raise _unknown(f"right {right_id} does not exist; {_choices(ids, 'right ids')}")
    return _rights_json(session, [row])[0]


def list_rights(session: Session, *, subject: str | None = None,
                service: ServiceId | str | None = None) -> list[Json]:
    """Rights, optionally only those held directly by ``subject`` and/or on ``service``."""
    query = select(m.Right).order_by(m.Right.id)
    if subject is not None:
        query = query.where(_subject_filter(session, subject)[2])
    if service is not None:
        query = query.where(m.Right.service_id == _require_service(
            session, _parse_service(service)).id)
    return _rights_json(session, list(session.execute(query).scalars()))


# --- consents -----------------------------------------------------------------------------

def _consent_json(row: m.Consent, clients: Mapping[int, ClientId],
                  members: Mapping[int, str], services: Mapping[int, ServiceId]) -> Json:
    client = (str(clients[row.client_subsystem_id]) if row.client_subsystem_id is not None
              else members[row.client_member_id])
    return {"id": row.id, "subject_hash": row.subject_hash, "client": client,
            "service": str(services[row.service_id]), "purpose": row.purpose,
            "valid_from": _iso(row.valid_from), "valid_until": _iso(row.valid_until),
            "revoked_at": _iso(row.revoked_at), "recorded_at": _iso(row.recorded_at),
            "recorded_by": row.recorded_by}


def _consents_json(session: Session, rows: Sequence[m.Consent]) -> list[Json]:
    members = {r.id: _member_text(r) for r in session.execute(select(m.Member)).scalars()}
    return [_consent_json(r, _subsystem_ids(session), members, _service_ids(session))
            for r in rows]


def _record_consent(session: Session, actor: str, now: datetime, hashed: str,
                    client: ClientId, service: ServiceId, purpose: str,
                    valid_from: datetime, valid_until: datetime | None,
                    revoked_at: datetime | None = None,
                    recorded: tuple[datetime, str] | None = None) -> Json:
    if not _SHA256_HEX.fullmatch(hashed):
        raise RegistryError("a consent's subject hash must be 64 lower-case hex digits")
    if not purpose.strip():
        raise RegistryError("a consent needs a purpose (what the data is used for)")
    member = _require_member(session, client)
    subsystem = _require_subsystem(session, client) if client.subsystem is not None else None
    service_row = _require_service(session, service)
    start = _now(valid_from)
    end = None if valid_until is None else _now(valid_until)
    if end is not None and end <= start:
        raise RegistryError(f"consent valid_until {end.isoformat()} is not after valid_from "
                            f"{start.isoformat()}")
    row = m.Consent(subject_hash=hashed, client_member_id=member.id,
                    client_subsystem_id=None if subsystem is None else subsystem.id,
                    service_id=service_row.id, purpose=purpose, valid_from=start,
                    valid_until=end, revoked_at=revoked_at,
                    recorded_at=recorded[0] if recorded else now,
                    recorded_by=recorded[1] if recorded else actor)
    session.add(row)
    session.flush()
    after = _consents_json(session, [row])[0]
    _event(session, actor, now, "consent.record", f"consent {row.id}", None, after)
    return after


def record_consent(session: Session, actor: str, subject_key: bytes, data_subject: str,
                   client: ClientId | str, service: ServiceId | str, purpose: str, *,
                   valid_from: datetime | None = None, valid_until: datetime | None = None,
                   now: datetime | None = None) -> Json:
    """Record a data subject's consent for a client (subsystem, or whole member) on a service.

    Only the keyed hash of ``data_subject`` is stored. ``valid_from`` defaults to ``now``;
    ``valid_until`` None means until revoked.
    """
    if not data_subject:
        raise RegistryError("the data subject must not be empty")
    at = _now(now)
    with _transaction(session):
        return _record_consent(session, actor, at, subject_hash(subject_key, data_subject),
                               _parse_client(client), _parse_service(service), purpose,
                               valid_from or at, valid_until)


def revoke_consent(session: Session, actor: str, consent_id: int, *,
                   now: datetime | None = None) -> Json:
    """Revoke one consent by id (it stays on record with ``revoked_at``)."""
    at = _now(now)
    with _transaction(session):
        row = session.get(m.Consent, consent_id)
        if row is None:
            ids = list(session.execute(select(m.Consent.id).where(
                m.Consent.revoked_at.is_(None)).order_by(m.Consent.id).limit(20)).scalars())
            raise _unknown(f"consent {consent_id} does not exist; "
                           f"{_choices([str(i) for i in ids], 'unrevoked consents')}")
        before = _consents_json(session, [row])[0]
        if row.revoked_at is not None:
            raise RegistryError(f"consent {consent_id} was already revoked at "
                                f"{before['revoked_at']}", code="AlreadyRevoked")
        row.revoked_at = at
        session.flush()
        after = _consents_json(session, [row])[0]
        _event(session, actor, at, "consent.revoke", f"consent {consent_id}", before, after)
        return after


def revoke_consents(session: Session, actor: str, subject_key: bytes, data_subject: str, *,
                    client: ClientId | str | None = None,
                    service: ServiceId | str | None = None,
                    now: datetime | None = None) -> list[Json]:
    """Revoke every unrevoked consent of a data subject (optionally one client/service)."""
    ids = [c["id"] for c in list_consents(session, subject_key=subject_key,
                                          data_subject=data_subject, client=client,
                                          service=service) if c["revoked_at"] is None]
    if not ids:
        raise _unknown("the data subject has no unrevoked consent matching the filters")
    with _transaction(session):  # all or none
        return [revoke_consent(session, actor, i, now=now) for i in ids]


def list_consents(session: Session, *, subject_key: bytes | None = None,
                  data_subject: str | None = None, client: ClientId | str | None = None,
                  service: ServiceId | str | None = None,
                  active_at: datetime | None = None) -> list[Json]:
    """Consents filtered by data subject (needs the key), client, service, or activity."""
    query = select(m.Consent).order_by(m.Consent.id)
    if data_subject is not None:
        if subject_key is None:
            raise RegistryError("filtering by data subject needs the node's data-subject key "
                                "([acl] subject_key_file)")
        query = query.where(m.Consent.subject_hash == subject_hash(subject_key, data_subject))
    if client is not None:
        client_id = _parse_client(client)
        query = query.where(m.Consent.client_member_id == _require_member(session,
                                                                          client_id).id)
        if client_id.subsystem is not None:
            query = query.where(m.Consent.client_subsystem_id == _require_subsystem(
                session, client_id).id)
    if service is not None:
        query = query.where(m.Consent.service_id == _require_service(
            session, _parse_service(service)).id)
    rows = list(session.execute(query).scalars())
    if active_at is not None:
        at = _now(active_at)
        rows = [r for r in rows if (r.revoked_at is None or as_utc(r.revoked_at) > at)
                and as_utc(r.valid_from) <= at
                and (r.valid_until is None or at < as_utc(r.valid_until))]
    return _consents_json(session, rows)


# --- export / import ----------------------------------------------------------------------

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


def _items(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = data.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise RegistryError(f"document: {key!r} must be a list of tables")
    return items


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
        method, path = _endpoint_args(method, path)
    return subject, str(_parse_service(service)), method, path


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
    at = _now(now)
    counts = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0}

    def count(created: bool) -> None:
        counts["added" if created else "unchanged"] += 1

    def settle(existing: Json, wanted: Json, update: Callable[[], object]) -> None:
        diff = [k for k in wanted if existing.get(k) != wanted[k]]
        if not diff:
            counts["unchanged"] += 1
            return
        if not replace:
            found = ", ".join(f"{k}={existing.get(k)!r}" for k in diff)
            raise RegistryError(f"already registered with different settings ({found}); "
                                "import with replace to change it",
                                code="AlreadyExists", http_status=409)
        update()
        counts["updated"] += 1

    first_event = session.execute(select(func.max(m.AdminEvent.id))).scalar_one() or 0
    with _transaction(session, commit=not dry_run):
        wanted_members: set[str] = set()
        for i, item in enumerate(_items(data, "members")):
            with _at(f"members[{i}]"):
                member = ClientId.parse(_field(item, "id", str))
                name = _field(item, "name", str, "")
                wanted_members.add(str(member))
                member_row = _member_row(session, member)
                if member_row is None:
                    _add_member(session, actor, at, member, name)
                    count(True)
                else:
                    settle(_member_json(member_row), {"name": name},
                           partial(update_member, session, actor, member, name, now=at))
        wanted_subsystems: set[str] = set()
        for i, item in enumerate(_items(data, "subsystems")):
            with _at(f"subsystems[{i}]"):
                client = ClientId.parse(_field(item, "id", str))
                wanted_subsystems.add(str(client))
                fields: Json = {
                    "local": _field(item, "local", bool, False),
                    "auth": _field(item, "auth", str, "none"),
                    "tls_cert_sha256": _field(item, "tls_cert_sha256", str, None),
                    "allowlist": list(_field(item, "allowlist", list, [])),
                }
                row = _subsystem_row(session, client)
                if row is None:
                    _add_subsystem(session, actor, at, client, **fields)
                    count(True)
                else:
                    settle(_subsystem_json(row, client), fields,
                           partial(update_subsystem, session, actor, client, now=at, **fields))
        wanted_services: set[str] = set()
        for i, item in enumerate(_items(data, "services")):
            with _at(f"services[{i}]"):
                service = ServiceId.parse(_field(item, "id", str))
                wanted_services.add(str(service))
                fields = {
                    "backend_url": _field(item, "backend_url", str),
                    "timeout": _field(item, "timeout", float, 30.0),
                    "requires_consent": _field(item, "requires_consent", bool, False),
                    "log_body": _field(item, "log_body", str, "digest"),
                }
                service_row = _service_row(session, service)
                if service_row is None:
                    _add_service(session, actor, at, service, **fields)
                    count(True)
                else:
                    settle(_service_json(service_row, service), fields,
                           partial(update_service, session, actor, service, now=at, **fields))
        wanted_endpoints: set[tuple[str, str, str]] = set()
        for i, item in enumerate(_items(data, "endpoints")):
            with _at(f"endpoints[{i}]"):
                service = ServiceId.parse(_field(item, "service", str))
                verb, pattern = _endpoint_args(_field(item, "method", str),
                                               _field(item, "path", str))
                wanted_endpoints.add((str(service), verb, pattern))
                new = _endpoint_row(session, _require_service(session, service), verb,
                                    pattern) is None
                if new:
                    _add_endpoint(session, actor, at, service, verb, pattern)
                count(new)
        wanted_groups: set[str] = set()
        for i, item in enumerate(_items(data, "groups")):
            with _at(f"groups[{i}]"):
                code = _field(item, "code", str)
                description = _field(item, "description", str, "")
                wanted_groups.add(code)
                group_row = _group_row(session, code)
                if group_row is None:
                    _add_group(session, actor, at, code, description)
                    count(True)
                else:
                    settle({"description": group_row.description}, {"description": description},
                           partial(update_group, session, actor, code, description, now=at))
        wanted_memberships: set[tuple[str, str]] = set()
        for i, item in enumerate(_items(data, "group_members")):
            with _at(f"group_members[{i}]"):
                code = _field(item, "group", str)
                client = ClientId.parse(_field(item, "subsystem", str))
                wanted_memberships.add((code, str(client)))
                new = str(client) not in _group_json(session,
                                                     _require_group(session, code))["members"]
                if new:
                    _add_group_member(session, actor, at, code, client)
                count(new)
        wanted_rights: set[tuple[str, str, str | None, str | None]] = set()
        for i, item in enumerate(_items(data, "rights")):
            with _at(f"rights[{i}]"):
                subject = _field(item, "subject", str)
                service = ServiceId.parse(_field(item, "service", str))
                method = _field(item, "method", str, None)
                path = _field(item, "path", str, None)
                wanted_rights.add(_right_key(subject, str(service), method, path))
                _right, created = _grant(
                    session, actor, at, subject, service, method, path,
                    (_time_field(item, "granted_at") or at,
                     _field(item, "granted_by", str, actor)))
                count(created)
        for i, item in enumerate(_items(data, "consents")):
            with _at(f"consents[{i}]"):
                hashed = _field(item, "subject_hash", str)
                client = ClientId.parse(_field(item, "client", str))
                service = ServiceId.parse(_field(item, "service", str))
                purpose = _field(item, "purpose", str)
                valid_from = _time_field(item, "valid_from") or at
                same = [c for c in _consents_json(session, list(session.execute(
                    select(m.Consent).where(m.Consent.subject_hash == hashed)).scalars()))
                    if (c["client"], c["service"], c["purpose"], c["valid_from"])
                    == (str(client), str(service), purpose, _iso(valid_from))]
                if not same:
                    _record_consent(session, actor, at, hashed, client, service, purpose,
                                    valid_from, _time_field(item, "valid_until"),
                                    _time_field(item, "revoked_at"),
                                    (_time_field(item, "recorded_at") or at,
                                     _field(item, "recorded_by", str, actor)))
                count(not same)
        if replace:
            for right in list_rights(session):
                if _right_key(right["subject"], right["service"], right["method"],
                              right["path"]) not in wanted_rights:
                    with _at(f"removing right {right['id']}"):
                        revoke(session, actor, right["subject"], right["service"],
                               method=right["method"], path=right["path"], now=at)
                    counts["removed"] += 1
            for group in list_groups(session):
                for subsystem in group["members"]:
                    if (group["code"], subsystem) not in wanted_memberships:
                        with _at(f"removing {subsystem} from group {group['code']}"):
                            remove_group_member(session, actor, group["code"], subsystem,
                                                now=at)
                        counts["removed"] += 1
                if group["code"] not in wanted_groups:
                    with _at(f"removing group {group['code']}"):
                        remove_group(session, actor, group["code"], now=at)
                    counts["removed"] += 1
            for endpoint in list_endpoints(session):
                key = (endpoint["service"], endpoint["method"], endpoint["path"])
                if key not in wanted_endpoints:
                    with _at(f"removing endpoint {' '.join(key)}"):
                        remove_endpoint(session, actor, *key, now=at)
                    counts["removed"] += 1
            removals: list[tuple[list[Json], set[str], Callable[..., Json], str]] = [
                (list_services(session), wanted_services, remove_service, "service"),
                (list_subsystems(session), wanted_subsystems, remove_subsystem, "subsystem"),
                (list_members(session), wanted_members, remove_member, "member"),
            ]
            for existing_items, wanted, remove, what in removals:
                for existing in existing_items:
                    if existing["id"] not in wanted:
                        with _at(f"removing {what} {existing['id']}"):
                            remove(session, actor, existing["id"], now=at)
                        counts["removed"] += 1
        changes = [f"{e['action']} {e['object']}"
                   for e in list_admin_events(session, after_id=first_event, limit=10**9)]
    return {**counts, "changes": changes, "dry_run": dry_run}
