"""Members (organisations): ``INSTANCE/CLASS/MEMBER``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
    Json,
    RegistryError,
    delete_row,
    exists,
    in_use,
    insert,
    record_event,
    record_update,
    transaction,
    utc,
)
from secserver.acl.registry.lookups import (
    count,
    find_member,
    member_json,
    parse_client,
    refuse_kept_consents,
    require_member,
    subsystem_json,
)
from secserver.identifiers import ClientId


def add_member(session: Session, actor: str, member: ClientId | str, name: str = "", *,
               now: datetime | None = None) -> Json:
    """Register a member (``INSTANCE/CLASS/MEMBER``)."""
    with transaction(session):
        at, client = utc(now), parse_client(member)
        if client.subsystem is not None:
            raise RegistryError(f"{client} is a subsystem; a member id has three parts "
                                "INSTANCE/CLASS/MEMBER (add subsystems with subsystems add)")
        if find_member(session, client) is not None:
            raise exists(f"member {client} is already registered")
        row = m.Member(instance=client.instance, member_class=client.member_class,
                       member_code=client.member_code, name=name)
        insert(session, row, f"member {client} was registered")
        after = member_json(row)
        record_event(session, actor, at, "member.add", str(client), None, after)
        return after


def update_member(session: Session, actor: str, member: ClientId | str, name: str, *,
                  now: datetime | None = None) -> Json:
    """Change a member's name."""
    client = parse_client(member)
    with transaction(session):
        row = require_member(session, client)
        before = member_json(row)
        row.name = name
        session.flush()
        return record_update(session, actor, now, "member.update", str(client.member), before,
                             member_json(row))


def list_members(session: Session) -> list[Json]:
    rows = session.execute(select(m.Member).order_by(
        m.Member.instance, m.Member.member_class, m.Member.member_code)).scalars()
    return [member_json(r) for r in rows]


def show_member(session: Session, member: ClientId | str) -> Json:
    """A member with its subsystems."""
    client = parse_client(member).member
    row = require_member(session, client)
    subsystems = session.execute(select(m.Subsystem).where(m.Subsystem.member_id == row.id)
                                 .order_by(m.Subsystem.code)).scalars()
    ids = client.instance, client.member_class, client.member_code
    return {**member_json(row),
            "subsystems": [subsystem_json(s, ClientId(*ids, s.code)) for s in subsystems]}


def remove_member(session: Session, actor: str, member: ClientId | str, *,
                  now: datetime | None = None) -> Json:
    """Remove a member that has no subsystems, rights or consents (not even revoked ones)."""
    client = parse_client(member)
    with transaction(session):
        row = require_member(session, client)
        if client.subsystem is not None:
            raise RegistryError(f"{client} is a subsystem; use subsystems remove")
        subsystems = list(session.execute(select(m.Subsystem.code).where(
            m.Subsystem.member_id == row.id)).scalars())
        if subsystems:
            raise in_use(f"member {client} still has subsystems {', '.join(subsystems)}; "
                         "remove them first")
        refuse_kept_consents(session, f"member {client}", m.Consent.client_member_id == row.id)
        rights = count(session, m.Right, m.Right.subject_member_id == row.id)
        if rights:
            raise in_use(f"member {client} still holds {rights} right(s); revoke them first")
        return delete_row(session, actor, now, "member.remove", str(client), row,
                          member_json(row))
