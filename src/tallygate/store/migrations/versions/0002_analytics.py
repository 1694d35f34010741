"""Analytics: label sets, usage and tag roll-ups, feedback; request_tags keeps tags as sent.

`request_tags` had one row per request and tag *prefix*, indexed by prefix: at 20,000 records/s
those rows and that index cost more than the rest of a ledger write, and the tag roll-ups now
answer prefix questions. It becomes one row per request and tag as sent (its `is_tag` rows),
keyed by (request_id, tag). Roll-ups for records already in the ledger are built from them here.

Revision ID: 0002
Revises: 0001
"""

import hashlib
import json
from bisect import bisect_right
from collections import defaultdict
from typing import Any

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


def _metrics() -> list[sa.Column[int]]:
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

    _backfill(op.get_bind())


# Frozen here: how this revision rolls up the records already in the ledger (the writer's rules
# as they were: hour/day/month buckets in UTC, label sets by the SHA-256 of their sorted JSON,
# histogram edges three per doubling from 1 ms, each request once per distinct tag prefix).
HOUR, DAY = 3_600_000, 86_400_000
EDGES = tuple(round(1000 * 2 ** (i / 3)) for i in range(BUCKETS - 1))
LAT0, TTFT0 = len(SUMS), len(SUMS) + BUCKETS


def _month(ms: int) -> int:
    import datetime as dt

    d = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return int(dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _prefixes(tags: list[str]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for tag in tags:
        parts = tag.split("/")
        for n in range(1, len(parts) + 1):
            p = "/".join(parts[:n])
            out[p] = out.get(p, False) or p == tag
    return out


def _backfill(conn: sa.Connection) -> None:
    usage: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(METRICS))
    tags: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(METRICS))
    label_sets: dict[str, str] = {}
    rows = conn.execute(sa.text(
        "SELECT created_at, key_id, labels, tags, requested_model, served_model, provider, status, "
        "input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_pico, "
        "latency_us, ttft_us FROM requests"))
    for r in rows:
        labels = r.labels if isinstance(r.labels, dict) else json.loads(r.labels or "{}")
        given = r.tags if isinstance(r.tags, list) else json.loads(r.tags or "[]")
        canonical = json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        ls = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        label_sets[ls] = canonical
        vec = [1, int(r.status >= 400), r.input_tokens, r.output_tokens, r.cached_tokens, r.cache_write_tokens,
               r.reasoning_tokens, r.cost_pico, 0, 0] + [0] * (2 * BUCKETS)
        vec[LAT0 + bisect_right(EDGES, r.latency_us)] = 1
        if r.ttft_us is not None:
            vec[TTFT0 + bisect_right(EDGES, r.ttft_us)] += 1
        ca = r.created_at
        rest = (r.key_id or "", ls, r.requested_model or "", r.served_model or "", r.provider or "", r.status)
        for level, bucket in (("hour", ca - ca % HOUR), ("day", ca - ca % DAY), ("month", _month(ca))):
            acc = usage[(level, bucket, *rest)]
            acc[:] = map(sum, zip(acc, vec, strict=True))
        if given:
            for level, bucket in (("day", ca - ca % DAY), ("month", _month(ca))):
                for p, is_tag in [*_prefixes(given).items(), ("", False)]:
                    acc = tags[(level, bucket, p, is_tag)]
                    acc[:] = map(sum, zip(acc, vec, strict=True))
    for ls, canonical in label_sets.items():
        conn.execute(sa.text("INSERT INTO label_sets (id, labels) VALUES (:id, :labels)"),
                     {"id": ls, "labels": canonical})
    cols = ", ".join(METRICS)
    marks = ", ".join(f":m{i}" for i in range(len(METRICS)))
    for (level, *key), vec in usage.items():
        conn.execute(sa.text(f"INSERT INTO usage_rollup_{level} (bucket, key_id, label_set, requested_model, "
                             f"served_model, provider, status, {cols}) VALUES (:b, :k, :ls, :rm, :sm, :p, :s, "
                             f"{marks})"),
                     dict(zip(("b", "k", "ls", "rm", "sm", "p", "s"), key, strict=True),
                          **{f"m{i}": v for i, v in enumerate(vec)}))
    for (level, bucket, prefix, is_tag), vec in tags.items():
        conn.execute(sa.text(f"INSERT INTO tag_rollup_{level} (bucket, prefix, is_tag, depth, {cols}) "
                             f"VALUES (:b, :p, :t, :d, {marks})"),
                     {"b": bucket, "p": prefix, "t": is_tag, "d": prefix.count("/") + 1 if prefix else 0,
                      **{f"m{i}": v for i, v in enumerate(vec)}})


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
