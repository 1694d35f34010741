"""Budget windows: the period a key's limit or a budget counts spend over, and its bounds.

A period is text, as stored: 'month' (the default), 'day' and 'week' (ISO weeks, from Monday),
each starting at local midnight in the reporting time zone (`reporting.timezone`, UTC by
default: then a month is the UTC calendar month every budget counted before periods existed, and
keeps its Redis counters), or a rolling 'hours:N' / 'days:N'.

A window is counted in slots, each named by text that is also its counters' Redis key part:
'<start ms>' for a month (the name month counters always had), 'd<start>' for a day,
'w<start>' for a week. A rolling window of length L is cut in `ROLLING_SLOTS` slots of L/24,
aligned on the epoch: it covers the slot now running and the 23 before it ('r<slot ms>:<start>'
each), so spend is forgotten a slot at a time and the window spans between 23/24 of L and L.
A settled cost counts in the slot its request started in (the ledger's `created_at`), so a
window's counter equals the ledger's spend between its start and now.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tallygate.core import zones
from tallygate.core.timebuckets import DAY_MS, HOUR_MS

MONTH = "month"
CALENDAR = ("day", "week", MONTH)
ROLLING_SLOTS = 24
MAX_HOURS, MAX_DAYS = 24 * 31, 366


def parse(value: Any) -> str:
    """A period as the API gives it ('day', 'week', 'month', {"hours": N} or {"days": N}) as
    stored text; `ValueError` saying what is allowed."""
    if isinstance(value, str) and value in CALENDAR:
        return value
    if isinstance(value, dict) and len(value) == 1:
        (unit, n), = value.items()
        top = {"hours": MAX_HOURS, "days": MAX_DAYS}.get(unit)
        if type(n) is float and n.is_integer():  # JSON's 6.0 is the integer 6
            n = int(n)
        if top is not None and type(n) is int and 1 <= n <= top:
            return f"{unit}:{n}"
    raise ValueError(f'must be "day", "week", "month", {{"hours": N}} (N from 1 to {MAX_HOURS}) '
                     f'or {{"days": N}} (N from 1 to {MAX_DAYS})')


def api_form(period: str) -> str | dict[str, int]:
    """The stored text as the API shows it: 'day' or {"hours": 6}."""
    if period in CALENDAR:
        return period
    unit, n = period.split(":")
    return {unit: int(n)}


def label(period: str) -> str:
    """'monthly', 'daily', 'weekly', 'rolling 6-hour' (for messages)."""
    if period in CALENDAR:
        return {"day": "daily", "week": "weekly", MONTH: "monthly"}[period]
    unit, n = period.split(":")
    return f"rolling {n}-{unit[:-1]}"


def span_ms(period: str) -> tuple[int, int]:
    """The shortest and longest a window of `period` lasts (local days of 23 to 25 hours, local
    months of 28 to 31 days give or take a daylight-saving hour, a rolling window between 23/24
    of its length and all of it)."""
    if period == "day":
        return 23 * HOUR_MS, 25 * HOUR_MS
    if period == "week":
        return 7 * DAY_MS - HOUR_MS, 7 * DAY_MS + HOUR_MS
    if period == MONTH:
        return 28 * DAY_MS - HOUR_MS, 31 * DAY_MS + HOUR_MS
    length = slot_ms(period) * ROLLING_SLOTS
    return length - length // ROLLING_SLOTS, length


def as_tight(period: str, than: str) -> bool:
    """Whether a limit per `period` lets no more through than the same amount per `than`: the
    same period, or one whose shortest window outlasts `than`'s longest (a monthly $10 is as
    tight as a daily $10; a daily $10 is not as tight as a monthly $10)."""
    return period == than or span_ms(period)[0] >= span_ms(than)[1]


def slot_ms(period: str) -> int:
    """The length of one slot of a rolling period."""
    unit, n = period.split(":")
    return int(n) * (HOUR_MS if unit == "hours" else DAY_MS) // ROLLING_SLOTS


@dataclass(frozen=True, slots=True)
class Window:
    """A period's window at some instant: `start`, `end` (None for a rolling window: it ends now
    and moves), the slots it counts (`slots[0]`, the running one, takes new spend), and the
    instants `since` and `until` between which it is this window."""

    period: str
    start: int
    end: int | None
    slots: tuple[str, ...]
    since: int
    until: int
    spec: str = ""  # the slots separated by spaces (as the Redis reservation takes them)

    def __post_init__(self) -> None:
        if not self.spec:
            object.__setattr__(self, "spec", " ".join(self.slots))

    def holds(self, at_ms: int) -> bool:
        return self.since <= at_ms < self.until

    def slot_bounds(self) -> list[tuple[str, int, int]]:
        """(slot, start, end) of every slot, oldest last (as `slots`)."""
        if self.end is not None:
            return [(self.slots[0], self.start, self.end)]
        step = slot_ms(self.period)
        return [(s, self.until - (i + 1) * step, self.until - i * step) for i, s in enumerate(self.slots)]


def window(period: str, at_ms: int, tz: str = zones.UTC) -> Window:
    """The window of `period` that holds the instant `at_ms`."""
    if period == MONTH:
        start = zones.floor(at_ms, MONTH, tz)
        end = zones.after(start, MONTH, tz)
        return Window(period, start, end, (str(start),), start, end)
    if period == "day":
        start = zones.floor(at_ms, "day", tz)
        end = zones.after(start, "day", tz)
        return Window(period, start, end, (f"d{start}",), start, end)
    if period == "week":
        local = dt.datetime.fromtimestamp(zones.floor(at_ms, "day", tz) / 1000,
                                          dt.UTC if tz == zones.UTC else zones.zone(tz))
        monday = local.date() - dt.timedelta(days=local.weekday())
        after = monday + dt.timedelta(days=7)
        start = zones.local_midnight(monday.year, monday.month, monday.day, tz)
        end = zones.local_midnight(after.year, after.month, after.day, tz)
        return Window(period, start, end, (f"w{start}",), start, end)
    step = slot_ms(period)
    current = at_ms - at_ms % step
    slots = tuple(f"r{step}:{current - i * step}" for i in range(ROLLING_SLOTS))
    return Window(period, current - (ROLLING_SLOTS - 1) * step, None, slots, current, current + step)


class Windows:
    """The current window of each period, computed once per period until it moves: a request
    pays a dict lookup per scope."""

    def __init__(self, tz: str = zones.UTC) -> None:
        self.tz = tz
        self._now: dict[str, Window] = {}
        self.moves = 0  # how many times a window was added or moved

    def at(self, period: str, at_ms: int) -> Window:
        w = self._now.get(period)
        if w is None or not w.since <= at_ms < w.until:
            w, old = window(period, at_ms, self.tz), w
            if old is None or w.until > old.until:  # a request started before a boundary does not move it back
                self._now[period] = w
                self.moves += 1
        return w

    def current(self) -> list[Window]:
        """The window last seen of every period used so far."""
        return list(self._now.values())
