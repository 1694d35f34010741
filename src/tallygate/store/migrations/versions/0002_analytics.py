"""Analytics: label sets, usage and tag roll-ups, feedback; request_tags keeps tags as sent.

`request_tags` had one row per request and tag *prefix*, indexed by prefix: at 20,000 records/s
those rows and that index cost more than the rest of a ledger write, and the tag roll-ups now
answer prefix questions. It becomes one row per request and tag as sent (its `is_tag` rows),
keyed by (request_id, tag). Roll-ups for records already in the ledger are built from them here.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen here: the metric columns as this revision creates them.
SUMS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_pico", "feedback_count", "feedback_sum")
BUCKETS = 62
METRICS = SUMS + tuple(f"lat_{i:02d}" for i in range(BUCKETS)) + tuple(f"ttft_{i:02d}" for i in range(BUCKETS))


def _metrics() -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger, nullable=False) for name in METRICS]


def upgrade() -> None:
    op.create_table(
        "request_tags_v2",
        sa.Column("request_id", sa.String(40), nullable=False),
        sa.Column("tag", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "tag", name="pk_request_tags_v2"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO request_tags_v2 (request_id, tag) "
               "SELECT request_id, prefix FROM request_tags WHERE is_tag")
    op.drop_index("ix_request_tags_prefix_created", table_name="request_tags")
    op.drop_table("request_tags")
    op.rename_table("request_tags_v2", "request_tags")

    op.create_table(
        "label_sets",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("labels", sa.JSON, nullable=False),
    )
    for level in ("hour", "day", "month"):
        op.create_table(
            f"usage_rollup_{level}",
            sa.Column("bucket", sa.BigInteger, nullable=False),
            sa.Column("key_id", sa.String(36), nullable=False),
            sa.Column("label_set", sa.String(16), nullable=False),
            sa.Column("requested_model", sa.String(200), nullable=False),
            sa.Column("served_model", sa.String(200), nullable=False),
            sa.Column("provider", sa.String(200), nullable=False),
            sa.Column("status", sa.SmallInteger, nullable=False),
            *_metrics(),
            sa.PrimaryKeyConstraint("bucket", "key_id", "label_set", "requested_model", "served_model",
                                    "provider", "status", name=f"pk_usage_rollup_{level}"),
            sqlite_with_rowid=False,
        )
    for level in ("day", "month"):
        op.create_table(
            f"tag_rollup_{level}",
            sa.Column("bucket", sa.BigInteger, nullable=False),
            sa.Column("prefix", sa.String(256), nullable=False),
            sa.Column("is_tag", sa.Boolean, nullable=False),
            sa.Column("depth", sa.SmallInteger, nullable=False),
            *_metrics(),
            sa.PrimaryKeyConstraint("bucket", "prefix", "is_tag", name=f"pk_tag_rollup_{level}"),
            sqlite_with_rowid=False,
        )
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("score_milli", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )

    # Roll up the records already in the ledger, with the writer's own aggregation.
    from tallygate.store.rollups import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    for name in ("feedback", "tag_rollup_month", "tag_rollup_day", "usage_rollup_month", "usage_rollup_day",
                 "usage_rollup_hour", "label_sets"):
        op.drop_table(name)
    op.create_table(
        "request_tags_v1",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("prefix", sa.String(256), primary_key=True),
        sa.Column("depth", sa.SmallInteger, nullable=False),
        sa.Column("is_tag", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO request_tags_v1 (request_id, prefix, depth, is_tag, created_at) "
               "SELECT t.request_id, t.tag, length(t.tag) - length(replace(t.tag, '/', '')) + 1, true, "
               "r.created_at FROM request_tags t JOIN requests r ON r.id = t.request_id")
    # (prefix rows of nested tags are not re-created: a downgraded ledger finds requests by the
    # tags they carry, not by the tags' ancestors)
    op.drop_table("request_tags")
    op.rename_table("request_tags_v1", "request_tags")
    op.create_index("ix_request_tags_prefix_created", "request_tags", ["prefix", "created_at"])
