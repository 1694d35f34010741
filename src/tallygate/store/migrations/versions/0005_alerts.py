"""Alerts: every alert fired, once (the primary key is the alert's stable id).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject_kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(300), nullable=False),
        sa.Column("subject_name", sa.String(300), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("event", sa.JSON, nullable=False),
    )
    op.create_index("ix_alerts_created", "alerts", ["created_at", "id"])
    op.create_index("ix_alerts_subject_created", "alerts", ["subject_id", "created_at"])


def downgrade() -> None:
    op.drop_table("alerts")
