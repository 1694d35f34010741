"""Which stretches of a question's range each source of the columnar copy answers.

Pure time arithmetic over UTC milliseconds: `unit` is the question's time bucket (`hour`, `day`,
`month`, or None without a time dimension) and `tz` its IANA zone. A roll-up row holds whole UTC
days, months or hours; it answers a question only where each of its rows lies within one local
bucket (`core.zones`, the zone database the rest of the API uses). The rest is read from the
records, as the gaps between those stretches.
"""

from __future__ import annotations

from tallygate.core import timebuckets, zones
from tallygate.core.timebuckets import DAY_MS, HOUR_MS

QUARTER_MS = zones.QUARTER_MS
Span = tuple[int, int]


def _one_bucket(lo: int, hi: int, unit: str | None, tz: str) -> bool:
    """Whether [lo, hi) lies within one local `unit` bucket (always, without a time dimension)."""
    return unit is None or zones.floor(lo, unit, tz) == zones.floor(hi - 1, unit, tz)


def _extend(out: list[Span], a: int, b: int) -> None:
    """Appends [a, b) to the ordered `out`, joined to its last stretch where they touch."""
    if out and out[-1][1] == a:
        out[-1] = (out[-1][0], b)
    else:
        out.append((a, b))


def joined_days(days: list[int]) -> list[Span]:
    """Ordered day starts as stretches of consecutive days, [start, end)."""
    out: list[Span] = []
    for day in days:
        _extend(out, day, day + DAY_MS)
    return out


def in_buckets(spans: list[Span], unit: str | None, tz: str) -> list[Span]:
    """The UTC days of `spans` that lie within one local time bucket (all of them in UTC; in New
    York, none for days, all but the days around a month's start for months): the bucket of each
    of their records is that of the day's start, which the day roll-up keeps as its time."""
    if unit is None or tz == zones.UTC:
        return spans
    out: list[Span] = []
    for a, b in spans:
        for day in range(a, b, DAY_MS):
            if _one_bucket(day, day + DAY_MS, unit, tz):
                _extend(out, day, day + DAY_MS)
    return out


def whole_months(spans: list[Span], rolled: set[int], unit: str | None, tz: str) -> list[Span]:
    """The whole UTC months of `spans` (from `in_buckets`) that the month roll-up holds (`rolled`:
    their starts) and that lie within one time bucket (no time dimension, or UTC months)."""
    out: list[Span] = []
    for a, b in spans:
        month = a if a == timebuckets.floor(a, "month") else timebuckets.ceil(a, "month")
        while month < b:
            nxt = timebuckets.ceil(month + 1, "month")
            if nxt > b:
                break
            if month in rolled and _one_bucket(month, nxt, unit, tz):
                _extend(out, month, nxt)
            month = nxt
    return out


def split_months(lo: int | None, hi: int | None, rolled: set[int], unit: str | None,
                 tz: str) -> list[tuple[int, int, int, list[Span]]]:
    """The UTC months inside [lo, hi) that the month roll-up holds (`rolled`: their starts) and
    that lie within one local month (`unit` month) but for the day(s) around its start: each as
    (from, to, a day inside that local month, those days). Read as its month row less those days'
    rows, all keyed by that day (Kathmandu: November's row less the 30th, which the records
    answer), instead of thirty day rows."""
    if unit != "month" or tz == zones.UTC or lo is None or hi is None:
        return []
    out: list[tuple[int, int, int, list[Span]]] = []
    month = timebuckets.ceil(lo, "month")
    while True:
        nxt = timebuckets.ceil(month + 1, "month")
        if nxt > hi:
            return out
        if month in rolled:
            days = range(month, nxt, DAY_MS)
            cut = [d for d in days if not _one_bucket(d, d + DAY_MS, "month", tz)]
            rest = [d for d in days if d not in cut]
            if cut and rest and len({zones.floor(d, "month", tz) for d in rest}) == 1:
                out.append((month, nxt, rest[0], [(d, d + DAY_MS) for d in cut]))
        month = nxt


def hour_spans(lo: int | None, hi: int | None, hourly: list[Span], rolled: list[Span], unit: str | None,
               tz: str) -> list[Span]:
    """The whole UTC hours of [lo, hi) that `hourly` (the days an hour roll-up holds) covers, that
    the day roll-up does not answer (`rolled`) and that lie within one local time bucket (a UTC
    hour holds a local day's start in Kolkata: the records answer it), as stretches in order."""
    local = unit is not None and tz != zones.UTC
    out: list[Span] = []
    for gap_lo, gap_hi in gaps(lo, hi, rolled):
        for a, b in within(hourly, gap_lo, gap_hi):
            for hour in range(a + (-a) % HOUR_MS, b - HOUR_MS + 1, HOUR_MS):
                if not local or _one_bucket(hour, hour + HOUR_MS, unit, tz):
                    _extend(out, hour, hour + HOUR_MS)
    return out


def within(spans: list[Span], lo: int | None, hi: int | None) -> list[Span]:
    """The parts of `spans` within [lo, hi) (None: unbounded)."""
    out = []
    for a, b in spans:
        a, b = a if lo is None else max(a, lo), b if hi is None else min(b, hi)
        if a < b:
            out.append((a, b))
    return out


def gaps(lo: int | None, hi: int | None, spans: list[Span]) -> list[tuple[int | None, int | None]]:
    """[lo, hi) less the sorted, disjoint `spans` inside it: the stretches read from the records."""
    out: list[tuple[int | None, int | None]] = []
    at = lo
    for a, b in spans:
        if at is None or a > at:
            out.append((at, a))
        at = b
    if not spans or hi is None or at is None or at < hi:
        out.append((at, hi))
    return out


def offsets(lo: int, hi: int, tz: str) -> list[Span]:
    """(from, UTC offset in ms) for each stretch of [lo, hi) with one offset; offsets change on a
    quarter-hour, found hour by hour and then to the quarter."""
    out = [(lo, zones.offset_ms(lo, tz))]
    for hour in range(lo - lo % HOUR_MS + HOUR_MS, hi, HOUR_MS):
        now = zones.offset_ms(hour, tz)
        if now != out[-1][1]:
            at = next(q for q in range(hour - HOUR_MS + QUARTER_MS, hour + 1, QUARTER_MS)
                      if zones.offset_ms(q, tz) == now)
            out.append((max(at, lo), now))
    return out


def offset_began(ms: int, tz: str) -> int:
    """When the offset in force at `ms` began, if less than an hour before (else an hour before)."""
    now, at = zones.offset_ms(ms, tz), ms - ms % QUARTER_MS
    for _ in range(4):
        if zones.offset_ms(at - QUARTER_MS, tz) != now:
            return at
        at -= QUARTER_MS
    return at
