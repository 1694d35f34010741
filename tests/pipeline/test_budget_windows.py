"""Budget windows (core/windows.py) and the in-memory engine counting each scope in its own:
days and ISO weeks begin at local midnight, a rolling window forgets spend a slot at a time,
several periods bind one request, and bad periods are refused naming what is allowed."""

from __future__ import annotations

import datetime as dt

import pytest

from tallygate.core.windows import ROLLING_SLOTS, Windows, api_form, parse, window
from tallygate.errors import BudgetExceeded
from tallygate.pipeline.budget import MemoryBudget, Scope

BERLIN = "Europe/Berlin"


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


class Clock:
    def __init__(self, when: str) -> None:
        self.now = ms(when) / 1000

    def __call__(self) -> float:
        return self.now

    def to(self, when: str) -> None:
        self.now = ms(when) / 1000


def test_calendar_windows_begin_at_local_midnight_and_weeks_on_monday() -> None:
    at = ms("2026-12-09T00:30:00+01:00")  # a Wednesday, 23:30 UTC the day before
    day = window("day", at, BERLIN)
    assert (day.start, day.end) == (ms("2026-12-09T00:00:00+01:00"), ms("2026-12-10T00:00:00+01:00"))
    week = window("week", at, BERLIN)
    assert (week.start, week.end) == (ms("2026-12-07T00:00:00+01:00"), ms("2026-12-14T00:00:00+01:00"))
    assert window("day", at).start == ms("2026-12-08T00:00:00+00:00")  # in UTC still the 8th
    kolkata = window("day", ms("2026-12-08T20:00:00+00:00"), "Asia/Kolkata")
    assert kolkata.start == ms("2026-12-08T18:30:00+00:00")  # half past a UTC hour
    dst = window("day", ms("2026-03-29T12:00:00+02:00"), BERLIN)  # the 23-hour day
    assert dst.end - dst.start == 23 * 3_600_000
    month = window("month", at, BERLIN)  # local too, named by its start as month counters always were
    assert (month.start, month.end) == (ms("2026-12-01T00:00:00+01:00"), ms("2027-01-01T00:00:00+01:00"))
    assert month.slots == (str(month.start),)
    assert window("month", at).start == ms("2026-12-01T00:00:00+00:00")  # in UTC, the UTC month
    assert window("month", ms("2027-01-01T03:00:00+00:00"), "America/New_York").start == \
        ms("2026-12-01T00:00:00-05:00")  # still December there
    march = window("month", ms("2026-03-15T12:00:00+01:00"), BERLIN)  # a daylight-saving month
    assert march.end - march.start == 31 * 86_400_000 - 3_600_000


def test_a_rolling_window_is_24_slots_ending_with_the_running_one() -> None:
    at = ms("2026-12-08T10:07:00+00:00")
    w = window("hours:6", at)
    assert w.end is None and len(w.slots) == ROLLING_SLOTS
    assert w.since == ms("2026-12-08T10:00:00+00:00") and w.until == ms("2026-12-08T10:15:00+00:00")
    assert w.start == ms("2026-12-08T04:15:00+00:00")  # 23 slots of 15 minutes before the running one
    bounds = w.slot_bounds()
    assert bounds[0] == (w.slots[0], w.since, w.until) and bounds[-1][1] == w.start


def test_periods_parse_from_the_api_form_and_bad_ones_say_what_is_allowed() -> None:
    for given, stored in (("day", "day"), ("week", "week"), ("month", "month"), ({"hours": 6}, "hours:6"),
                          ({"days": 30}, "days:30")):
        assert parse(given) == stored and api_form(stored) == given
    assert parse({"hours": 80.0}) == "hours:80"  # JSON's 80.0 is an integer
    for bad in ("year", "", {"hours": 0}, {"hours": 1.5}, {"hours": True}, {"hours": "6"}, {"weeks": 1},
                {"hours": 1, "days": 1}, {"days": 367}, None, 7):
        with pytest.raises(ValueError, match="must be \"day\", \"week\", \"month\""):
            parse(bad)


def test_a_day_resets_at_local_midnight_while_the_month_keeps_counting() -> None:
    clock = Clock("2026-12-08T23:59:00+01:00")
    budget = MemoryBudget(clock, tz=BERLIN)
    day = Scope("budget", "budget:d", "daily", 100, True, "day")
    month = Scope("budget", "budget:m", "monthly", 150, True, "month")
    budget.settle(budget.reserve_now([day, month], 90), 90)
    with pytest.raises(BudgetExceeded, match="daily limit"):
        budget.reserve_now([day, month], 20)
    clock.to("2026-12-09T00:00:01+01:00")
    assert (budget.spend("budget:d", "day"), budget.spend("budget:m")) == (0, 90)
    with pytest.raises(BudgetExceeded, match="monthly limit"):  # the day has room, the month not
        budget.reserve_now([day, month], 70)
    budget.settle(budget.reserve_now([day, month], 60), 60)
    assert (budget.spend("budget:d", "day"), budget.spend("budget:m")) == (60, 150)


def test_a_cost_counts_in_the_window_its_request_started_in() -> None:
    clock = Clock("2026-12-08T23:59:59+01:00")
    budget = MemoryBudget(clock, tz=BERLIN)
    day = Scope("key", "k", "key", 100, True, "day")
    hold = budget.reserve_now([day], 50, at_ms=ms("2026-12-08T23:59:59+01:00"))
    clock.to("2026-12-09T00:00:02+01:00")
    budget.settle(hold, 50)  # started yesterday: yesterday's spend, as the ledger's created_at says
    assert budget.spend("k", "day") == 0 and budget.reserved("k") == 0


def test_a_rolling_window_forgets_spend_a_slot_at_a_time() -> None:
    clock = Clock("2026-12-08T10:00:00+00:00")
    budget = MemoryBudget(clock)
    rolling = Scope("key", "k", "key", 100, True, "hours:1")  # 24 slots of 150 s
    budget.settle(budget.reserve_now([rolling], 60), 60)
    clock.to("2026-12-08T10:30:00+00:00")
    budget.settle(budget.reserve_now([rolling], 40), 40)
    with pytest.raises(BudgetExceeded, match="rolling 1-hour limit"):
        budget.reserve_now([rolling], 1)
    clock.to("2026-12-08T10:57:29+00:00")  # the first slot is still in the window
    assert budget.spend("k", "hours:1") == 100
    clock.to("2026-12-08T11:00:00+00:00")  # the slot of 10:00 has left it
    assert budget.spend("k", "hours:1") == 40
    budget.settle(budget.reserve_now([rolling], 60), 60)
    clock.to("2026-12-08T11:30:00+00:00")
    assert budget.spend("k", "hours:1") == 60


def test_windows_are_computed_once_until_they_move() -> None:
    wins = Windows(BERLIN)
    first = wins.at("day", ms("2026-12-08T10:00:00+01:00"))
    assert wins.at("day", ms("2026-12-08T23:00:00+01:00")) is first
    nxt = wins.at("day", ms("2026-12-09T00:00:00+01:00"))
    assert nxt.start == first.end
    late = wins.at("day", ms("2026-12-08T23:59:59+01:00"))  # a request started before the boundary
    assert late.start == first.start and wins.at("day", ms("2026-12-09T01:00:00+01:00")) is nxt


def test_spend_loaded_for_a_period_not_used_yet_survives_another_window_moving() -> None:
    clock = Clock("2026-12-08T10:00:00+00:00")
    budget = MemoryBudget(clock)
    hourly = window("hours:1", ms("2026-12-08T09:50:00+00:00"))
    budget.adopt({f"{hourly.slots[0]}:s:k": 70})  # loaded from the ledger at start-up
    budget.reserve_now([Scope("key", "other", "key", 100, True, "day")], 1)  # a day window is computed
    assert budget.spend("k", "hours:1") == 70


def test_a_period_is_as_tight_as_another_only_if_it_never_resets_sooner() -> None:
    from tallygate.core.windows import as_tight

    assert as_tight("month", "day") and as_tight("week", "day") and as_tight("day", "day")
    assert not as_tight("day", "month") and not as_tight("week", "month") and not as_tight("days:31", "month")
    assert as_tight("days:33", "month") and not as_tight("month", "days:31")  # months of 28 days
    assert as_tight("hours:6", "hours:6") and not as_tight("hours:24", "day")  # a local day may last 25 hours
