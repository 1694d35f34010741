"""A logs filter's matches read from the columnar copy, for `store.logs.LogReader`.

The logs pages read the records themselves from the ledger; which records a rare filter matches
is asked of the copy instead: its matches per UTC hour (`hours`, so that a walk skips the hours
without one) and the (created_at, id) of its next matches (`keys`), both before the copy's mark
(`AnalyticsStore.exact_until`). What was read is kept a while, so that a walk's pages share it.
"""

from __future__ import annotations

import time
from typing import Any

from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.analytics.query import Dim, Query
from tallygate.analytics.reader import AnalyticsStore
from tallygate.core.metrics import REQUESTS
from tallygate.core.timebuckets import HOUR_MS
from tallygate.store.logs import LogFilter

HOURS_TTL_S = 30.0  # a logs filter's matching hours are counted again after this long
KEYS_TTL_S = 30.0  # a logs filter's keys read ahead are read again after this long
KEYS_AHEAD = 1000  # a logs page reads this many more keys of its filter (the next pages')
KEYS_WINDOWS = (HOUR_MS, 24 * HOUR_MS, 7 * 24 * HOUR_MS, None)  # the stretches a page's keys are looked for in


class CopiedLogs:
    """`hours` and `keys` of a logs filter from the store's columnar copy (None from either until
    the copy is made: a logs page never waits for it)."""

    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store
        self._hours: dict[tuple[Any, ...], tuple[float, dict[int, int], int, int]] = {}
        # a filter's keys read ahead: (when, repairs, low, high, every match in [low, high) newest first)
        self._keys: dict[tuple[Any, ...], tuple[float, int, int | None, int, list[tuple[int, str]]]] = {}

    def hours(self, f: LogFilter) -> tuple[dict[int, int], int] | None:
        """A logs filter's exact matches per UTC hour before the copy's watermark (one columnar scan,
        kept for `HOURS_TTL_S` so that a walk's pages share it); None without a columnar engine,
        and until its first copy is made (in the background: a logs page never waits for it)."""
        store = self._store
        if not store.copy_ready() or store.columnar is None or store.mirror is None:
            return None
        store.sync(wait=False)
        mark = store.exact_until(f.from_ms)  # a late record's hour is not skipped
        # not keyed by the watermark (it moves at every sync): a count kept for a while stays exact for
        # the hours before the watermark it was counted at, which is returned with it, unless an hour of
        # the copy was copied again since (`Mirror.repairs`: late records)
        key = _key_of(f)
        now = time.monotonic()
        found = self._hours.get(key)
        if found is not None and now - found[0] < HOURS_TTL_S and found[3] == store.mirror.repairs:
            return found[1], min(found[2], mark)
        repairs = store.mirror.repairs
        hi = mark if f.to_ms is None else min(f.to_ms, mark)
        groups = store.columnar.answer(self._question(f, f.from_ms, hi, (Dim("time", "hour"),)))
        hours = {int(k[0]): agg.v[REQUESTS] for k, agg in groups.items()}
        if len(self._hours) > 256:
            self._hours.clear()
        self._hours[key] = (now, hours, mark, repairs)
        return hours, mark

    def keys(self, f: LogFilter, upper: int | None, after: tuple[int, str] | None,
                 want: int) -> tuple[list[tuple[int, str]], int] | None:
        """The copy's mark (`AnalyticsStore.exact_until`), and the (created_at, id) of the first `want` records
        matching `f` before the hour the mark is in and before `upper`, after the logs cursor
        `after`, newest first; None until the copy is made (in the background: never waited for).

        The copy is asked over the last hour, day, week, then the whole range, until one holds
        `want + KEYS_AHEAD` matches: a common filter reads an hour, a rare one scans once. What
        was read is kept (`KEYS_TTL_S`, until an hour is copied again) with the stretch it is
        all of the matches of: the next pages of a walk are read from it, not from the copy."""
        store = self._store
        if not store.copy_ready() or store.columnar is None or store.mirror is None:
            return None
        store.sync(wait=False)
        mark = store.exact_until(f.from_ms)  # a late record's hour: from the ledger
        split = mark - mark % HOUR_MS
        hi = split if upper is None else min(upper, split)
        lo = f.from_ms
        if lo is not None and lo >= hi:
            return [], mark
        if after is not None and after[0] >= hi:  # the cursor is in the ledger's part: all of the copy's is older
            after = None
        bound = hi if after is None else after[0] + 1  # after the newest time the page may hold
        key = _key_of(f)
        now = time.monotonic()
        kept = self._keys.get(key)
        if kept is not None and now - kept[0] < KEYS_TTL_S and kept[1] == store.mirror.repairs:
            _, _, low, high, keys = kept
            if bound <= high:  # its newest `want` before `bound` are the range's, or it holds all of them
                hit = [k for k in keys if k[0] < hi and (after is None or k < after)]
                if len(hit) >= want or low is None or (lo is not None and lo >= low):
                    return hit[:want], mark
        repairs = store.mirror.repairs
        ahead = want + KEYS_AHEAD
        for span in KEYS_WINDOWS:
            start = None if span is None else bound - span
            if lo is not None and (start is None or start <= lo):
                start = lo
            got = store.columnar.keys(self._question(f, start, hi), after, ahead)
            if len(got) == ahead or start == lo:
                break
        # kept: every match in [low, high); not the cursor's millisecond (its matches after the cursor
        # were not read), nor the last one read when the read was cut (its older matches were not)
        high = hi if after is None else after[0]
        low = start if len(got) < ahead else got[-1][0] + 1
        if len(self._keys) > 256:
            self._keys.clear()
        self._keys[key] = (now, repairs, low, high,
                               [k for k in got if k[0] < high and (low is None or k[0] >= low)])
        return got[:want], mark

    def _question(self, f: LogFilter, lo: int | None, hi: int, dims: tuple[Dim, ...] = ()) -> ColumnarQuestion:
        q = Query(dims, f.tag, f.labels, f.key_id, f.model, f.from_ms, f.to_ms, status=f.status,
                  error_code=f.error_code, provider=f.provider, served_model=f.served_model)
        return self._store.columnar_question(q, lo, hi)


def _key_of(f: LogFilter) -> tuple[Any, ...]:
    return (f.tag, tuple(sorted(f.labels.items())), f.key_id, f.model, f.status, f.error_code, f.provider,
                f.served_model, f.from_ms, f.to_ms)
