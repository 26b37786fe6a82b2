"""Local groups of subsystems (rights can be granted to a group)."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
    Json,
    RegistryError,
    choices,
    delete_row,
    exists,
    idempotent,
    in_use,
    insert,
    record_event,
    record_update,
    transaction,
    unknown,
    utc,
)
from secserver.acl.registry.lookups import (
    count,
    find_group,
    group_json,
    parse_client,
    require_group,
    require_subsystem,
)
from secserver.acl.registry.rights import list_rights
from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId, validate_part


def add_group(session: Session, actor: str, code: str, description: str = "", *,
              now: datetime | None = None) -> Json:
    """Create a local group (a code without '/')."""
    with transaction(session):
        at = utc(now)
        try:
            validate_part(code, "group code")
        except InvalidIdentifier as exc:
            raise RegistryError(exc.message) from exc
        if find_group(session, code) is not None:
            raise exists(f"local group {code!r} already exists")
        row = m.LocalGroup(code=code, description=description)
        insert(session, row, f"local group {code!r} was created")
        after = group_json(session, row)
        record_event(session, actor, at, "group.add", code, None, after)
        return after


def update_group(session: Session, actor: str, code: str, description: str, *,
                 now: datetime | None = None) -> Json:
    """Change a local group's description."""
    with transaction(session):
        row = require_group(session, code)
        before = group_json(session, row)
        row.description = description
        session.flush()
        return record_update(session, actor, now, "group.update", code, before,
                             group_json(session, row))


def list_groups(session: Session) -> list[Json]:
    return [group_json(session, r) for r in session.execute(
        select(m.LocalGroup).order_by(m.LocalGroup.code)).scalars()]


def show_group(session: Session, code: str) -> Json:
    row = require_group(session, code)
    return {**group_json(session, row), "rights": list_rights(session, subject=code)}


def remove_group(session: Session, actor: str, code: str, *,
                 now: datetime | None = None) -> Json:
    """Remove a local group that holds no rights (its memberships go with it)."""
    with transaction(session):
        row = require_group(session, code)
        rights = count(session, m.Right, m.Right.subject_group_id == row.id)
        if rights:
            raise in_use(f"local group {code!r} still holds {rights} right(s); revoke them "
                         "first")
        before = group_json(session, row)
        for member in session.execute(select(m.GroupMember).where(
                m.GroupMember.group_id == row.id)).scalars():
            session.delete(member)
        session.flush()
        return delete_row(session, actor, now, "group.remove", code, row, before)


def _add_group_member(session: Session, actor: str, at: datetime, code: str,
                      client: ClientId) -> Json:
    group = require_group(session, code)
    row = require_subsystem(session, client)
    before = group_json(session, group)
    if str(client) in before["members"]:
        return before
    insert(session, m.GroupMember(group_id=group.id, subsystem_id=row.id),
           f"subsystem {client} was put into local group {code!r}")
    after = group_json(session, group)
    record_event(session, actor, at, "group.member.add", f"{code} {client}", before, after)
    return after


def add_group_member(session: Session, actor: str, code: str, subsystem: ClientId | str, *,
                     now: datetime | None = None) -> Json:
    """Put a registered subsystem into a local group (idempotent, also when racing)."""
    at, client = utc(now), parse_client(subsystem)
    return idempotent(session, partial(_add_group_member, session, actor, at, code, client))


def remove_group_member(session: Session, actor: str, code: str, subsystem: ClientId | str, *,
                        now: datetime | None = None) -> Json:
    """Take a subsystem out of a local group."""
    client = parse_client(subsystem)
    with transaction(session):
        group = require_group(session, code)
        row = require_subsystem(session, client)
        before = group_json(session, group)
        member = session.execute(select(m.GroupMember).where(
            m.GroupMember.group_id == group.id, m.GroupMember.subsystem_id == row.id)
        ).scalar_one_or_none()
        if member is None:
            raise unknown(f"subsystem {client} is not in local group {code!r}; "
                          f"{choices(before['members'], 'members of the group')}")
        session.delete(member)
        session.flush()
        after = group_json(session, group)
        record_event(session, actor, utc(now), "group.member.remove", f"{code} {client}",
                     before, after)
        return after
