"""Rate limits: `requests_per_second` beside requests per minute (null: not limited).

Revision ID: 0011
Revises: 0009 (0010 is budget windows, on another branch: whichever merges second chains after
the other)
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.add_column(sa.Column("requests_per_second", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.drop_column("requests_per_second")
