"""Feedback on a request: one score per request (a new one replaces it), kept in the roll-ups.

Storing a score also adjusts the roll-up rows the request counts in (its usage rows at every
level and its tag rows), so quality can be grouped like cost: `feedback_count` gains one the
first time, `feedback_sum` gains the new score less the replaced one. The request row is
locked first (PostgreSQL `FOR UPDATE`; a process lock on SQLite, whose writes are serialised
anyway), so two scores for one request cannot both count as the first.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from tallygate.store.rollups import DIM_DIMS, TAG_DIMS, USAGE_DIMS, record_keys
from tallygate.store.schema import dim_rollups, feedback, label_sets, requests, tag_rollups, usage_rollups


@dataclass(slots=True)
class Stored:
    request_id: str
    score_milli: int
    comment: str | None
    created_at: int
    updated_at: int
    replaced: bool


class FeedbackStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()

    def put(self, request_id: str, score_milli: int, comment: str | None,
            only_key: str | None = None) -> Stored | None:
        """Store a score; None when the request is not in the ledger (or, with `only_key`, was
        not made by that key: a key may rate only its own requests)."""
        now = time.time_ns() // 1_000_000
        with self._lock, self._engine.begin() as conn:
            rec = conn.execute(select(requests.c.id, requests.c.created_at, requests.c.key_id, requests.c.labels,
                                      requests.c.label_set, requests.c.tags, requests.c.requested_model,
                                      requests.c.served_model, requests.c.provider, requests.c.status)
                               .where(requests.c.id == request_id).with_for_update()).mappings().first()
            if rec is None or (only_key is not None and rec["key_id"] != only_key):
                return None
            old = conn.execute(select(feedback.c.score_milli, feedback.c.created_at)
                               .where(feedback.c.request_id == request_id)).first()
            if old is None:
                conn.execute(feedback.insert().values(request_id=request_id, score_milli=score_milli,
                                                      comment=comment, created_at=now, updated_at=now))
            else:
                conn.execute(update(feedback).where(feedback.c.request_id == request_id)
                             .values(score_milli=score_milli, comment=comment, updated_at=now))
            _adjust(conn, dict(rec), 0 if old else 1, score_milli - (old[0] if old else 0))
        return Stored(request_id, score_milli, comment, old[1] if old else now, now, old is not None)


def _adjust(conn: Connection, rec: dict[str, Any], count: int, total: int) -> None:
    """Add `count` and `total` to the feedback columns of every roll-up row `rec` is in."""
    labels = rec["labels"]
    if labels is None and rec["label_set"] is not None:
        labels = conn.execute(select(label_sets.c.labels).where(label_sets.c.id == rec["label_set"])).scalar_one()
    keys = record_keys(rec, labels or {})
    tables: list[tuple[Any, tuple[str, ...], list[tuple[Any, ...]]]]
    tables = [(usage_rollups[level], USAGE_DIMS, [key]) for level, key in keys.usage.items()]
    tables += [(tag_rollups[level], TAG_DIMS, ks) for level, ks in keys.tags.items()]
    tables += [(dim_rollups[level], DIM_DIMS, ks) for level, ks in keys.dims.items()]
    for t, names, rows in tables:
        for key in rows:
            conn.execute(update(t).where(*(t.c[d] == v for d, v in zip(names, key, strict=True)))
                         .values(feedback_count=t.c.feedback_count + count, feedback_sum=t.c.feedback_sum + total))
