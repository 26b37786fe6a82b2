"""The access-rights registry: members, subsystems, services, endpoints, groups, rights,
consents, admin events and the registry version counter.

Revision ID: 0001_registry
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "members",
        _id(),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("member_class", sa.String(64), nullable=False),
        sa.Column("member_code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.UniqueConstraint("instance", "member_class", "member_code",
                            name="uq_members_identity"),
    )
    op.create_table(
        "subsystems",
        _id(),
        sa.Column("member_id", sa.Integer(), sa.ForeignKey("members.id"), nullable=False,
                  index=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("local", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("auth", sa.String(16), nullable=False, server_default="none"),
        sa.Column("tls_cert_sha256", sa.String(64), nullable=True),
        sa.Column("allowlist", sa.Text(), nullable=False, server_default="[]"),
        sa.UniqueConstraint("member_id", "code", name="uq_subsystems_identity"),
        sa.CheckConstraint("auth IN ('tls', 'allowlist', 'none')", name="auth"),
    )
    op.create_table(
        "services",
        _id(),
        sa.Column("subsystem_id", sa.Integer(), sa.ForeignKey("subsystems.id"),
                  nullable=False, index=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("backend_url", sa.Text(), nullable=False, server_default=""),
        sa.Column("timeout", sa.Float(), nullable=False, server_default="30"),
        sa.Column("requires_consent", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        sa.Column("log_body", sa.String(16), nullable=False, server_default="digest"),
        sa.CheckConstraint("log_body IN ('digest', 'store', 'encrypt')", name="log_body"),
        sa.CheckConstraint("timeout > 0", name="timeout"),
    )
    op.create_table(
        "endpoints",
        _id(),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("services.id"), nullable=False,
                  index=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.UniqueConstraint("service_id", "method", "path", name="uq_endpoints_identity"),
    )
    op.create_table(
        "local_groups",
        _id(),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
    )
    op.create_table(
        "group_members",
        _id(),
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("local_groups.id"), nullable=False,
                  index=True),
        sa.Column("subsystem_id", sa.Integer(), sa.ForeignKey("subsystems.id"),
                  nullable=False, index=True),
        sa.UniqueConstraint("group_id", "subsystem_id", name="uq_group_members_identity"),
    )
    op.create_table(
        "rights",
        _id(),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_subsystem_id", sa.Integer(), sa.ForeignKey("subsystems.id"),
                  nullable=True, index=True),
        sa.Column("subject_member_id", sa.Integer(), sa.ForeignKey("members.id"),
                  nullable=True, index=True),
        sa.Column("subject_group_id", sa.Integer(), sa.ForeignKey("local_groups.id"),
                  nullable=True, index=True),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("services.id"), nullable=False,
                  index=True),
        sa.Column("endpoint_id", sa.Integer(), sa.ForeignKey("endpoints.id"), nullable=True,
                  index=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(255), nullable=False),
        sa.CheckConstraint(
            "(subject_kind = 'subsystem' AND subject_subsystem_id IS NOT NULL"
            " AND subject_member_id IS NULL AND subject_group_id IS NULL)"
            " OR (subject_kind = 'member' AND subject_member_id IS NOT NULL"
            " AND subject_subsystem_id IS NULL AND subject_group_id IS NULL)"
            " OR (subject_kind = 'group' AND subject_group_id IS NOT NULL"
            " AND subject_subsystem_id IS NULL AND subject_member_id IS NULL)",
            name="one_subject",
        ),
    )
    op.create_table(
        "consents",
        _id(),
        sa.Column("subject_hash", sa.String(64), nullable=False, index=True),
        sa.Column("client_member_id", sa.Integer(), sa.ForeignKey("members.id"),
                  nullable=False, index=True),
        sa.Column("client_subsystem_id", sa.Integer(), sa.ForeignKey("subsystems.id"),
                  nullable=True, index=True),
        sa.Column("service_id", sa.Integer(), sa.ForeignKey("services.id"), nullable=False,
                  index=True),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "admin_events",
        _id(),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
    )
    registry_version = op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(registry_version, [{"id": 1, "version": 0, "changed_at": None}])


def downgrade() -> None:
    for table in ("registry_version", "admin_events", "consents", "rights", "group_members",
                  "local_groups", "endpoints", "services", "subsystems", "members"):
        op.drop_table(table)
