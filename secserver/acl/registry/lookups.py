"""Finding registry rows by identifier, and their JSON views.

``find_*`` return None when absent; ``require_*`` raise :class:`RegistryError` naming what
is registered instead.
"""

from __future__ import annotations

import json

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.paths import InvalidPath, normalise_method, normalise_pattern
from secserver.acl.registry.changes import Json, RegistryError, choices, in_use, unknown
from secserver.db.base import Base
from secserver.identifiers import ClientId, ServiceId


def parse_client(text: str | ClientId) -> ClientId:
    return text if isinstance(text, ClientId) else ClientId.parse(text)


def parse_service(text: str | ServiceId) -> ServiceId:
    return text if isinstance(text, ServiceId) else ServiceId.parse(text)


def endpoint_args(method: str, path: str) -> tuple[str, str]:
    """The normalised method and path pattern of an endpoint."""
    try:
        return normalise_method(method), normalise_pattern(path)
    except InvalidPath as exc:
        raise RegistryError(exc.message, code=exc.code) from exc


def count(session: Session, model: type[Base], *where: ColumnElement[bool]) -> int:
    """How many rows of ``model`` match ``where`` (to refuse removing what is in use)."""
    return int(session.execute(select(func.count()).select_from(model).where(*where))
               .scalar_one())


def refuse_kept_consents(session: Session, what: str, *where: ColumnElement[bool]) -> None:
    """Refuse removing ``what`` (e.g. ``member X``) while consents match ``where``: they stay
    on record as evidence, also once revoked, and refer to the client and service."""
    total = count(session, m.Consent, *where)
    if not total:
        return
    unrevoked = count(session, m.Consent, *where, m.Consent.revoked_at.is_(None))
    raise in_use(f"{what} has {total} consent(s) ({unrevoked} unrevoked), and consents stay "
                 "on record as evidence even when revoked, so it cannot be removed")


def require_subsystem_id(client: ClientId) -> None:
    if client.subsystem is None:
        raise RegistryError(f"{client} is a member; a subsystem id has four parts "
                            "INSTANCE/CLASS/MEMBER/SUBSYSTEM")


# --- members ------------------------------------------------------------------------------

def member_text(row: m.Member) -> str:
    return f"{row.instance}/{row.member_class}/{row.member_code}"


def member_json(row: m.Member) -> Json:
    return {"id": member_text(row), "name": row.name}


def find_member(session: Session, member: ClientId) -> m.Member | None:
    return session.execute(select(m.Member).where(
        m.Member.instance == member.instance, m.Member.member_class == member.member_class,
        m.Member.member_code == member.member_code)).scalar_one_or_none()


def require_member(session: Session, member: ClientId) -> m.Member:
    row = find_member(session, member.member)
    if row is None:
        names = [member_text(r) for r in session.execute(select(m.Member)).scalars()]
        raise unknown(f"member {member.member} is not registered; "
                      f"{choices(names, 'members')}")
    return row


# --- subsystems ---------------------------------------------------------------------------

def subsystem_json(row: m.Subsystem, client: ClientId) -> Json:
    return {"id": str(client), "local": bool(row.local), "auth": row.auth,
            "tls_cert_sha256": row.tls_cert_sha256, "allowlist": json.loads(row.allowlist)}


def subsystem_ids(session: Session) -> dict[int, ClientId]:
    """Every subsystem's id, by row id."""
    members = {r.id: r for r in session.execute(select(m.Member)).scalars()}
    return {r.id: ClientId(members[r.member_id].instance, members[r.member_id].member_class,
                           members[r.member_id].member_code, r.code)
            for r in session.execute(select(m.Subsystem)).scalars()}


def find_subsystem(session: Session, client: ClientId) -> m.Subsystem | None:
    return session.execute(
        select(m.Subsystem).join(m.Member, m.Member.id == m.Subsystem.member_id).where(
            m.Member.instance == client.instance, m.Member.member_class == client.member_class,
            m.Member.member_code == client.member_code, m.Subsystem.code == client.subsystem,
        )).scalar_one_or_none()


def require_subsystem(session: Session, client: ClientId) -> m.Subsystem:
    require_subsystem_id(client)
    row = find_subsystem(session, client)
    if row is None:
        names = [str(c) for c in subsystem_ids(session).values()]
        raise unknown(f"subsystem {client} is not registered; "
                      f"{choices(names, 'subsystems')}")
    return row


# --- services and endpoints ---------------------------------------------------------------

def service_json(row: m.Service, service: ServiceId) -> Json:
    return {"id": str(service), "backend_url": row.backend_url, "timeout": float(row.timeout),
            "requires_consent": bool(row.requires_consent), "log_body": row.log_body}


def endpoint_json(row: m.Endpoint, service: ServiceId) -> Json:
    return {"service": str(service), "method": row.method, "path": row.path}


def service_ids(session: Session) -> dict[int, ServiceId]:
    """Every service's id, by row id."""
    subsystems = subsystem_ids(session)
    return {r.id: ServiceId(subsystems[r.subsystem_id], r.code, r.version)
            for r in session.execute(select(m.Service)).scalars()}


def find_service(session: Session, service: ServiceId) -> m.Service | None:
    subsystem = find_subsystem(session, service.provider)
    if subsystem is None:
        return None
    version_clause = (m.Service.version.is_(None) if service.version is None
                      else m.Service.version == service.version)
    return session.execute(select(m.Service).where(
        m.Service.subsystem_id == subsystem.id, m.Service.code == service.code,
        version_clause)).scalar_one_or_none()


def require_service(session: Session, service: ServiceId) -> m.Service:
    row = find_service(session, service)
    if row is None:
        names = [str(s) for s in service_ids(session).values()]
        raise unknown(f"service {service} is not registered; {choices(names, 'services')}")
    return row


def find_endpoint(session: Session, service_row: m.Service, method: str,
                  path: str) -> m.Endpoint | None:
    return session.execute(select(m.Endpoint).where(
        m.Endpoint.service_id == service_row.id, m.Endpoint.method == method,
        m.Endpoint.path == path)).scalar_one_or_none()


def require_endpoint(session: Session, service_row: m.Service, service: ServiceId,
                     method: str, path: str) -> m.Endpoint:
    verb, pattern = endpoint_args(method, path)
    row = find_endpoint(session, service_row, verb, pattern)
    if row is None:
        existing = [f"{e.method} {e.path}" for e in session.execute(
            select(m.Endpoint).where(m.Endpoint.service_id == service_row.id)).scalars()]
        raise unknown(f"endpoint {verb} {pattern} of service {service} does not exist; "
                      f"{choices(existing, 'endpoints of this service')}")
    return row


# --- local groups -------------------------------------------------------------------------

def find_group(session: Session, code: str) -> m.LocalGroup | None:
    return session.execute(select(m.LocalGroup).where(m.LocalGroup.code == code)
                           ).scalar_one_or_none()


def require_group(session: Session, code: str) -> m.LocalGroup:
    row = find_group(session, code)
    if row is None:
        names = list(session.execute(select(m.LocalGroup.code)).scalars())
        raise unknown(f"local group {code!r} does not exist; {choices(names, 'groups')}")
    return row


def group_json(session: Session, row: m.LocalGroup) -> Json:
    ids = subsystem_ids(session)
    members = sorted(str(ids[s]) for s in session.execute(
        select(m.GroupMember.subsystem_id).where(m.GroupMember.group_id == row.id)).scalars())
    return {"code": row.code, "description": row.description, "members": members}
