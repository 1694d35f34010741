"""Local time buckets in an IANA zone: the hours, days and months a reporting time zone sees.

Epoch milliseconds in, epoch milliseconds out. A local day or month starts at local midnight
(the first instant of that date: when a daylight-saving change skips midnight, the instant the
clock jumps); a local hour starts where the wall clock reads :00, so in Asia/Kolkata (+05:30)
it is half past a UTC hour; where a daylight-saving change of 30 minutes falls inside a wall-clock
hour (Australia/Lord_Howe), the hour after it starts at the change (a half-hour bucket). 'UTC' is
the UTC buckets of `core.timebuckets`.

Every offset in today's zone database is a multiple of 15 minutes, so a local bucket never
starts inside a UTC quarter-hour: floors are computed once per quarter-hour and memoised.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tallygate.core import timebuckets
from tallygate.core.timebuckets import HOUR_MS

UTC = "UTC"


@lru_cache(maxsize=1)
def names() -> list[str]:
    """Every IANA zone name this machine's zone database holds, sorted (the API documents them)."""
    return sorted(available_timezones() | {UTC})
QUARTER_MS = 900_000


@lru_cache(maxsize=128)
def zone(name: str) -> ZoneInfo:
    """The zone of an IANA name ('Europe/Berlin'); ValueError when there is none by that name."""
    if not name or not name.isascii() or name.startswith(("/", ".")) or ".." in name or len(name) > 64:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _ms(d: dt.datetime) -> int:
    return int(d.timestamp() * 1000)


def _local(ms: int, tz: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, zone(tz))


def _start_of(d: dt.datetime, level: str) -> int:
    """The first instant of the local day or month of the wall-clock date in `d`."""
    z = d.tzinfo
    day = 1 if level == "month" else d.day
    return _ms(dt.datetime(d.year, d.month, day, tzinfo=z))  # fold=0: in a gap, the instant of the jump


def offset_ms(ms: int, tz: str) -> int:
    """The zone's UTC offset at `ms`, in milliseconds."""
    offset = _local(ms, tz).utcoffset()
    return int(offset.total_seconds() * 1000) if offset is not None else 0


def _floor(ms: int, level: str, tz: str) -> int:
    if level == "hour":
        shift = offset_ms(ms, tz)
        start = ms - (ms + shift) % HOUR_MS
        # a 30-minute daylight-saving change inside the wall-clock hour (Lord Howe): the hour starts at
        # the change, not at the :00 of the new offset, which lies in the hour before it
        while start < ms and offset_ms(start, tz) != shift:
            start += QUARTER_MS
        return start
    return _start_of(_local(ms, tz), level)


@lru_cache(maxsize=1 << 16)
def _quarter_floor(quarter: int, level: str, tz: str) -> int:
    return _floor(quarter, level, tz)


def floor(ms: int, level: str, tz: str = UTC) -> int:
    """The start of the local 'hour', 'day' or 'month' that holds `ms`."""
    if tz == UTC:
        return timebuckets.floor(ms, level)
    return _quarter_floor(ms - ms % QUARTER_MS, level, tz)


def after(start: int, level: str, tz: str = UTC) -> int:
    """The start of the local bucket after the one that holds `start`."""
    if tz == UTC:
        return timebuckets.ceil(timebuckets.floor(start, level) + 1, level)
    here = floor(start, level, tz)
    if level == "hour":
        nxt = floor(here + HOUR_MS, level, tz)
        return nxt if nxt > here else here + HOUR_MS
    d = _local(here, tz)
    if level == "day":
        day = dt.date(d.year, d.month, d.day) + dt.timedelta(days=1)
        return _ms(dt.datetime(day.year, day.month, day.day, tzinfo=d.tzinfo))
    year, month = d.year + d.month // 12, d.month % 12 + 1
    return _ms(dt.datetime(year, month, 1, tzinfo=d.tzinfo))


def ceil(ms: int, level: str, tz: str = UTC) -> int:
    """The first local bucket boundary at or after `ms`."""
    start = floor(ms, level, tz)
    return ms if start == ms else after(start, level, tz)


def local_iso(ms: int, level: str, tz: str = UTC) -> str:
    """A bucket start as its label: 'YYYY-MM' or 'YYYY-MM-DD' (local), or the hour with its
    offset ('2026-10-25T02:00:00+01:00'; 'Z' in UTC), which tells a repeated autumn hour apart."""
    if tz == UTC:
        when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        return {"hour": when.strftime("%Y-%m-%dT%H:00:00Z"), "day": when.strftime("%Y-%m-%d"),
                "month": when.strftime("%Y-%m")}[level]
    when = _local(ms, tz)
    if level == "hour":
        return when.replace(microsecond=0).isoformat()
    return when.strftime("%Y-%m-%d" if level == "day" else "%Y-%m")


def local_midnight(year: int, month: int, day: int, tz: str = UTC) -> int:
    """The first instant of a local date."""
    return _ms(dt.datetime(year, month, day, tzinfo=dt.UTC if tz == UTC else zone(tz)))
