"""UTC time buckets on epoch milliseconds: hours, days and calendar months."""

from __future__ import annotations

import datetime as dt

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _ms(d: dt.datetime) -> int:
    return int(d.timestamp() * 1000)


def month_start(year: int, month: int) -> int:
    """The first millisecond of a calendar month."""
    return _ms(dt.datetime(year, month, 1, tzinfo=dt.UTC))


_last_month = (0, 0)  # [start, end) of the month month_floor found last: most calls are in it


def month_floor(ms: int) -> int:
    """The first millisecond of the month that holds `ms`."""
    global _last_month
    start, end = _last_month
    if start <= ms < end:
        return start
    d = _utc(ms)
    start = month_start(d.year, d.month)
    _last_month = (start, month_start(d.year + d.month // 12, d.month % 12 + 1))
    return start


def month_after(ms: int) -> int:
    """The first millisecond of the month after the one that holds `ms`."""
    d = _utc(ms)
    return month_start(d.year + d.month // 12, d.month % 12 + 1)


def floor(ms: int, level: str) -> int:
    """The start of the 'hour', 'day' or 'month' that holds `ms`."""
    if level == "hour":
        return ms - ms % HOUR_MS
    if level == "day":
        return ms - ms % DAY_MS
    return month_floor(ms)


def ceil(ms: int, level: str) -> int:
    """The first bucket boundary of `level` at or after `ms`."""
    start = floor(ms, level)
    if start == ms:
        return ms
    return month_after(start) if level == "month" else start + (HOUR_MS if level == "hour" else DAY_MS)
