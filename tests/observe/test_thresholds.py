"""Threshold and projection rules on a simulated clock: a scope's own threshold list, the
projection's pace and its once-a-day id, a new month starting over."""

from __future__ import annotations

import datetime as dt

from tallygate.observe.thresholds import ThresholdWatcher
from tallygate.pipeline.budget import MemoryBudget, key_scopes, refusal
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


def test_alert_says_the_spend_it_fired_at_not_just_its_threshold() -> None:
    """A request that jumps from 40 % to 94 % fires the 50 % and 80 % alerts: each says 94 %."""
    clock = Clock(dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC))
    watcher, budget, principal = _watch(clock)
    budget.load({"k": 94 * USD}, budget.month)
    fired = _due(watcher, principal)
    assert [e["threshold"] for e in fired] == [50, 80]
    for e in fired:
        assert e["spend_percent"] == 94
        assert e["summary"] == (f"API key 'bot' {e['threshold']}% threshold: spend is at 94% of its "
                                "monthly limit ($94 of $100)")


def test_a_refusal_fires_no_threshold_and_the_next_alert_says_there_was_one() -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC))
    watcher, budget, principal = _watch(clock, {"k": [100]})
    budget.load({"k": 97 * USD}, budget.month)
    refused = Call("r", "chat", principal)
    refused.fail(refusal(key_scopes(principal)[0], 97 * USD, 0, 5 * USD))
    watcher.call_finished(refused, make_record(key_id="k", status=402, error_message=refused.error.message))
    assert watcher.due(*watcher.take()) == []  # spend is at 97 %: a refusal spent nothing
    budget.load({"k": 3 * USD}, budget.month)
    refused_again = Call("r2", "chat", principal)
    refused_again.fail(refusal(key_scopes(principal)[0], 100 * USD, 0, 5 * USD))
    watcher.call_finished(refused_again, make_record(key_id="k", status=402))
    [alert] = watcher.due(*watcher.take())
    assert alert["threshold"] == 100 and alert["refused"] is True and alert["spend_percent"] == 100
    assert alert["summary"] == ("API key 'bot' 100% threshold: spend is at 100% of its monthly limit "
                                "($100 of $100); a request that would have passed the limit was refused")


def test_a_daily_limit_fires_its_thresholds_again_each_day_and_never_projects_a_month() -> None:
    clock = Clock(dt.datetime(2026, 3, 11, 12, tzinfo=dt.UTC))
    budget = MemoryBudget(clock)
    watcher = ThresholdWatcher(budget, lambda p, _t: key_scopes(p), [50], None, clock=clock)
    principal = Principal(key_id="k", name="bot", monthly_limit=10 * USD, limit_period="day")
    scope = key_scopes(principal)[0]
    budget.settle(budget.reserve_now([scope], 6 * USD), 6 * USD)
    [first] = _due(watcher, principal)
    assert first["threshold"] == 50 and "60% of its daily limit" in first["summary"]
    assert _due(watcher, principal) == []  # once a day
    clock.t += 86_400
    assert _due(watcher, principal) == []  # a new day: nothing spent yet
    budget.settle(budget.reserve_now([scope], 6 * USD), 6 * USD)
    [again] = _due(watcher, principal)
    assert again["id"] != first["id"] and again["threshold"] == 50
