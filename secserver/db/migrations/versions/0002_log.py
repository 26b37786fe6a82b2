"""The message log: records (one hash chain per node), checkpoint timestamps, archives.

Revision ID: 0002_log
Revises: 0001_registry
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_log"
down_revision = "0001_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_records",
        sa.Column("node_id", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("signed_document", sa.LargeBinary(), nullable=True),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("node_id", "seq", name="pk_log_records"),
    )
    op.create_index("ix_log_records_message", "log_records", ["node_id", "message_id"])
    op.create_index("ix_log_records_kind", "log_records", ["node_id", "kind", "seq"])
    op.create_table(
        "log_timestamps",
        sa.Column("node_id", sa.String(255), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger(), nullable=False),
        sa.Column("token", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "checkpoint_seq", name="pk_log_timestamps"),
    )
    op.create_table(
        "log_archives",
        sa.Column("node_id", sa.String(255), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(), nullable=False),
        sa.Column("last_admin_event_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "first_seq", name="pk_log_archives"),
    )


def downgrade() -> None:
    for table in ("log_archives", "log_timestamps", "log_records"):
        op.drop_table(table)
