"""Rights: one row per (subject, object). A non-null ``identity_key`` spells the subject
and object (checked against the id columns), under a unique constraint, so that two
concurrent grants of the same right cannot both insert a row (a unique constraint over
the nullable id columns would not apply: NULLs are distinct).

Rows that such races left behind are merged first: of identical rights the oldest (lowest
id, its granted_at/granted_by) stays; the others are deleted. Decisions do not change.

Revision ID: 0004_rights_unique
Revises: 0003_exchange
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_rights_unique"
down_revision = "0003_exchange"
branch_labels = None
depends_on = None

# Frozen copy of secserver.acl.models.RIGHT_IDENTITY_SQL as of this revision.
IDENTITY_SQL = (
    "subject_kind || ':' || CAST(COALESCE(subject_subsystem_id, subject_member_id,"
    " subject_group_id) AS TEXT) || '>' || CAST(service_id AS TEXT) || ':'"
    " || COALESCE(CAST(endpoint_id AS TEXT), '*')"
)


def upgrade() -> None:
    op.execute(
        "DELETE FROM rights WHERE id NOT IN (SELECT MIN(id) FROM rights GROUP BY"
        " subject_kind, subject_subsystem_id, subject_member_id, subject_group_id,"
        " service_id, endpoint_id)"
    )
    op.add_column("rights", sa.Column("identity_key", sa.String(200), nullable=True))
    op.execute(f"UPDATE rights SET identity_key = {IDENTITY_SQL}")  # noqa: S608 (constant)
    with op.batch_alter_table("rights") as batch:
        batch.alter_column("identity_key", existing_type=sa.String(200), nullable=False)
        batch.create_unique_constraint("uq_rights_identity_key", ["identity_key"])
        batch.create_check_constraint("identity_key", f"identity_key = {IDENTITY_SQL}")


def downgrade() -> None:
    with op.batch_alter_table("rights") as batch:
        batch.drop_constraint(op.f("ck_rights_identity_key"), type_="check")
        batch.drop_constraint(op.f("uq_rights_identity_key"), type_="unique")
        batch.drop_column("identity_key")
