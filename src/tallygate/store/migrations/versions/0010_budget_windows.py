"""Budget windows: a budget's and a key limit's `period` ('month', the default and every
existing row's, 'day', 'week', or a rolling 'hours:N' / 'days:N'; see `core/windows.py`).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budgets") as batch:
        batch.add_column(sa.Column("period", sa.String(16), nullable=False, server_default="month"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("limit_period", sa.String(16), nullable=False, server_default="month"))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limit_period")
    with op.batch_alter_table("budgets") as batch:
        batch.drop_column("period")
