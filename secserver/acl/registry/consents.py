"""Data subjects' consents: for a client (subsystem, or whole member) on a service, with a
purpose and a validity period. The data subject is stored only as its keyed hash."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
    SHA256_HEX,
    Json,
    RegistryError,
    choices,
    iso,
    record_event,
    transaction,
    unknown,
    utc,
)
from secserver.acl.registry.lookups import (
    member_text,
    parse_client,
    parse_service,
    require_member,
    require_service,
    require_subsystem,
    service_ids,
    subsystem_ids,
)
from secserver.acl.snapshot import as_utc, subject_hash
from secserver.identifiers import ClientId, ServiceId


def _consent_json(row: m.Consent, clients: Mapping[int, ClientId],
                  members: Mapping[int, str], services: Mapping[int, ServiceId]) -> Json:
    client = (str(clients[row.client_subsystem_id]) if row.client_subsystem_id is not None
              else members[row.client_member_id])
    return {"id": row.id, "subject_hash": row.subject_hash, "client": client,
            "service": str(services[row.service_id]), "purpose": row.purpose,
            "valid_from": iso(row.valid_from), "valid_until": iso(row.valid_until),
            "revoked_at": iso(row.revoked_at), "recorded_at": iso(row.recorded_at),
            "recorded_by": row.recorded_by}


def consents_json(session: Session, rows: Sequence[m.Consent]) -> list[Json]:
    """JSON views of consents (client and service as identifiers)."""
    members = {r.id: member_text(r) for r in session.execute(select(m.Member)).scalars()}
    clients, services = subsystem_ids(session), service_ids(session)
    return [_consent_json(r, clients, members, services) for r in rows]


def record_hashed_consent(session: Session, actor: str, now: datetime, hashed: str,
                          client: ClientId, service: ServiceId, purpose: str,
                          valid_from: datetime, valid_until: datetime | None,
                          revoked_at: datetime | None = None,
                          recorded: tuple[datetime, str] | None = None) -> Json:
    """Record a consent by the data subject's keyed hash (as an import brings it)."""
    if not SHA256_HEX.fullmatch(hashed):
        raise RegistryError("a consent's subject hash must be 64 lower-case hex digits")
    if not purpose.strip():
        raise RegistryError("a consent needs a purpose (what the data is used for)")
    with transaction(session):
        member = require_member(session, client)
        subsystem = require_subsystem(session, client) if client.subsystem is not None else None
        service_row = require_service(session, service)
        start = utc(valid_from)
        end = None if valid_until is None else utc(valid_until)
        if end is not None and end <= start:
            raise RegistryError(f"consent valid_until {end.isoformat()} is not after "
                                f"valid_from {start.isoformat()}")
        row = m.Consent(subject_hash=hashed, client_member_id=member.id,
                        client_subsystem_id=None if subsystem is None else subsystem.id,
                        service_id=service_row.id, purpose=purpose, valid_from=start,
                        valid_until=end, revoked_at=revoked_at,
                        recorded_at=recorded[0] if recorded else now,
                        recorded_by=recorded[1] if recorded else actor)
        session.add(row)
        session.flush()
        after = consents_json(session, [row])[0]
        record_event(session, actor, now, "consent.record", f"consent {row.id}", None, after)
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
    at = utc(now)
    return record_hashed_consent(session, actor, at, subject_hash(subject_key, data_subject),
                                 parse_client(client), parse_service(service), purpose,
                                 valid_from or at, valid_until)


def revoke_consent(session: Session, actor: str, consent_id: int, *,
                   now: datetime | None = None) -> Json:
    """Revoke one consent by id (it stays on record with ``revoked_at``)."""
    at = utc(now)
    with transaction(session):
        row = session.get(m.Consent, consent_id)
        if row is None:
            ids = list(session.execute(select(m.Consent.id).where(
                m.Consent.revoked_at.is_(None)).order_by(m.Consent.id).limit(20)).scalars())
            raise unknown(f"consent {consent_id} does not exist; "
                          f"{choices(ids, 'unrevoked consents')}")
        before = consents_json(session, [row])[0]
        if row.revoked_at is not None:
            raise RegistryError(f"consent {consent_id} was already revoked at "
                                f"{before['revoked_at']}", code="AlreadyRevoked")
        row.revoked_at = at
        session.flush()
        after = consents_json(session, [row])[0]
        record_event(session, actor, at, "consent.revoke", f"consent {consent_id}", before,
                     after)
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
        raise unknown("the data subject has no unrevoked consent matching the filters")
    with transaction(session):  # all or none
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
        client_id = parse_client(client)
        query = query.where(m.Consent.client_member_id == require_member(session,
                                                                         client_id).id)
        if client_id.subsystem is not None:
            query = query.where(m.Consent.client_subsystem_id == require_subsystem(
                session, client_id).id)
    if service is not None:
        query = query.where(m.Consent.service_id == require_service(
            session, parse_service(service)).id)
    rows = list(session.execute(query).scalars())
    if active_at is not None:
        at = utc(active_at)
        rows = [r for r in rows if (r.revoked_at is None or as_utc(r.revoked_at) > at)
                and as_utc(r.valid_from) <= at
                and (r.valid_until is None or at < as_utc(r.valid_until))]
    return consents_json(session, rows)
