"""Which limits a request counts against: its key's own limit and every budget that applies.

`BudgetSet` indexes the budgets for the hot path: key budgets by key id, tag budgets by path,
label budgets as a short list. The scopes of a key (its own limit, key and label budgets) are
cached per key record, so a request pays a dict lookup, plus one lookup per tag prefix when tag
budgets exist. With no budgets at all the request gets exactly `key_scopes(principal)`.

`BudgetRegistry` keeps the set current: it reloads the budgets table every `refresh_s` (so a
budget created, changed or deleted through any process or the CLI applies everywhere within
that interval) and at once after a change made through this process. A budget seen for the first
time gets its month's spend from the ledger before any request counts against it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from tallygate.core.periodic import Periodic
from tallygate.core.tagpath import prefixes
from tallygate.pipeline.budget import BudgetEngine, Scope, key_scopes
from tallygate.store.budgets import BudgetRecord, BudgetStore, labels_match
from tallygate.store.keys import KeyStore
from tallygate.types import Principal

log = logging.getLogger("tallygate.budgets")


def scope_text(scope: dict[str, Any]) -> str:
    """`label team=growth,env=prod`, `tag customer/acme`, `key <id>`."""
    kind, value = next(iter(scope.items()))
    if kind == "label":
        return "label " + ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return f"{kind} {value}"


def budget_scope(b: BudgetRecord) -> Scope:
    return Scope("budget", "budget:" + b.id, f"budget {b.name!r} ({scope_text(b.scope)})", b.monthly_limit_pico,
                 b.enforce)


def month_spend(keys: KeyStore, budgets: BudgetStore, month: int) -> dict[str, int]:
    """The ledger's spend this month of every scope: keys by id, budgets as 'budget:<id>'."""
    spend = keys.spend_since(month)
    for bid, pico in budgets.spend_in_month(budgets.all(), month).items():
        spend["budget:" + bid] = pico
    return spend


class BudgetSet:
    """An immutable index of budgets, answering "which scopes does this request count against"."""

    def __init__(self, records: Iterable[BudgetRecord] = ()) -> None:
        self.records = {b.id: b for b in records}
        self._by_key: dict[str, list[Scope]] = {}
        self._labels: list[tuple[dict[str, str], Scope]] = []
        self._tags: dict[str, Scope] = {}
        for b in self.records.values():
            scope = budget_scope(b)
            if b.kind == "key":
                self._by_key.setdefault(b.scope["key"], []).append(scope)
            elif b.kind == "tag":
                self._tags[b.scope["tag"]] = scope
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
            found = [s for p in prefixes(tags) if (s := self._tags.get(p)) is not None]
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

    def __init__(self, store: BudgetStore, engine: BudgetEngine, month: Any, refresh_s: float = 1.0) -> None:
        """`month()` returns the first millisecond of the current UTC month."""
        self._store = store
        self._engine = engine
        self._month = month
        self.current = BudgetSet()
        self._refresher = Periodic(refresh_s, self.reload_async, log,
                                   "refreshing budgets failed; the last known budgets still apply")

    def scopes(self, principal: Principal, tags: tuple[str, ...]) -> tuple[Scope, ...]:
        return self.current.scopes(principal, tags)

    def reload(self) -> None:
        """Read every budget; those new to this process first get their spend from the ledger
        (blocking)."""
        records = self._store.all()
        new = [b for b in records if b.id not in self.current.records]
        if new:
            month = self._month()
            spend = self._store.spend_in_month(new, month)
            self._engine.adopt({"budget:" + bid: pico for bid, pico in spend.items()}, month)
        self.current = BudgetSet(records)

    async def start(self) -> None:
        await self.reload_async()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    async def reload_async(self) -> None:
        """`reload` in a worker thread."""
        await asyncio.to_thread(self.reload)
