"""Requests, errors and spend per minute over a short range of the raw ledger (the on-call chart).

No roll-up holds minutes; a range is capped at `MAX_RANGE_MS` (25 hours: a day counted from the
top of its first hour; about 350,000 records at 10M a month), read with the index on `created_at`
and summed by the database: 230 ms a day on SQLite at 10M, so with a columnar copy the API reads
the copy and only the minutes after it from here (`analytics/minutes.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, case, func, select

from tallygate.store.schema import requests

MINUTE_MS = 60_000
MAX_RANGE_MS = 25 * 3_600_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Minute:
    """One minute that had requests: its start (epoch ms), counts and exact spend."""

    start_ms: int
    requests: int
    errors: int  # status >= 400, as the analytics API counts them
    cost_pico: int


class MinuteSource(Protocol):
    """What `GET /v1/analytics/minutes` reads: the raw ledger (`MinuteCounts`), or the columnar
    copy up to where it holds every record and the ledger after it (`analytics/minutes.py`)."""

    def between(self, from_ms: int, to_ms: int) -> list[Minute]: ...


class MinuteCounts:
    """Synchronous (run from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def between(self, from_ms: int, to_ms: int) -> list[Minute]:
        """The minutes of [from_ms, to_ms) that had requests, oldest first."""
        c = requests.c
        minute = (c.created_at - c.created_at % MINUTE_MS).label("minute")
        stmt = (select(minute, func.count(), func.sum(case((c.status >= 400, 1), else_=0)), func.sum(c.cost_pico))
                .where(c.created_at >= from_ms, c.created_at < to_ms).group_by(minute).order_by(minute))
        with self._engine.connect() as conn:
            return [Minute(start_ms=int(m), requests=int(n), errors=int(e or 0), cost_pico=int(p or 0))
                    for m, n, e, p in conn.execute(stmt)]
