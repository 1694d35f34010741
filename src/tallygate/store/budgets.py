"""Budgets in the database, and their spend this month as the ledger's roll-ups count it.

A budget's `scope` is one of `{"label": {name: value, ...}}` (requests of keys carrying every
pair), `{"tag": path}` (requests with a tag at or under `path`, each once) or `{"key": id}`.
Spend is read from the month roll-ups, so it includes history from before the budget existed:
a label budget sums the usage rows of every label set that holds its pairs, a tag budget the
tag rows of its path (one row per request and prefix), a key budget the usage rows of its key.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, delete, func, select, update

from tallygate.store.keys import now_ms
from tallygate.store.schema import budgets, label_sets, tag_rollups, usage_rollups


@dataclass(frozen=True, slots=True)
class BudgetRecord:
    """One row of `budgets`."""

    id: str
    name: str
    scope: dict[str, Any]
    monthly_limit_pico: int
    created_by: str | None
    created_at: int
    updated_at: int
    enforce: bool = True  # False: a soft budget, counted and alerted on, never refusing
    period: str = "month"  # the window its limit is per (core/windows.py)

    @property
    def kind(self) -> str:
        """'label', 'tag' or 'key'."""
        return next(iter(self.scope))


BUDGET_FIELDS = tuple(f.name for f in fields(BudgetRecord))


def _budget(row: Mapping[Any, Any]) -> BudgetRecord:
    return BudgetRecord(**{f: row[f] for f in BUDGET_FIELDS})


def labels_match(required: Mapping[str, str], labels: Mapping[str, Any]) -> bool:
    """Whether `labels` carry every name=value pair of `required`."""
    return all(labels.get(k) == v for k, v in required.items())


class BudgetStore:
    """Synchronous budget queries; the gateway calls them from worker threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, *, name: str, scope: dict[str, Any], monthly_limit_pico: int,
               created_by: str | None, enforce: bool = True, period: str = "month") -> BudgetRecord:
        ts = now_ms()
        record = BudgetRecord(str(uuid.uuid4()), name, scope, monthly_limit_pico, created_by, ts, ts, enforce, period)
        with self._engine.begin() as conn:
            conn.execute(budgets.insert().values(**{f: getattr(record, f) for f in BUDGET_FIELDS}))
        return record

    def get(self, budget_id: str) -> BudgetRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(budgets).where(budgets.c.id == budget_id)).mappings().first()
            return _budget(row) if row else None

    def all(self) -> list[BudgetRecord]:
        with self._engine.connect() as conn:
            query = select(budgets).order_by(budgets.c.created_at, budgets.c.id)
            return [_budget(r) for r in conn.execute(query).mappings()]

    def update(self, budget_id: str, values: dict[str, Any]) -> BudgetRecord | None:
        with self._engine.begin() as conn:
            result = conn.execute(update(budgets).where(budgets.c.id == budget_id)
                                  .values(**values, updated_at=now_ms()))
            if result.rowcount == 0:
                return None
            return _budget(conn.execute(select(budgets).where(budgets.c.id == budget_id)).mappings().one())

    def delete(self, budget_id: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(delete(budgets).where(budgets.c.id == budget_id)).rowcount > 0

    def spend_in_month(self, records: list[BudgetRecord], month: int) -> dict[str, int]:
        """Picodollars the ledger holds for each budget (by id) in the month starting at `month`."""
        out: dict[str, int] = {}
        usage, tags = usage_rollups["month"], tag_rollups["month"]
        with self._engine.connect() as conn:
            sets: list[tuple[str, dict[str, Any]]] | None = None
            for b in records:
                kind, value = b.kind, b.scope[b.kind]
                if kind == "key":
                    query = select(func.sum(usage.c.cost_pico)).where(usage.c.bucket == month,
                                                                      usage.c.key_id == value)
                elif kind == "tag":
                    query = select(func.sum(tags.c.cost_pico)).where(tags.c.bucket == month,
                                                                     tags.c.prefix == value)
                else:
                    if sets is None:
                        sets = [(r.id, r.labels or {}) for r in conn.execute(select(label_sets))]
                    ids = [sid for sid, labels in sets if labels_match(value, labels)]
                    if not ids:
                        out[b.id] = 0
                        continue
                    query = select(func.sum(usage.c.cost_pico)).where(usage.c.bucket == month,
                                                                      usage.c.label_set.in_(ids))
                out[b.id] = int(conn.execute(query).scalar() or 0)
        return out
