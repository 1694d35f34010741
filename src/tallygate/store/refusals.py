"""The gateway's own refusals in the ledger, per key: budgets' 402s (`budget_exceeded`) and
rate limits' 429s (`rate_limit_exceeded`); a provider's own 429 (`upstream_rate_limited`) is
not one of them.

One query for any number of keys, read with the index on (key_id, created_at) over the range.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, func, select

from tallygate.store.schema import requests

REFUSAL_CODES = ("budget_exceeded", "rate_limit_exceeded")


class RefusalCounts:
    """Synchronous (run from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def by_key(self, key_ids: Collection[str], since_ms: int) -> dict[str, dict[str, int]]:
        """key id -> {error code: refusals since `since_ms`}, every code of `REFUSAL_CODES`
        present (0 when none); keys without refusals are absent."""
        if not key_ids:
            return {}
        c = requests.c
        stmt = (select(c.key_id, c.error_code, func.count())
                .where(c.key_id.in_(list(key_ids)), c.created_at >= since_ms, c.status.in_((402, 429)),
                       c.error_code.in_(REFUSAL_CODES))
                .group_by(c.key_id, c.error_code))
        out: dict[str, dict[str, int]] = {}
        with self._engine.connect() as conn:
            for key_id, code, n in conn.execute(stmt):
                out.setdefault(key_id, dict.fromkeys(REFUSAL_CODES, 0))[code] = int(n)
        return out
