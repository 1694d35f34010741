"""Ledger records keep the error code the client was answered (`budget_exceeded`, ...).

A nullable column without a default: on SQLite and PostgreSQL adding it changes the table's
definition only, whatever the table's size (no rewrite). Older rows keep it NULL.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("error_code", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("error_code")
