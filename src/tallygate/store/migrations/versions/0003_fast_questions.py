"""Fast questions at any range: label-set ids on records, timed tag rows, hour tag and dim roll-ups.

* `requests.label_set`: the record's labels as a `label_sets` id; the JSON moves there, so
  `requests.labels` becomes NULL (rows no longer repeat it).
* `request_tags` keyed (tag, created_at, request_id): requests under a tag, newest first, without
  touching the others (whether one request has a tag is read from its `tags`).
* `tag_rollup_hour`: tags by hour (and ragged ends of tag questions read at most an hour raw).
* `dim_rollup_{hour,day,month}`: per bucket and one attribute's value, built here from the
  usage roll-ups (which hold every attribute).

Revision ID: 0003
Revises: 0002
"""

import hashlib
import json
from bisect import bisect_right
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen here: the metric columns as revision 0002 created them.
SUMS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_pico", "feedback_count", "feedback_sum")
BUCKETS = 62
METRICS = SUMS + tuple(f"lat_{i:02d}" for i in range(BUCKETS)) + tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
HOUR = 3_600_000
EDGES = tuple(round(1000 * 2 ** (i / 3)) for i in range(BUCKETS - 1))
LAT0, TTFT0 = len(SUMS), len(SUMS) + BUCKETS


def _metrics() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger, nullable=False) for name in METRICS]


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("label_set", sa.String(16), nullable=True))
        batch.alter_column("labels", existing_type=sa.JSON, nullable=True)
    _move_labels(conn)

    op.create_table(
        "request_tags_v3",
        sa.Column("tag", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("tag", "created_at", "request_id", name="pk_request_tags_v3"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO request_tags_v3 (tag, created_at, request_id) SELECT t.tag, r.created_at, t.request_id "
               "FROM request_tags t JOIN requests r ON r.id = t.request_id")
    op.drop_table("request_tags")
    op.rename_table("request_tags_v3", "request_tags")

    op.create_table(
        "tag_rollup_hour",
        sa.Column("bucket", sa.BigInteger, nullable=False),
        sa.Column("prefix", sa.String(256), nullable=False),
        sa.Column("is_tag", sa.Boolean, nullable=False),
        sa.Column("depth", sa.SmallInteger, nullable=False),
        *_metrics(),
        sa.PrimaryKeyConstraint("bucket", "prefix", "is_tag", name="pk_tag_rollup_hour"),
        sqlite_with_rowid=False,
    )
    for level in ("hour", "day", "month"):
        op.create_table(
            f"dim_rollup_{level}",
            sa.Column("bucket", sa.BigInteger, nullable=False),
            sa.Column("dim", sa.String(70), nullable=False),
            sa.Column("value", sa.String(256), nullable=False),
            *_metrics(),
            sa.PrimaryKeyConstraint("bucket", "dim", "value", name=f"pk_dim_rollup_{level}"),
            sqlite_with_rowid=False,
        )
    _backfill_tag_hours(conn)
    _backfill_dims(conn)
    op.create_index("ix_tag_rollup_hour_prefix", "tag_rollup_hour", ["prefix", "bucket"])
    op.create_index("ix_tag_rollup_hour_depth", "tag_rollup_hour", ["depth", "bucket"])
    op.create_index("ix_dim_rollup_hour_value", "dim_rollup_hour", ["dim", "value", "bucket"])


def _canonical(labels: dict[str, Any]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _move_labels(conn: sa.Connection) -> None:
    """Every record's labels become a label-set id (the set stored once)."""
    texts = [r[0] for r in conn.execute(sa.text(
        "SELECT DISTINCT CAST(labels AS TEXT) FROM requests WHERE labels IS NOT NULL"))]
    if not texts:
        return
    known = {r[0] for r in conn.execute(sa.text("SELECT id FROM label_sets"))}
    op.create_table("label_set_map_0003", sa.Column("labels", sa.Text, primary_key=True),
                    sa.Column("id", sa.String(16), nullable=False))
    for text in texts:
        canonical = _canonical(json.loads(text or "{}") or {})
        sid = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        if sid not in known:
            known.add(sid)
            conn.execute(sa.text("INSERT INTO label_sets (id, labels) VALUES (:id, :labels)"),
                         {"id": sid, "labels": canonical})
        conn.execute(sa.text("INSERT INTO label_set_map_0003 (labels, id) VALUES (:t, :id)"), {"t": text, "id": sid})
    conn.execute(sa.text("UPDATE requests SET label_set = (SELECT m.id FROM label_set_map_0003 m "
                         "WHERE m.labels = CAST(requests.labels AS TEXT)), labels = NULL WHERE labels IS NOT NULL"))
    op.drop_table("label_set_map_0003")


def _prefixes(tags: list[str]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for tag in tags:
        parts = tag.split("/")
        for n in range(1, len(parts) + 1):
            p = "/".join(parts[:n])
            out[p] = out.get(p, False) or p == tag
    return out


def _insert(conn: sa.Connection, table: str, names: tuple[str, ...], rows: dict[tuple[Any, ...], list[int]]) -> None:
    cols = ", ".join((*names, *METRICS))
    marks = ", ".join(f":c{i}" for i in range(len(names) + len(METRICS)))
    for key, vec in rows.items():
        conn.execute(sa.text(f"INSERT INTO {table} ({cols}) VALUES ({marks})"),
                     {f"c{i}": v for i, v in enumerate((*key, *vec))})


def _backfill_tag_hours(conn: sa.Connection) -> None:
    """tag_rollup_hour from the raw records (the writer's rules as in revision 0002)."""
    rows: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(METRICS))
    scores: dict[str, int] = dict(conn.execute(sa.text("SELECT request_id, score_milli FROM feedback")).all())
    for r in conn.execute(sa.text("SELECT id, created_at, tags, status, input_tokens, output_tokens, cached_tokens, "
                                  "cache_write_tokens, reasoning_tokens, cost_pico, latency_us, ttft_us "
                                  "FROM requests")):
        given = r.tags if isinstance(r.tags, list) else json.loads(r.tags or "[]")
        if not given:
            continue
        score = scores.get(r.id)
        vec = [1, int(r.status >= 400), r.input_tokens, r.output_tokens, r.cached_tokens, r.cache_write_tokens,
               r.reasoning_tokens, r.cost_pico, int(score is not None), score or 0] + [0] * (2 * BUCKETS)
        vec[LAT0 + bisect_right(EDGES, r.latency_us)] = 1
        if r.ttft_us is not None:
            vec[TTFT0 + bisect_right(EDGES, r.ttft_us)] += 1
        hour = r.created_at - r.created_at % HOUR
        for p, is_tag in [*_prefixes(given).items(), ("", False)]:
            acc = rows[(hour, p, is_tag, p.count("/") + 1 if p else 0)]
            acc[:] = map(sum, zip(acc, vec, strict=True))
    _insert(conn, "tag_rollup_hour", ("bucket", "prefix", "is_tag", "depth"), rows)


def _backfill_dims(conn: sa.Connection) -> None:
    """dim_rollup_* from usage_rollup_* (same levels, same buckets)."""
    sets = {sid: json.loads(labels) if isinstance(labels, str) else (labels or {})
            for sid, labels in conn.execute(sa.text("SELECT id, labels FROM label_sets"))}
    for level in ("hour", "day", "month"):
        rows: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(METRICS))
        for r in conn.execute(sa.text(f"SELECT bucket, key_id, label_set, requested_model, served_model, provider, "
                                      f"status, {', '.join(METRICS)} FROM usage_rollup_{level}")):
            bucket, key_id, ls, model, served, provider, status = r[:7]
            vec = list(r[7:])
            pairs = [("", ""), ("key", key_id), ("model", model), ("served_model", served), ("provider", provider),
                     ("status", str(status))]
            pairs += [(f"label.{name}", str(value)) for name, value in sets.get(ls, {}).items()]
            for dim, value in pairs:
                acc = rows[(bucket, dim, value)]
                acc[:] = map(sum, zip(acc, vec, strict=True))
        _insert(conn, f"dim_rollup_{level}", ("bucket", "dim", "value"), rows)


def downgrade() -> None:
    for name in ("dim_rollup_month", "dim_rollup_day", "dim_rollup_hour", "tag_rollup_hour"):
        op.drop_table(name)
    op.create_table(
        "request_tags_v2",
        sa.Column("request_id", sa.String(40), nullable=False),
        sa.Column("tag", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "tag", name="pk_request_tags_v2b"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO request_tags_v2 (request_id, tag) SELECT request_id, tag FROM request_tags")
    op.drop_table("request_tags")
    op.rename_table("request_tags_v2", "request_tags")
    op.execute("UPDATE requests SET labels = (SELECT s.labels FROM label_sets s WHERE s.id = requests.label_set) "
               "WHERE labels IS NULL")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("label_set")
        batch.alter_column("labels", existing_type=sa.JSON, nullable=False)
