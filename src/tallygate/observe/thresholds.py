"""Threshold and projected-overrun alerts on every limited scope (key limits, budgets).

As a request observer, `ThresholdWatcher` only notes which limited scopes a finished request
counted against (and whether it was refused with 402); `due()`, called by the alert service off
the event loop, reads each noted scope's month spend from the `BudgetEngine` and returns the
alerts now due:

- `threshold`: one per scope, window and percentage in its list (default 50, 80, 100) that the
  recorded spend has reached; a request that jumps several at once fires each. A 402 refusal
  fires none (it spent nothing): the next alert of the scope that refused it says so.
- `projected_overrun`: at this month's pace so far (spend / elapsed time) the limit is passed
  before the month ends; carries the projected date; at most once per scope and UTC day, and
  not before `MIN_ELAPSED_MS` of the month has passed (the first hours' pace means little).

A month is the engine's: the calendar month in the reporting time zone, as the limit counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tallygate.core import clock as core_clock
from tallygate.core import zones
from tallygate.core.money import usd_text
from tallygate.core.record import LedgerRecord
from tallygate.core.timebuckets import HOUR_MS
from tallygate.core.windows import MONTH, Window, label
from tallygate.errors import BudgetExceeded
from tallygate.observe.events import Event, event, iso
from tallygate.pipeline.budget import BudgetEngine, Scope
from tallygate.pipeline.call import Call
from tallygate.types import Principal

MIN_ELAPSED_MS = 6 * HOUR_MS
ScopesFor = Callable[[Principal, tuple[str, ...]], Sequence[Scope]]


def describe(scope: Scope) -> str:
    """How the budget's 402 message names the scope (`API key 'x'`, or the budget's own name)."""
    return f"API key {scope.name!r}" if scope.kind == "key" else scope.name


def _summary(s: Scope, pct: int, spend: int, limit: int, refused: set[str]) -> str:
    """What the alert says: the threshold, and the spend it fired at (a late check, or a
    request that jumped several thresholds, finds the spend well past the threshold)."""
    said = (f"{describe(s)} {pct}% threshold: spend is at {spend * 100 // limit}% of its {label(s.period)} limit "
            f"(${usd_text(spend)} of ${usd_text(limit)})")
    if s.id in refused:
        said += "; a request that would have passed the limit was refused"
    return said


class ThresholdWatcher:
    """Notes limited scopes on the hot path; computes due threshold/projection alerts later."""

    def __init__(self, budget: BudgetEngine, scopes_for: ScopesFor, thresholds: Sequence[int],
                 per_scope: dict[str, list[int]] | None = None,
                 clock: Callable[[], float] = lambda: core_clock.now_ms() / 1000) -> None:
        self._budget = budget
        self._scopes_for = scopes_for
        self._thresholds = sorted(set(thresholds))
        self._per_scope = {k: sorted(set(v)) for k, v in (per_scope or {}).items()}
        self._clock = clock
        self._touched: dict[str, Scope] = {}
        self._refused: set[str] = set()
        self.known: dict[str, Scope] = {}  # every limited scope seen (for budget-remaining gauges)
        self.fired: set[str] = set()  # ids known stored (by this process or another)

    def call_finished(self, call: Call, record: LedgerRecord) -> None:
        """A call observer: remember the request's limited scopes. Never blocks."""
        if not record.cost_pico and record.status != 402:
            return
        scopes = [s for s in self._scopes_for(call.principal, call.tags) if s.limit]
        for s in scopes:
            self._touched[s.id] = self.known[s.id] = s
        if record.status == 402 and isinstance(call.error, BudgetExceeded) and call.error.scope_id:
            self._refused.add(call.error.scope_id)

    def take(self) -> tuple[list[Scope], set[str]]:
        """The scopes noted since the last call (on the event loop)."""
        touched, refused = list(self._touched.values()), self._refused
        self._touched, self._refused = {}, set()
        return touched, refused

    def due(self, scopes: Sequence[Scope], refused: set[str]) -> list[Event]:
        """The alerts due for these scopes (may block: the engine may be shared)."""
        now = int(self._clock() * 1000)
        month = self._budget.windows.at(MONTH, now)
        month_text = zones.local_iso(month.start, MONTH, self._budget.windows.tz)
        out: list[Event] = []
        for s in scopes:
            limit = s.limit
            if not limit:
                continue
            spend = self._budget.spend(s.id, s.period)
            subject = {"kind": s.kind, "id": s.id, "name": s.name}
            # once per window: a month as before windows existed, another window by its running slot
            window = month_text if s.period == MONTH else self._budget.windows.at(s.period, now).slots[0]
            for pct in self._per_scope.get(s.id, self._thresholds):
                reached = spend * 100 >= pct * limit
                alert_id = f"threshold:{s.id}:{window}:{pct}"
                if reached and alert_id not in self.fired:
                    out.append(event(alert_id, "threshold", now, subject, _summary(s, pct, spend, limit, refused),
                                     threshold=pct, limit=usd_text(limit), spend=usd_text(spend),
                                     spend_percent=spend * 100 // limit,
                                     month=month_text, refused=s.id in refused))
            projected = self._projection(s, spend, now, month) if s.period == MONTH else None
            if projected is not None and projected["id"] not in self.fired:
                out.append(projected)
        return out

    def _projection(self, s: Scope, spend: int, now: int, window: Window) -> Event | None:
        limit, month, end = s.limit, window.start, window.end
        elapsed = now - month
        if not limit or end is None or spend <= 0 or spend >= limit or elapsed < MIN_ELAPSED_MS:
            return None
        crossing = month + elapsed * limit // spend
        if crossing >= end:
            return None
        day = iso(now)[:10]
        at_end = spend * (end - month) // elapsed
        return event(f"projected_overrun:{s.id}:{day}", "projected_overrun", now,
                     {"kind": s.kind, "id": s.id, "name": s.name},
                     f"{describe(s)} will pass its monthly limit of ${usd_text(limit)} "
                     f"around {iso(crossing)[:10]} at this month's pace",
                     limit=usd_text(limit), spend=usd_text(spend), projected_month_spend=usd_text(at_end),
                     projected_date=iso(crossing)[:10], projected_at=iso(crossing))
