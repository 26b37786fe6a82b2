"""What every registry change shares: the error type, times, transactions, admin events."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.snapshot import as_utc
from secserver.db.base import Base
from secserver.errors import SecServerError

T = TypeVar("T")
Json = dict[str, Any]
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class RegistryError(SecServerError):
    """A registry change or lookup that cannot be done; the message says what exists."""

    code = "InvalidValue"
    http_status = 400


def unknown(message: str) -> RegistryError:
    return RegistryError(message, code="UnknownObject", http_status=404)


def exists(message: str) -> RegistryError:
    return RegistryError(message, code="AlreadyExists", http_status=409)


def in_use(message: str) -> RegistryError:
    return RegistryError(message, code="InUse", http_status=409)


def choices(names: Sequence[str | int], what: str, limit: int = 20) -> str:
    """``registered WHAT: a, b, c`` (sorted, at most ``limit``) or ``no WHAT are registered``."""
    if not names:
        return f"no {what} are registered"
    shown = ", ".join(str(n) for n in sorted(names)[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"registered {what}: {shown}{more}"


def iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def utc(now: datetime | None) -> datetime:
    """``now`` in UTC (the clock when None); naive times are refused."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise RegistryError("times must be timezone-aware (UTC)")
    return now.astimezone(UTC)


_OUTER = "secserver.acl.registry.transaction"


def joined(session: Session) -> bool:
    """Whether a change now would join an outer one (see :func:`transaction`)."""
    return bool(session.info.get(_OUTER))


@contextmanager
def transaction(session: Session, *, commit: bool = True) -> Iterator[None]:
    """One change = one transaction; inside another (an import) it joins the outer one."""
    if joined(session):
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


class ConcurrentChange(RegistryError):
    """A concurrent change inserted the same row first (see :func:`idempotent`)."""

    code = "AlreadyExists"
    http_status = 409


def insert(session: Session, row: Base, done: str) -> None:
    """Add ``row`` now; a unique constraint refusing it means a concurrent change won
    (``done``: what that change did, e.g. ``the right ... was granted``)."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConcurrentChange(f"{done} by a concurrent change; nothing was changed, run "
                               "it again") from exc


def idempotent(session: Session, change: Callable[[], T]) -> T:
    """Run ``change`` (which finds what exists before it inserts) as one transaction. When
    its insert loses a race (:class:`ConcurrentChange`) run it once more: now it finds the
    winner's row. Inside an outer change (an import) the error goes up: the outer
    transaction is rolled back as a whole and can simply be run again."""
    inside_another = joined(session)
    try:
        with transaction(session):
            return change()
    except ConcurrentChange:
        if inside_another:
            raise
    with transaction(session):
        return change()


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def record_event(session: Session, actor: str, now: datetime, action: str, obj: str,
                 before: Any, after: Any) -> None:
    """Append the admin event of a change and bump the registry version (same transaction)."""
    if not actor:
        raise RegistryError("the actor of a change must not be empty")
    # Bump the version first: its row lock (held until commit) serialises changes, so
    # admin_events ids are allocated in commit order and a reader that follows
    # "id > last seen" never skips an event that commits later with a smaller id.
    session.execute(update(m.RegistryVersion).where(m.RegistryVersion.id == 1)
                    .values(version=m.RegistryVersion.version + 1, changed_at=now))
    session.add(m.AdminEvent(at=now, actor=actor, action=action, object=obj,
                             before=_dumps(before), after=_dumps(after)))
    session.flush()


def record_update(session: Session, actor: str, now: datetime | None, action: str, obj: str,
                  before: Json, after: Json) -> Json:
    """Record the admin event of an update if it changed anything; return ``after``."""
    if after != before:
        record_event(session, actor, utc(now), action, obj, before, after)
    return after


def delete_row(session: Session, actor: str, now: datetime | None, action: str, obj: str,
               row: Base, before: Json) -> Json:
    """Delete ``row``, record its removal (``before``: its view) and return ``before``."""
    session.delete(row)
    session.flush()
    record_event(session, actor, utc(now), action, obj, before, None)
    return before


def registry_version(session: Session) -> int:
    """The current change counter."""
    value = session.execute(select(m.RegistryVersion.version)
                            .where(m.RegistryVersion.id == 1)).scalar_one_or_none()
    return int(value or 0)


def list_admin_events(session: Session, *, after_id: int = 0, limit: int = 1000) -> list[Json]:
    """Admin events in id order (``id > after_id``), for the log and for review."""
    rows = session.execute(select(m.AdminEvent).where(m.AdminEvent.id > after_id)
                           .order_by(m.AdminEvent.id).limit(limit)).scalars()
    return [{"id": r.id, "at": iso(r.at), "actor": r.actor, "action": r.action,
             "object": r.object,
             "before": None if r.before is None else json.loads(r.before),
             "after": None if r.after is None else json.loads(r.after)} for r in rows]
