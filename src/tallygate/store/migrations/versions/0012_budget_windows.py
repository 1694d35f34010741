"""Budget windows: a budget's and a key limit's `period` ('month', the default and every
existing row's, 'day', 'week', or a rolling 'hours:N' / 'days:N'; see `core/windows.py`).

Revision ID: 0012
Revises: 0011 (first written as 0010 on its branch; 0011, rate limits' requests per second,
merged first)
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
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
