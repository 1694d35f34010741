"""The on-call page's question in one: the minutes of the last hours and of the same hours on each
previous day, and per dimension the groups of those hours now and summed over the previous days.

The page asked the minutes API once per day and the usage API once per dimension and day (32
questions for 6 hours against 7 days, each with its own roll-up reads and freshness check: 1-2.5 s
at 10M records). Here the previous days of a dimension are one scan of the columnar copy over their
windows (`AnalyticsStore.collect_spans`), and the last hours one more (the ledger for the minutes
the copy does not hold yet). Every figure stays exact: spend in integer picodollars; without a copy
holding those hours, the same groups are summed from one ordinary question per window.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from tallygate.analytics.query import Dim, Query
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import render_value
from tallygate.core.metrics import COST_PICO, ERRORS, REQUESTS, Agg
from tallygate.core.money import usd_text
from tallygate.core.timebuckets import DAY_MS
from tallygate.store.minutes import MinuteSource

Groups = dict[tuple[Any, ...], Agg]
# the parts of one answer read side by side (DuckDB and the databases release the GIL)
_PARTS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tallygate-oncall")


def windows_of(from_ms: int, to_ms: int, days: int) -> list[tuple[int, int]]:
    """[from, to) now, then 24 hours earlier for each previous day (newest first)."""
    return [(from_ms - k * DAY_MS, to_ms - k * DAY_MS) for k in range(days + 1)]


class OnCall:
    """Synchronous (run from a worker thread)."""

    def __init__(self, store: AnalyticsStore, minutes: MinuteSource) -> None:
        self._store = store
        self._minutes = minutes

    def compare(self, from_ms: int, to_ms: int, days: int, dims: tuple[Dim, ...], tz: str, limit: int,
                with_minutes: bool = True) -> dict[str, Any]:
        windows = windows_of(from_ms, to_ms, days)
        doc: dict[str, Any] = {"object": "analytics.oncall", "from": from_ms, "to": to_ms, "days": days, "timezone": tz,
                               "windows": [{"from": a, "to": b} for a, b in windows]}
        asked = []
        for d in dims:
            q = Query((d,), from_ms=from_ms, to_ms=to_ms, tz=tz)
            asked.append((d, _PARTS.submit(self._now, q), _PARTS.submit(self._summed, q, sorted(windows[1:]))))
        if with_minutes:  # while the groups are read
            doc["minutes"] = [[{"minute": m.start_ms, "requests": m.requests, "errors": m.errors,
                                "cost": usd_text(m.cost_pico)} for m in self._minutes.between(a, b)]
                              for a, b in windows]
        doc["groups"] = {d.name: {"now": self._rows(d, now.result(), limit, tz),
                                  "before": self._rows(d, before.result(), limit, tz)} for d, now, before in asked}
        return doc

    def _now(self, q: Query) -> Groups:
        """The last hours: the copy up to where it holds every record, the ledger after it."""
        assert q.from_ms is not None and q.to_ms is not None
        store = self._store
        until = store.copied_until(q.from_ms) if store.columnar_configured else None
        if until is None or until <= q.from_ms:
            return store.collect(q).groups
        split = min(until, q.to_ms)
        out = store.collect_spans(q, [(q.from_ms, split)])
        if out is None:
            return store.collect(q).groups
        if split < q.to_ms:
            _add(out, store.collect(replace(q, from_ms=split)).groups)
        return out

    def _summed(self, q: Query, windows: list[tuple[int, int]]) -> Groups:
        """The groups of the previous days' windows, summed: one scan of the copy, else one question each."""
        store = self._store
        found = store.collect_spans(q, windows) if store.columnar_configured and store.columnar else None
        if found is not None:
            return found
        out: Groups = {}
        for a, b in windows:
            _add(out, store.collect(replace(q, from_ms=a, to_ms=b)).groups)
        return out

    def _rows(self, d: Dim, groups: Groups, limit: int, tz: str) -> dict[str, Any]:
        """The first `limit` groups by spend, then requests (then value), and how many there are."""
        ordered = sorted(groups.items(), key=lambda kv: (-kv[1].v[COST_PICO], -kv[1].v[REQUESTS],
                                                         "" if kv[0][0] is None else str(kv[0][0])))
        ordered = [(k, a) for k, a in ordered if a.v[REQUESTS] > 0]
        names = self._store.key_names({k[0] for k, _ in ordered[:limit] if k[0]}) if d.kind == "key" else {}
        data = []
        for (value,), agg in ordered[:limit]:
            row = {"group": {d.name: render_value(d, value, tz)}, "requests": agg.v[REQUESTS],
                   "errors": agg.v[ERRORS], "cost": usd_text(agg.v[COST_PICO])}
            if d.kind == "key":
                row["key_name"] = names.get(value)
            data.append(row)
        return {"data": data, "row_count": len(ordered)}


def _add(into: Groups, more: Groups) -> None:
    for key, agg in more.items():
        have = into.get(key)
        if have is None:
            into[key] = Agg(agg.v, None, None)
        else:
            have.add_vector(agg.v)
