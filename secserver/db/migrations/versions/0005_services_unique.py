"""Services: one row per service id. A unique constraint over (subsystem_id, code,
version) would not apply to unversioned services (NULLs are distinct), so two concurrent
``acl services add`` of the same id could both insert it, and every later lookup of that
service would fail. ``version_key`` is the version or '' (checked against ``version``;
a version is never empty), under the unique index ``uq_services_identity``.

Services already registered twice are not merged here (their endpoints, rights and
consents would have to be moved): the upgrade stops and names them.

Revision ID: 0005_services_unique
Revises: 0004_rights_unique
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_services_unique"
down_revision = "0004_rights_unique"
branch_labels = None
depends_on = None

VERSION_KEY_SQL = "version_key = COALESCE(version, '')"


def upgrade() -> None:
    bind = op.get_bind()
    twice = bind.execute(sa.text(
        "SELECT subsystem_id, code, version, COUNT(*) FROM services"
        " GROUP BY subsystem_id, code, version HAVING COUNT(*) > 1")).all()
    if twice:
        found = "; ".join(f"subsystem row {s}, service {c!r}, version {v!r}: {n} rows"
                          for s, c, v, n in twice)
        raise RuntimeError(f"services registered more than once ({found}); keep one row of "
                           "each (move the endpoints, rights and consents of the others to "
                           "it, then delete them), then upgrade again")
    # No batch (table copy) on SQLite: endpoints, rights and consents refer to services,
    # and SQLite refuses to drop a referenced table while foreign keys are on. So a unique
    # index, and the CHECK only where ALTER TABLE can add one (PostgreSQL).
    op.add_column("services", sa.Column("version_key", sa.String(64), nullable=False,
                                        server_default=""))
    op.execute("UPDATE services SET version_key = COALESCE(version, '')")
    op.create_index("uq_services_identity", "services", ["subsystem_id", "code", "version_key"],
                    unique=True)
    if bind.dialect.name != "sqlite":
        op.create_check_constraint("version_key", "services", VERSION_KEY_SQL)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_services_version_key"), "services", type_="check")
    op.drop_index("uq_services_identity", "services")
    op.drop_column("services", "version_key")
