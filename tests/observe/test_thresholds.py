"""Threshold and projection rules on a simulated clock: a scope's own threshold list, the
projection's pace and its once-a-day id, a new month starting over."""

from __future__ import annotations

import datetime as dt

from tallygate.observe.thresholds import ThresholdWatcher
from tallygate.pipeline.budget import MemoryBudget, key_scopes
from tallygate.pipeline.call import Call
from tallygate.types import Principal
from tests.records import make_record

USD = 10**12


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t


def _watch(clock: Clock, per_scope: dict[str, list[int]] | None = None) -> tuple[ThresholdWatcher, MemoryBudget,
                                                                                 Principal]:
    budget = MemoryBudget(clock)
    watcher = ThresholdWatcher(budget, lambda p, _t: key_scopes(p), [50, 80, 100], per_scope, clock=clock)
    return watcher, budget, Principal(key_id="k", name="bot", monthly_limit=100 * USD)


def _due(watcher: ThresholdWatcher, principal: Principal) -> list[dict]:
    record = make_record(key_id="k", cost_pico=1)
    watcher.call_finished(Call("r", "chat", principal), record)
    due = watcher.due(*watcher.take())
    watcher.fired.update(e["id"] for e in due)
    return due


def test_a_scope_can_have_its_own_thresholds() -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC))
    watcher, budget, principal = _watch(clock, {"k": [25, 90]})
    budget.load({"k": 30 * USD}, budget.month)
    assert [e["threshold"] for e in _due(watcher, principal)] == [25]


def test_projection_follows_the_pace_once_a_day() -> None:
    clock = Clock(dt.datetime(2026, 3, 11, tzinfo=dt.UTC))  # a third of March gone
    watcher, budget, principal = _watch(clock)
    budget.load({"k": 30 * USD}, budget.month)  # on pace for ~$93: no projection
    assert _due(watcher, principal) == []
    budget.load({"k": 10 * USD}, budget.month)  # $40 in 10 days: the limit around March 26
    [projected] = _due(watcher, principal)
    assert projected["kind"] == "projected_overrun" and projected["projected_date"] == "2026-03-26"
    assert _due(watcher, principal) == []  # the same day: once
    clock.t += 86_400
    assert [e["kind"] for e in _due(watcher, principal)] == ["projected_overrun"]


def test_a_new_month_starts_the_thresholds_over() -> None:
    clock = Clock(dt.datetime(2026, 3, 31, 23, tzinfo=dt.UTC))
    watcher, budget, principal = _watch(clock)
    budget.load({"k": 60 * USD}, budget.month)
    assert [e["threshold"] for e in _due(watcher, principal) if e["kind"] == "threshold"] == [50]
    clock.t += 2 * 3600  # April: spend starts from zero
    assert _due(watcher, principal) == []
    budget.load({"k": 55 * USD}, budget.month)
    [again] = _due(watcher, principal)
    assert again["threshold"] == 50 and again["month"] == "2026-04"
