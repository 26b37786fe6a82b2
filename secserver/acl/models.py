"""SQLAlchemy models of the access-rights registry.

The schema is created by the Alembic migration ``0001_registry``; never by ``create_all``.

* ``members`` / ``subsystems``: clients known to this node. ``local`` marks the subsystems
  registered on this node (those its information systems may speak for); ``auth`` says how
  such an IS proves it may speak for the subsystem (``tls``: pinned client certificate,
  ``allowlist``: source addresses, ``none``).
* ``services`` (of a provider subsystem) and their REST ``endpoints``. ``version_key``
  is the version or '' so that the unique identity holds for unversioned services too
  (migration ``0005_services_unique``).
* ``local_groups`` and ``group_members`` (subsystems).
* ``rights``: exactly one subject (subsystem, whole member or group), an object (service,
  or one endpoint of it). ``identity_key`` spells subject and object in one non-null
  column (checked against them by the database) so that a unique constraint holds even
  where ids are NULL: two concurrent grants of the same right cannot both insert a row
  (migration ``0004_rights_unique``).
* ``consents``: the data subject only as an HMAC-SHA256 keyed hash.
* ``admin_events``: append-only record of every change (read in id order by the log).
* ``registry_version``: one row, bumped in the same transaction as every change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from secserver.db.base import Base

AUTH_MODES = ("tls", "allowlist", "none")
LOG_BODY_POLICIES = ("digest", "store", "encrypt")
SUBJECT_KINDS = ("subsystem", "member", "group")


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("instance", "member_class", "member_code",
                                       name="uq_members_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(String(32), nullable=False)
    member_class: Mapped[str] = mapped_column(String(64), nullable=False)
    member_code: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")


class Subsystem(Base):
    __tablename__ = "subsystems"
    __table_args__ = (
        UniqueConstraint("member_id", "code", name="uq_subsystems_identity"),
        CheckConstraint("auth IN ('tls', 'allowlist', 'none')", name="auth"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), nullable=False, index=True)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    local: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    auth: Mapped[str] = mapped_column(String(16), nullable=False, default="none")
    tls_cert_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allowlist: Mapped[str] = mapped_column(Text, nullable=False, default="[]")


def _version_key_default(context: DefaultExecutionContext) -> str:
    version = context.get_current_parameters().get("version")  # type: ignore[no-untyped-call]
    return "" if version is None else str(version)


class Service(Base):
    __tablename__ = "services"
    __table_args__ = (
        Index("uq_services_identity", "subsystem_id", "code", "version_key", unique=True),
        # Only on PostgreSQL (SQLite cannot add a CHECK to an existing table; the default
        # below is what fills the key there).
        CheckConstraint("version_key = COALESCE(version, '')", name="version_key"),
        CheckConstraint("log_body IN ('digest', 'store', 'encrypt')", name="log_body"),
        CheckConstraint("timeout > 0", name="timeout"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subsystem_id: Mapped[int] = mapped_column(ForeignKey("subsystems.id"), nullable=False,
                                              index=True)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version_key: Mapped[str] = mapped_column(String(64), nullable=False,
                                             default=_version_key_default)
    backend_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    timeout: Mapped[float] = mapped_column(Float, nullable=False, default=30.0)
    requires_consent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    log_body: Mapped[str] = mapped_column(String(16), nullable=False, default="digest")


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("service_id", "method", "path",
                                       name="uq_endpoints_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), nullable=False,
                                            index=True)
    method: Mapped[str] = mapped_column(String(16), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)


class LocalGroup(Base):
    __tablename__ = "local_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "subsystem_id",
                                       name="uq_group_members_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("local_groups.id"), nullable=False,
                                          index=True)
    subsystem_id: Mapped[int] = mapped_column(ForeignKey("subsystems.id"), nullable=False,
                                              index=True)


RIGHT_IDENTITY_SQL = (
    "subject_kind || ':' || CAST(COALESCE(subject_subsystem_id, subject_member_id,"
    " subject_group_id) AS TEXT) || '>' || CAST(service_id AS TEXT) || ':'"
    " || COALESCE(CAST(endpoint_id AS TEXT), '*')"
)


def right_identity_key(subject_kind: str, subject_id: int, service_id: int,
                       endpoint_id: int | None) -> str:
    """``kind:subject>service:endpoint`` (``*``: the whole service), as RIGHT_IDENTITY_SQL."""
    return f"{subject_kind}:{subject_id}>{service_id}:{'*' if endpoint_id is None else endpoint_id}"


def _identity_key_default(context: DefaultExecutionContext) -> str:
    values: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    kind = values["subject_kind"]
    return right_identity_key(kind, values[f"subject_{kind}_id"], values["service_id"],
                              values.get("endpoint_id"))


class Right(Base):
    __tablename__ = "rights"
    __table_args__ = (
        UniqueConstraint("identity_key"),
        CheckConstraint(f"identity_key = {RIGHT_IDENTITY_SQL}", name="identity_key"),
        CheckConstraint(
            "(subject_kind = 'subsystem' AND subject_subsystem_id IS NOT NULL"
            " AND subject_member_id IS NULL AND subject_group_id IS NULL)"
            " OR (subject_kind = 'member' AND subject_member_id IS NOT NULL"
            " AND subject_subsystem_id IS NULL AND subject_group_id IS NULL)"
            " OR (subject_kind = 'group' AND subject_group_id IS NOT NULL"
            " AND subject_subsystem_id IS NULL AND subject_member_id IS NULL)",
            name="one_subject",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(16), nullable=False)
    subject_subsystem_id: Mapped[int | None] = mapped_column(ForeignKey("subsystems.id"),
                                                             nullable=True, index=True)
    subject_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"),
                                                          nullable=True, index=True)
    subject_group_id: Mapped[int | None] = mapped_column(ForeignKey("local_groups.id"),
                                                         nullable=True, index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), nullable=False,
                                            index=True)
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("endpoints.id"), nullable=True,
                                                    index=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    granted_by: Mapped[str] = mapped_column(String(255), nullable=False)
    identity_key: Mapped[str] = mapped_column(String(200), nullable=False,
                                              default=_identity_key_default)


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_hash: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    client_member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), nullable=False,
                                                  index=True)
    client_subsystem_id: Mapped[int | None] = mapped_column(ForeignKey("subsystems.id"),
                                                            nullable=True, index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), nullable=False,
                                            index=True)
    purpose: Mapped[str] = mapped_column(Text, nullable=False)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                         nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    recorded_by: Mapped[str] = mapped_column(String(255), nullable=False)


class AdminEvent(Base):
    """Append-only: never updated or deleted (the log chains these rows in id order)."""

    __tablename__ = "admin_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    object: Mapped[str] = mapped_column(Text, nullable=False)
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)


class RegistryVersion(Base):
    """One row (id 1): the registry's change counter."""

    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
