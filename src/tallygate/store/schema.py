"""Tables, as SQLAlchemy Core objects shared by the writer and the queries.

Times are integer milliseconds since the Unix epoch (UTC): compact, index-friendly and the
same on SQLite and PostgreSQL. Money is integer picodollars (1e-12 USD). The migration in
`migrations/versions/` creates exactly these tables; change both together.
"""

from __future__ import annotations

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
)

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
)

requests = Table(
    "requests", metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("key_id", String(36), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("labels", JSON, nullable=False),
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
    Index("ix_requests_created_at", "created_at"),
    Index("ix_requests_key_created", "key_id", "created_at"),
    Index("ix_requests_model_created", "requested_model", "created_at"),
)

# One row per request and distinct tag prefix: "every request under P" is an index range on
# (prefix, created_at) and counts each request once, however many of its tags share P.
request_tags = Table(
    "request_tags", metadata,
    Column("request_id", String(40), primary_key=True),
    Column("prefix", String(256), primary_key=True),
    Column("depth", SmallInteger, nullable=False),
    Column("is_tag", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_request_tags_prefix_created", "prefix", "created_at"),
)
