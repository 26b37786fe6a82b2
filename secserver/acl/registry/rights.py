"""Access rights: a subject (subsystem, whole member or local group) on a whole service or
on one of its endpoints. Grants are idempotent, also when two of them race: the database
holds one row per right (``rights.identity_key`` is unique), and the grant that loses
reports the winner's right as already granted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
    Json,
    RegistryError,
    choices,
    delete_row,
    idempotent,
    insert,
    iso,
    record_event,
    transaction,
    unknown,
    utc,
)
from secserver.acl.registry.lookups import (
    member_text,
    parse_service,
    require_endpoint,
    require_group,
    require_member,
    require_service,
    require_subsystem,
    service_ids,
    subsystem_ids,
)
from secserver.identifiers import ClientId, ServiceId

_SUBJECT_COLUMNS = {"subsystem": "subject_subsystem_id", "member": "subject_member_id",
                    "group": "subject_group_id"}


def _subject_ref(session: Session, subject: str) -> tuple[str, int]:
    """(kind, row id) for a subject text: a client id (with '/') or a local group code."""
    if "/" not in subject:
        return "group", require_group(session, subject).id
    client = ClientId.parse(subject)
    if client.subsystem is None:
        return "member", require_member(session, client).id
    return "subsystem", require_subsystem(session, client).id


def _subject_filter(session: Session, subject: str) -> tuple[str, int, Any]:
    kind, row_id = _subject_ref(session, subject)
    return kind, row_id, getattr(m.Right, _SUBJECT_COLUMNS[kind]) == row_id


def _right_json(row: m.Right, subjects: Mapping[tuple[str, int], str],
                services: Mapping[int, ServiceId],
                endpoints: Mapping[int, m.Endpoint]) -> Json:
    subject_id = getattr(row, _SUBJECT_COLUMNS[row.subject_kind])
    endpoint = None if row.endpoint_id is None else endpoints[row.endpoint_id]
    return {"id": row.id, "subject_kind": row.subject_kind,
            "subject": subjects[(row.subject_kind, subject_id)],
            "service": str(services[row.service_id]),
            "method": None if endpoint is None else endpoint.method,
            "path": None if endpoint is None else endpoint.path,
            "granted_at": iso(row.granted_at), "granted_by": row.granted_by}


def rights_json(session: Session, rows: Sequence[m.Right]) -> list[Json]:
    """JSON views of rights (subject and object as identifiers)."""
    subjects: dict[tuple[str, int], str] = {("subsystem", k): str(v)
                                            for k, v in subsystem_ids(session).items()}
    subjects.update({("member", r.id): member_text(r)
                     for r in session.execute(select(m.Member)).scalars()})
    subjects.update({("group", r.id): r.code
                     for r in session.execute(select(m.LocalGroup)).scalars()})
    services = service_ids(session)
    endpoints = {e.id: e for e in session.execute(select(m.Endpoint)).scalars()}
    return [_right_json(r, subjects, services, endpoints) for r in rows]


def _find_right(session: Session, subject: str, service: ServiceId, method: str | None,
                path: str | None) -> tuple[str, int, m.Service, m.Endpoint | None,
                                           m.Right | None]:
    """The subject's right with exactly this object, if any, and what identifies it."""
    kind, row_id, clause = _subject_filter(session, subject)
    service_row = require_service(session, service)
    endpoint = None
    if method is not None or path is not None:
        if method is None or path is None:
            raise RegistryError("an endpoint right needs both a method and a path")
        endpoint = require_endpoint(session, service_row, service, method, path)
    endpoint_clause = (m.Right.endpoint_id.is_(None) if endpoint is None
                       else m.Right.endpoint_id == endpoint.id)
    right = session.execute(select(m.Right).where(
        clause, m.Right.service_id == service_row.id, endpoint_clause)).scalar_one_or_none()
    return kind, row_id, service_row, endpoint, right


def _target(service: ServiceId, endpoint: m.Endpoint | None) -> str:
    return str(service) if endpoint is None else f"{service} {endpoint.method} {endpoint.path}"


def _grant(session: Session, actor: str, now: datetime, subject: str, service: ServiceId,
           method: str | None, path: str | None, granted_at: datetime | None,
           granted_by: str | None) -> tuple[Json, bool]:
    kind, row_id, service_row, endpoint, existing = _find_right(session, subject, service,
                                                                method, path)
    if existing is not None:
        return rights_json(session, [existing])[0], False
    target = f"{subject} -> {_target(service, endpoint)}"
    row = m.Right(subject_kind=kind, service_id=service_row.id,
                  endpoint_id=None if endpoint is None else endpoint.id,
                  granted_at=now if granted_at is None else granted_at,
                  granted_by=actor if granted_by is None else granted_by,
                  **{_SUBJECT_COLUMNS[kind]: row_id})
    insert(session, row, f"the right {target} was granted")
    after = rights_json(session, [row])[0]
    record_event(session, actor, now, "right.grant", target, None, after)
    return after, True


def grant(session: Session, actor: str, subject: str, service: ServiceId | str, *,
          method: str | None = None, path: str | None = None, now: datetime | None = None,
          granted_at: datetime | None = None, granted_by: str | None = None,
          ) -> tuple[Json, bool]:
    """Grant ``subject`` access to a service, or to one of its endpoints. Idempotent.

    ``subject`` is a subsystem id (4 parts), a member id (3 parts: all its subsystems) or a
    local group code. The endpoint (``method`` and ``path``) must be registered. Returns the
    right and whether it was created (False: it existed, possibly granted a moment ago by a
    concurrent change; nothing changed, no event). ``granted_at``/``granted_by`` keep an
    imported right's origin (default: ``now`` and ``actor``).
    """
    at, service_id = utc(now), parse_service(service)
    return idempotent(session, partial(_grant, session, actor, at, subject, service_id, method,
                                       path, granted_at, granted_by))


def revoke(session: Session, actor: str, subject: str, service: ServiceId | str, *,
           method: str | None = None, path: str | None = None,
           now: datetime | None = None) -> Json:
    """Revoke a right granted with the same arguments."""
    service_id = parse_service(service)
    with transaction(session):
        _kind, _row_id, _service_row, endpoint, existing = _find_right(
            session, subject, service_id, method, path)
        if existing is None:
            held = [f"{r['service']}" + (f" {r['method']} {r['path']}" if r["method"] else "")
                    for r in list_rights(session, subject=subject, service=service_id)]
            what = "the whole service" if endpoint is None else \
                f"endpoint {endpoint.method} {endpoint.path}"
            raise unknown(f"{subject} holds no right on {what} of {service_id}; "
                          f"{choices(held, 'rights of this subject on the service')}")
        return delete_row(session, actor, now, "right.revoke",
                          f"{subject} -> {_target(service_id, endpoint)}", existing,
                          rights_json(session, [existing])[0])


def show_right(session: Session, right_id: int) -> Json:
    """One right by id."""
    row = session.get(m.Right, right_id)
    if row is None:
        ids = list(session.execute(select(m.Right.id).order_by(m.Right.id).limit(20)).scalars())
        raise unknown(f"right {right_id} does not exist; {choices(ids, 'right ids')}")
    return rights_json(session, [row])[0]


def list_rights(session: Session, *, subject: str | None = None,
                service: ServiceId | str | None = None) -> list[Json]:
    """Rights, optionally only those held directly by ``subject`` and/or on ``service``."""
    query = select(m.Right).order_by(m.Right.id)
    if subject is not None:
        query = query.where(_subject_filter(session, subject)[2])
    if service is not None:
        query = query.where(m.Right.service_id == require_service(
            session, parse_service(service)).id)
    return rights_json(session, list(session.execute(query).scalars()))
