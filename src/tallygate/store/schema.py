"""Tables, as SQLAlchemy Core objects shared by the writer and the queries.

Times are integer milliseconds since the Unix epoch (UTC): compact, index-friendly and the
same on SQLite and PostgreSQL. Money is integer picodollars (1e-12 USD). The migration in
`migrations/versions/` creates exactly these tables; change both together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    true,
)

from tallygate.core.metrics import METRICS

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_prefix", String(16), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("permissions", JSON, nullable=False),
    Column("monthly_limit_pico", BigInteger, nullable=True),
    Column("policy", String(200), nullable=True),
    Column("created_by", String(36), ForeignKey("users.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False, index=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("limit_period", String(16), nullable=False, server_default="month"),  # 0012: core/windows.py
)

requests = Table(
    "requests", metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("key_id", String(36), nullable=True),
    Column("key_name", String(200), nullable=True),
    # The key's labels as a label-set id (`label_sets`); `labels` is only set on rows written before
    # migration 0003 had them moved there (it moves them all), so new rows do not repeat the JSON.
    Column("labels", JSON, nullable=True),
    Column("label_set", String(16), nullable=True),
    Column("tags", JSON, nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("requested_model", String(200), nullable=True),
    Column("served_model", String(200), nullable=True),
    Column("provider", String(200), nullable=True),
    Column("status", SmallInteger, nullable=False),
    Column("error_type", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("stream", Boolean, nullable=False),
    Column("partial", Boolean, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("cache_write_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("cost_pico", BigInteger, nullable=False),
    Column("pricing_source", String(64), nullable=True),
    Column("latency_us", BigInteger, nullable=False),
    Column("ttft_us", BigInteger, nullable=True),
    Column("attempts", JSON, nullable=False),
    Column("error_code", String(64), nullable=True),  # migration 0006: last, as ADD COLUMN puts it
    Index("ix_requests_created_at", "created_at"),
    Index("ix_requests_key_created", "key_id", "created_at"),
    Index("ix_requests_model_created", "requested_model", "created_at"),
)

# One row per request and tag as sent, keyed (tag, created_at, request_id): the requests that carry
# a tag, newest first, are one range of the key. Whether a given request carries a tag is read from
# its own `requests.tags`. Prefixes are not expanded here: the tag roll-ups count every prefix (and
# say which tags are under one), and one row per prefix cost more than the rest of a write.
request_tags = Table(
    "request_tags", metadata,
    Column("tag", String(256), primary_key=True),
    Column("created_at", BigInteger, primary_key=True),
    Column("request_id", String(40), primary_key=True),
    sqlite_with_rowid=False,
)

# Each distinct label set of a key, once; roll-ups refer to it by id (a hash of its canonical JSON).
label_sets = Table(
    "label_sets", metadata,
    Column("id", String(16), primary_key=True),
    Column("labels", JSON, nullable=False),
)


def _metric_columns() -> list[Column[Any]]:
    return [Column(name, BigInteger, nullable=False) for name in METRICS]


def _usage_rollup(level: str) -> Table:
    """Requests per time bucket (start, epoch ms), key, label set, models, provider and status.

    Absent keys and models are stored as '' (primary-key columns cannot be NULL)."""
    return Table(
        f"usage_rollup_{level}", metadata,
        Column("bucket", BigInteger, primary_key=True),
        Column("key_id", String(36), primary_key=True),
        Column("label_set", String(16), primary_key=True),
        Column("requested_model", String(200), primary_key=True),
        Column("served_model", String(200), primary_key=True),
        Column("provider", String(200), primary_key=True),
        Column("status", SmallInteger, primary_key=True),
        *_metric_columns(),
        sqlite_with_rowid=False,
    )


def _tag_rollup(level: str) -> Table:
    """Requests per time bucket and tag prefix, each request once per distinct prefix.

    `is_tag` splits a prefix's requests into those that carry it as a tag and those that carry
    only tags under it; the prefix '' (depth 0) counts every request with at least one tag."""
    return Table(
        f"tag_rollup_{level}", metadata,
        Column("bucket", BigInteger, primary_key=True),
        Column("prefix", String(256), primary_key=True),
        Column("is_tag", Boolean, primary_key=True),
        Column("depth", SmallInteger, nullable=False),
        *_metric_columns(),
        # the hours of one prefix (logs, raw estimates); the rows of one depth (tag_level.<n> by hour)
        *([Index("ix_tag_rollup_hour_prefix", "prefix", "bucket"), Index("ix_tag_rollup_hour_depth", "depth", "bucket")]
          if level == "hour" else []),
        sqlite_with_rowid=False,
    )


def _dim_rollup(level: str) -> Table:
    """Requests per time bucket and one attribute's value: `dim` is 'key', 'model',
    'served_model', 'provider', 'status' or 'label.<name>', and '' (value '') for every request.

    Each request is in one row per attribute it has (a label it lacks has no row: those
    requests are the '' row less the label's rows). A handful of rows per bucket, so any range
    grouped by one attribute, and every answer's totals, read a few hundred rows at most."""
    return Table(
        f"dim_rollup_{level}", metadata,
        Column("bucket", BigInteger, primary_key=True),
        Column("dim", String(70), primary_key=True),
        Column("value", String(256), primary_key=True),
        *_metric_columns(),
        # which hours hold a value (the logs skip the others): a few hundred entries per hour
        *([Index("ix_dim_rollup_hour_value", "dim", "value", "bucket")] if level == "hour" else []),
        sqlite_with_rowid=False,
    )


LEVELS = ("hour", "day", "month")
usage_rollups = {level: _usage_rollup(level) for level in LEVELS}
tag_rollups = {level: _tag_rollup(level) for level in LEVELS}
dim_rollups = {level: _dim_rollup(level) for level in LEVELS}

# Budgets on groups of requests: `scope` is {"label": {name: value, ...}}, {"tag": path} or
# {"key": key id}; the limit in picodollars per `period` (the column keeps its first name).
budgets = Table(
    "budgets", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", JSON, nullable=False),
    Column("monthly_limit_pico", BigInteger, nullable=False),
    Column("created_by", String(36), ForeignKey("users.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("enforce", Boolean, nullable=False, server_default=true()),  # false: a soft budget, never refuses
    Column("period", String(16), nullable=False, server_default="month"),  # 0012: core/windows.py
)

# Rate limits: `scope` as budgets' or {"model": name or "policy/<name>"}; any subset of the
# three limits (None: not limited). Counters live in the gateways (or Redis), never here.
rate_limits = Table(
    "rate_limits", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", JSON, nullable=False),
    Column("requests_per_minute", BigInteger, nullable=True),
    Column("tokens_per_minute", BigInteger, nullable=True),
    Column("max_concurrent", BigInteger, nullable=True),
    Column("created_by", String(36), ForeignKey("users.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("requests_per_second", BigInteger, nullable=True),  # migration 0011
)

# One score per request; a new one replaces it. Scores in thousandths (0..1000 for 0..1).
feedback = Table(
    "feedback", metadata,
    Column("request_id", String(40), primary_key=True),
    Column("score_milli", Integer, nullable=False),
    Column("comment", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Every alert fired, once: the primary key is the alert's stable id (kind, subject and window),
# so two processes that both see a threshold crossed insert one row, and only the one whose
# insert succeeded delivers it.
alerts = Table(
    "alerts", metadata,
    Column("id", String(200), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subject_kind", String(32), nullable=False),
    Column("subject_id", String(300), nullable=False),
    Column("subject_name", String(300), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("event", JSON, nullable=False),
    Index("ix_alerts_created", "created_at", "id"),
    Index("ix_alerts_subject_created", "subject_id", "created_at"),
)

# Dashboard sign-ins (manage/sessions.py): by the SHA-256 of the cookie's token, never the token.
dashboard_sessions = Table(
    "dashboard_sessions", metadata,
    Column("token_digest", String(64), primary_key=True),
    Column("key_prefix", String(64), nullable=False),
    Column("key_digest", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_dashboard_sessions_expires", "expires_at"),
)
