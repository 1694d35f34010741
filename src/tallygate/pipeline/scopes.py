"""Which limits a request counts against: its key's own limit and every budget that applies.

`BudgetSet` indexes the budgets for the hot path: key budgets by key id, tag budgets by path,
label budgets as a short list. The scopes of a key (its own limit, key and label budgets) are
cached per key record, so a request pays a dict lookup, plus one lookup per tag prefix when tag
budgets exist. With no budgets at all the request gets exactly `key_scopes(principal)`.

`BudgetRegistry` keeps the set current: it reloads the budgets table every `refresh_s` (so a
budget created, changed or deleted through any process or the CLI applies everywhere within
that interval) and at once after a change made through this process. A budget seen for the first
time (or with another period than last seen) gets its window's spend from the ledger before any
request counts against it (`LedgerSpend`), and again `READ_AGAIN_S` later on a process's own
engine (Redis's does so itself): requests answered just before were not written to the ledger
yet, and a counter takes the larger of itself and the ledger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine

from tallygate.core import clock
from tallygate.core.periodic import Periodic
from tallygate.core.tagpath import prefixes
from tallygate.core.timebuckets import DAY_MS, month_after, month_floor
from tallygate.core.windows import MONTH, Window, window
from tallygate.pipeline.budget import BudgetEngine, MemoryBudget, Scope, key_scopes
from tallygate.store.budgets import BudgetRecord, BudgetStore, labels_match
from tallygate.store.keys import KeyStore
from tallygate.store.window_spend import between, request_costs, window_spend
from tallygate.types import Principal

log = logging.getLogger("tallygate.budgets")
READ_AGAIN_S = 3.0  # the ledger writers flush every 250 ms by default


def scope_text(scope: dict[str, Any]) -> str:
    """`label team=growth,env=prod`, `tag customer/acme`, `key <id>`."""
    kind, value = next(iter(scope.items()))
    if kind == "label":
        return "label " + ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return f"{kind} {value}"


def budget_scope(b: BudgetRecord) -> Scope:
    return Scope("budget", "budget:" + b.id, f"budget {b.name!r} ({scope_text(b.scope)})", b.monthly_limit_pico,
                 b.enforce, b.period)


class LedgerSpend:
    """The ledger's spend of keys and budgets in their windows, keyed as the engines' counters
    ('<slot>:s:<scope id>'; blocking). A month is read from the month roll-ups (UTC: a local
    month adds and takes away the raw records of the hours it differs by); other windows from
    the raw records (`store/window_spend.py`)."""

    def __init__(self, engine: Engine, keys: KeyStore, budgets: BudgetStore, tz: str = "UTC") -> None:
        self._engine, self._keys, self._budgets, self.tz = engine, keys, budgets, tz

    def window(self, w: Window) -> dict[str, int]:
        """Every key and budget counted over `w.period`, in `w`'s slots."""
        other = self._keys.limit_periods()  # the keys not counted by the month
        records = [b for b in self._budgets.all() if b.period == w.period]
        return self._of(w, records, [k for k, period in other.items() if period == w.period], other)

    def _of(self, w: Window, records: list[BudgetRecord], key_ids: list[str],
            other: dict[str, str] | None = None) -> dict[str, int]:
        if w.period != MONTH:
            return window_spend(self._engine, w, records, key_ids)
        assert w.end is not None
        utc = self._utc_month(w.start)  # the local month's own UTC month (itself in UTC)
        after = month_after(utc)
        by_key, given = {}, set(key_ids)
        if other is not None or key_ids:  # every key counted by the month, or those given
            by_key = self._keys.spend_since(utc, after if after != w.end else None)
        spend = {k: v for k, v in by_key.items() if (k not in other if other is not None else k in given)}
        for bid, pico in self._budgets.spend_in_month(records, utc).items():
            spend["budget:" + bid] = pico
        # A local month is its UTC month's roll-up plus the hours before it that the local month
        # holds, minus those it does not; the same at the end (each edge at most 14 hours of records).
        for lo, hi, sign in ((w.start, utc, 1), (utc, w.start, -1), (after, w.end, 1), (w.end, after, -1)):
            if lo < hi:
                keys = None if other is not None else key_ids if key_ids else []
                for scope, pico in between(self._engine, lo, hi, records, keys).items():
                    if scope.startswith("budget:") or (scope not in other if other is not None else scope in given):
                        spend[scope] = spend.get(scope, 0) + sign * pico
        slot = w.slots[0]
        return {f"{slot}:s:{scope}": pico for scope, pico in spend.items()}

    @staticmethod
    def _utc_month(start: int) -> int:
        """The UTC month boundary nearest a local month's start (within 14 hours of it)."""
        floor = month_floor(start)
        return floor if start - floor < 15 * DAY_MS else month_after(start)

    def of_scopes(self, budgets: Iterable[BudgetRecord] = (), keys: Iterable[tuple[str, str]] = (),
                  at_ms: int | None = None) -> tuple[dict[str, int], list[Window]]:
        """The spend of some budgets and keys ((id, period) pairs) in their windows now, and
        those windows."""
        at = clock.now_ms() if at_ms is None else at_ms
        by_period: dict[str, tuple[list[BudgetRecord], list[str]]] = {}
        for b in budgets:
            by_period.setdefault(b.period, ([], []))[0].append(b)
        for key_id, period in keys:
            by_period.setdefault(period, ([], []))[1].append(key_id)
        spend: dict[str, int] = {}
        wins = []
        for period, (records, key_ids) in by_period.items():
            w = window(period, at, self.tz)
            wins.append(w)
            spend.update(self._of(w, records, key_ids))
        return spend, wins

    def costs(self, request_ids: list[str]) -> dict[str, int]:
        """The cost of each of `request_ids` the ledger holds already."""
        return request_costs(self._engine, request_ids)

    def key_periods(self) -> dict[str, str]:
        """The keys whose limit counts over another period than the month: id -> period."""
        return self._keys.limit_periods()

    def periods(self) -> set[str]:
        """Every period a key or budget counts over now (and the month)."""
        return {MONTH, *self._keys.limit_periods().values(), *(b.period for b in self._budgets.all())}

    def load(self, engine: BudgetEngine) -> None:
        """Start a process's own engine from the ledger: every key and budget in its window."""
        at = clock.now_ms()
        for period in self.periods():
            w = window(period, at, self.tz)
            engine.adopt(self.window(w), [w])


class BudgetSet:
    """An immutable index of budgets, answering "which scopes does this request count against"."""

    def __init__(self, records: Iterable[BudgetRecord] = ()) -> None:
        self.records = {b.id: b for b in records}
        self._by_key: dict[str, list[Scope]] = {}
        self._labels: list[tuple[dict[str, str], Scope]] = []
        self._tags: dict[str, tuple[Scope, ...]] = {}  # a path may have several (a daily and a monthly)
        for b in self.records.values():
            scope = budget_scope(b)
            if b.kind == "key":
                self._by_key.setdefault(b.scope["key"], []).append(scope)
            elif b.kind == "tag":
                self._tags[b.scope["tag"]] = self._tags.get(b.scope["tag"], ()) + (scope,)
            else:
                self._labels.append((b.scope["label"], scope))
        self._per_key = bool(self._by_key or self._labels)
        self._cache: dict[str, tuple[Principal, tuple[Scope, ...]]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def key_bound(self, principal: Principal) -> tuple[Scope, ...]:
        """The scopes of every request of this key: its own limit, key and label budgets."""
        own = key_scopes(principal)
        if not self._per_key or principal.key_id is None:
            return own
        cached = self._cache.get(principal.key_id)
        if cached is not None and cached[0] is principal:
            return cached[1]
        found = list(self._by_key.get(principal.key_id, ()))
        found += [s for labels, s in self._labels if labels_match(labels, principal.labels)]
        scopes = own + tuple(found)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[principal.key_id] = (principal, scopes)
        return scopes

    def scopes(self, principal: Principal, tags: tuple[str, ...]) -> tuple[Scope, ...]:
        """Every scope a request of `principal` with `tags` counts against, each once."""
        scopes = self.key_bound(principal)
        if tags and self._tags:
            found = [s for p in prefixes(tags) for s in self._tags.get(p, ())]
            if found:
                scopes = scopes + tuple(found)
        return scopes

    def binding(self, principal: Principal) -> list[BudgetRecord]:
        """The budgets that bind a key: its key and label budgets, and every tag budget (any
        request of it may carry the tag)."""
        ids = {s.id[len("budget:"):] for s in self.key_bound(principal) if s.kind == "budget"}
        return [b for b in self.records.values() if b.id in ids or b.kind == "tag"]

    def label_budgets(self) -> list[BudgetRecord]:
        return [b for b in self.records.values() if b.kind == "label"]


class BudgetRegistry:
    """The current `BudgetSet`, reloaded from the database every `refresh_s` (a service)."""

    def __init__(self, store: BudgetStore, engine: BudgetEngine, ledger: LedgerSpend, refresh_s: float = 1.0) -> None:
        self._store = store
        self._engine = engine
        self._ledger = ledger
        self.current = BudgetSet()
        self._key_periods: dict[str, str] | None = None  # keys' limit periods other than the month
        self._again: list[tuple[float, set[str], set[str]]] = []  # (when, budget ids, key ids) to read again
        self._refresher = Periodic(refresh_s, self.reload_async, log,
                                   "refreshing budgets failed; the last known budgets still apply")

    def scopes(self, principal: Principal, tags: tuple[str, ...]) -> tuple[Scope, ...]:
        return self.current.scopes(principal, tags)

    def reload(self) -> None:
        """Read every budget; those new to this process (or counted over another period than
        last seen) first get their spend from the ledger (blocking)."""
        records = self._store.all()
        seen = self.current.records
        moved_scope = [b for b in records if b.id in seen and seen[b.id].scope != b.scope]
        new = [b for b in records if b.id not in seen or (seen[b.id].period != b.period and b not in moved_scope)]
        periods, old = self._ledger.key_periods(), self._key_periods
        moved = [] if old is None else [(k, periods.get(k, MONTH)) for k in periods.keys() | old.keys()
                                        if periods.get(k, MONTH) != old.get(k, MONTH)]
        for b in moved_scope:  # its counters held another scope's spend: the new one's from the ledger
            spend, wins = self._ledger.of_scopes([b])
            self._engine.restart(f"budget:{b.id}", spend, wins, f"budget:{b.id} {json.dumps(b.scope, sort_keys=True)}")
        if new or moved:
            self._engine.adopt(*self._ledger.of_scopes(new, moved))
        if (new or moved or moved_scope) and isinstance(self._engine, MemoryBudget):
            self._again.append((time.monotonic() + READ_AGAIN_S, {b.id for b in (*new, *moved_scope)},
                                {k for k, _ in moved}))
        self.current, self._key_periods = BudgetSet(records), periods
        now = time.monotonic()
        if self._again and self._again[0][0] <= now:
            due = [(b, k) for when, b, k in self._again if when <= now]
            self._again = [entry for entry in self._again if entry[0] > now]
            budget_ids, key_ids = set().union(*(b for b, _ in due)), set().union(*(k for _, k in due))
            self._engine.adopt(*self._ledger.of_scopes([b for b in records if b.id in budget_ids],
                                                       [(k, periods.get(k, MONTH)) for k in key_ids]))

    async def start(self) -> None:
        await self.reload_async()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    async def reload_async(self) -> None:
        """`reload` in a worker thread."""
        await asyncio.to_thread(self.reload)
