"""Which hours hold the records a filter asks for, read from the hour roll-ups.

The logs and the raw-ledger reads of analytics use this to skip every hour that holds no match
(a filter that matches nothing is answered without reading a record) and to know, before reading,
how many records an hour may give: for each hour, the smallest count among the filter's parts
(a key, a label, a model, a status, a tag subtree), an upper bound of the records that match
them all. Each part is an index range of `dim_rollup_hour` (dim, value, bucket) or
`tag_rollup_hour` (prefix, bucket): a few hundred entries per month and part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select, true

from tallygate.core.timebuckets import HOUR_MS, month_floor
from tallygate.store.schema import dim_rollups, requests, tag_rollups


@dataclass(slots=True)
class Parts:
    """A filter in roll-up terms: `pairs` are (dim, value) that must all hold, `tag` a subtree."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    tag: str | None = None

    @classmethod
    def of(cls, *, tag: str | None = None, labels: dict[str, str] | None = None, key_id: str | None = None,
           model: str | None = None, status: int | None = None, provider: str | None = None,
           served_model: str | None = None) -> Parts:
        pairs = [(f"label.{n}", v) for n, v in (labels or {}).items()]
        for dim, value in (("key", key_id), ("model", model), ("status", None if status is None else str(status)),
                           ("provider", provider), ("served_model", served_model)):
            if value is not None:
                pairs.append((dim, value))
        return cls(pairs, tag)


def _range(col, from_ms: int | None, to_ms: int | None) -> list:  # type: ignore[no-untyped-def,type-arg]
    where = []
    if from_ms is not None:
        where.append(col >= from_ms - from_ms % HOUR_MS)
    if to_ms is not None:
        where.append(col < to_ms)
    return where


def all_counts(conn: Connection, from_ms: int | None, to_ms: int | None) -> dict[int, int]:
    """Records per hour (every record) in [from, to), hours touched by the range."""
    t = dim_rollups["hour"]
    query = (select(t.c.bucket, t.c.requests)
             .where(t.c.dim == "", t.c.value == "", *_range(t.c.bucket, from_ms, to_ms)))
    return dict(conn.execute(query).tuples().all())


def records_between(conn: Connection, from_ms: int, to_ms: int) -> int:
    """Records in [from, to), counted from the ledger itself (for a part of an hour, which the
    hour roll-ups cannot tell)."""
    query = select(func.count()).select_from(requests).where(requests.c.created_at >= from_ms,
                                                              requests.c.created_at < to_ms)
    return int(conn.execute(query).scalar_one())


def tag_counts(conn: Connection, tag: str, from_ms: int | None, to_ms: int | None) -> dict[int, int]:
    """Records per hour with a tag in `tag`'s subtree."""
    t = tag_rollups["hour"]
    query = (select(t.c.bucket, func.sum(t.c.requests))
             .where(t.c.prefix == tag, *_range(t.c.bucket, from_ms, to_ms)).group_by(t.c.bucket))
    return {int(h): int(n) for h, n in conn.execute(query).tuples()}


def hour_counts(conn: Connection, parts: Parts, from_ms: int | None, to_ms: int | None) -> dict[int, int]:
    """hour -> an upper bound of the records matching `parts` in it; hours without any are absent."""
    counts: dict[int, int] | None = None
    t = dim_rollups["hour"]
    for dim, value in parts.pairs:
        query = (select(t.c.bucket, t.c.requests)
                 .where(t.c.dim == dim, t.c.value == value, *_range(t.c.bucket, from_ms, to_ms)))
        got = dict(conn.execute(query).tuples().all())
        counts = got if counts is None else {h: min(n, got[h]) for h, n in counts.items() if h in got}
        if not counts:
            return {}
    if parts.tag is not None:
        got = tag_counts(conn, parts.tag, from_ms, to_ms)
        counts = got if counts is None else {h: min(n, got[h]) for h, n in counts.items() if h in got}
    return all_counts(conn, from_ms, to_ms) if counts is None else counts


def tags_under(conn: Connection, tag: str, from_ms: int | None, to_ms: int | None) -> list[str]:
    """The tags as sent under `tag` (itself included) that records of the months of [from, to) carry."""
    t = tag_rollups["month"]
    inside = tag + "/"
    where = [t.c.is_tag == true(), (t.c.prefix == tag) | (func.substr(t.c.prefix, 1, len(inside)) == inside)]
    if from_ms is not None:
        where.append(t.c.bucket >= month_floor(from_ms))
    if to_ms is not None:
        where.append(t.c.bucket < to_ms)
    return list(conn.execute(select(t.c.prefix).where(*where).distinct()).scalars())
