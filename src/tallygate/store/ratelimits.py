"""Rate limits in the database: a scope and any subset of three limits.

A rate limit's `scope` is one of budgets' (`{"label": {...}}`, `{"tag": path}`, `{"key": id}`,
see `store/budgets.py`) or `{"model": name}` (a model or `policy/<name>` as requests name it).
Only the definitions live here; what each one has admitted lives in the gateways' memory or in
Redis (`pipeline/ratelimit.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, delete, select, update

from tallygate.store.keys import now_ms
from tallygate.store.schema import rate_limits

LIMIT_FIELDS = ("requests_per_second", "requests_per_minute", "tokens_per_minute", "max_concurrent")


@dataclass(frozen=True, slots=True)
class RateLimitRecord:
    """One row of `rate_limits`."""

    id: str
    name: str
    scope: dict[str, Any]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    created_by: str | None
    created_at: int
    updated_at: int
    requests_per_second: int | None = None

    @property
    def kind(self) -> str:
        """'label', 'tag', 'key' or 'model'."""
        return next(iter(self.scope))


RATE_LIMIT_FIELDS = tuple(f.name for f in fields(RateLimitRecord))


def _record(row: Mapping[Any, Any]) -> RateLimitRecord:
    return RateLimitRecord(**{f: row[f] for f in RATE_LIMIT_FIELDS})


class RateLimitStore:
    """Synchronous queries; the gateway calls them from worker threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, *, name: str, scope: dict[str, Any], limits: Mapping[str, int | None],
               created_by: str | None) -> RateLimitRecord:
        ts = now_ms()
        record = RateLimitRecord(id=str(uuid.uuid4()), name=name, scope=scope,
                                 requests_per_minute=limits.get("requests_per_minute"),
                                 tokens_per_minute=limits.get("tokens_per_minute"),
                                 max_concurrent=limits.get("max_concurrent"),
                                 requests_per_second=limits.get("requests_per_second"),
                                 created_by=created_by, created_at=ts, updated_at=ts)
        with self._engine.begin() as conn:
            conn.execute(rate_limits.insert().values(**{f: getattr(record, f) for f in RATE_LIMIT_FIELDS}))
        return record

    def get(self, limit_id: str) -> RateLimitRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(rate_limits).where(rate_limits.c.id == limit_id)).mappings().first()
            return _record(row) if row else None

    def all(self) -> list[RateLimitRecord]:
        with self._engine.connect() as conn:
            query = select(rate_limits).order_by(rate_limits.c.created_at, rate_limits.c.id)
            return [_record(r) for r in conn.execute(query).mappings()]

    def update(self, limit_id: str, values: dict[str, Any]) -> RateLimitRecord | None:
        with self._engine.begin() as conn:
            result = conn.execute(update(rate_limits).where(rate_limits.c.id == limit_id)
                                  .values(**values, updated_at=now_ms()))
            if result.rowcount == 0:
                return None
            return _record(conn.execute(select(rate_limits).where(rate_limits.c.id == limit_id)).mappings().one())

    def delete(self, limit_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(rate_limits).where(rate_limits.c.id == limit_id)).rowcount > 0
