"""The exchange's replay store: message ids seen per client, kept for the replay window.

Revision ID: 0003_exchange
Revises: 0002_log
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_exchange"
down_revision = "0002_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_seen_messages",
        sa.Column("client", sa.String(400), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("client", "message_id", name="pk_exchange_seen_messages"),
    )
    op.create_index("ix_exchange_seen_messages_seen_at", "exchange_seen_messages",
                    ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_exchange_seen_messages_seen_at", table_name="exchange_seen_messages")
    op.drop_table("exchange_seen_messages")
