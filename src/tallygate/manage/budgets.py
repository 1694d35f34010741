"""Budget management: create, list, read, change and delete budgets, without escalation.

`manage: write` changes budgets. A key that is bound (by its own limit, or by a key or label
budget that applies to it) cannot loosen a budget that binds it: raise its limit, change its
scope or its period (`core/windows.py`) or delete it; tag budgets bind every such key, since
any of its requests may carry the tag. Tightening (a lower limit, a new name) and creating
budgets are always allowed. The label rules that keep a bound key from leaving a label budget
live with the keys (`manage/keys.py`, `manage/label_groups.py`). Changes reach this process's
budget set at once; with Redis, the others reload before admitting their next request
(`BudgetEngine.bump`, `pipeline/freshness.py`), else within a second.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tallygate.core.money import PICO_PER_USD, usd_text
from tallygate.errors import InvalidRequest, NotFound, PermissionDenied
from tallygate.manage.budget_schemas import BudgetCreate, BudgetUpdate
from tallygate.pipeline.budget import BudgetEngine, usage_text, window_fields
from tallygate.pipeline.scopes import BudgetRegistry, BudgetSet
from tallygate.store.budgets import BudgetRecord, BudgetStore
from tallygate.store.keys import KeyStore
from tallygate.types import Principal


def _iso(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def is_bound(budgets: BudgetSet, caller: Principal) -> bool:
    """Whether a limit applies to every request of `caller` (its own, or a key/label budget)."""
    if caller.key_id is None:
        return False
    return caller.monthly_limit is not None or any(s.kind == "budget" for s in budgets.key_bound(caller))


class BudgetAdmin:
    """The operations behind `/v1/manage/budget` and `tallygate budgets` (blocking; run in a thread)."""

    def __init__(self, store: BudgetStore, keys: KeyStore, registry: BudgetRegistry, engine: BudgetEngine) -> None:
        self._store = store
        self._keys = keys
        self._registry = registry
        self._engine = engine

    def render(self, b: BudgetRecord) -> dict[str, Any]:
        creator = self._keys.users_by_id({b.created_by}).get(b.created_by) if b.created_by else None
        spend, reserved = usage_text(self._engine, "budget:" + b.id, b.period)
        return {"id": b.id, "name": b.name, "scope": b.scope, "monthly_limit": usd_text(b.monthly_limit_pico),
                "monthly_spend": spend, "monthly_reserved": reserved, "enforce": b.enforce,
                **window_fields(self._engine, b.period),
                "created_by": {"id": b.created_by, "name": creator.name if creator else None},
                "created_at": _iso(b.created_at)}

    def _check_key(self, scope: dict[str, Any]) -> None:
        if "key" in scope and self._keys.get(scope["key"]) is None:
            raise InvalidRequest(f"no API key with id {scope['key']!r}", param="scope.key")

    def create(self, caller: Principal, req: BudgetCreate) -> dict[str, Any]:
        scope = req.scope.as_dict()
        self._check_key(scope)
        b = self._store.create(name=req.name, scope=scope, monthly_limit_pico=int(req.monthly_limit * PICO_PER_USD),
                               created_by=caller.user_id, enforce=req.enforce, period=req.period)
        self._registry.reload()
        self._engine.bump()  # binds every process for the next request it admits
        return self.render(b)

    def get(self, budget_id: str) -> dict[str, Any]:
        return self.render(self._found(budget_id))

    def page(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.render(b) for b in self._store.all()]}

    def _found(self, budget_id: str) -> BudgetRecord:
        b = self._store.get(budget_id)
        if b is None:
            raise NotFound(f"no budget with id {budget_id!r}", param="id")
        return b

    def _binds(self, caller: Principal, b: BudgetRecord) -> bool:
        budgets = self._registry.current
        return is_bound(budgets, caller) and any(x.id == b.id for x in budgets.binding(caller))

    def update(self, caller: Principal, budget_id: str, req: BudgetUpdate) -> dict[str, Any]:
        b = self._found(budget_id)
        given = req.model_fields_set
        values: dict[str, Any] = {}
        if "name" in given:
            if req.name is None:
                raise InvalidRequest("name cannot be null", param="name")
            values["name"] = req.name
        if "monthly_limit" in given:
            if req.monthly_limit is None:
                raise InvalidRequest("monthly_limit cannot be null (delete the budget instead)",
                                     param="monthly_limit")
            values["monthly_limit_pico"] = int(req.monthly_limit * PICO_PER_USD)
        if "scope" in given:
            if req.scope is None:
                raise InvalidRequest("scope cannot be null", param="scope")
            values["scope"] = req.scope.as_dict()
            self._check_key(values["scope"])
        if "period" in given:
            if req.period is None:
                raise InvalidRequest("period cannot be null", param="period")
            values["period"] = req.period
        if "enforce" in given:
            if req.enforce is None:
                raise InvalidRequest("enforce cannot be null", param="enforce")
            values["enforce"] = req.enforce
        loosens = values.get("monthly_limit_pico", 0) > b.monthly_limit_pico or \
            values.get("scope", b.scope) != b.scope or (b.enforce and values.get("enforce") is False) or \
            values.get("period", b.period) != b.period
        if loosens and self._binds(caller, b):
            raise PermissionDenied(f"budget {b.name!r} binds this key: it may lower its limit or rename it, "
                                   "not raise its limit, change its scope or period or stop enforcing it",
                                   param="scope" if "scope" in values else
                                   "enforce" if values.get("enforce") is False else
                                   "period" if values.get("period", b.period) != b.period else "monthly_limit")
        row = self._store.update(budget_id, values) if values else b
        if row is None:
            raise NotFound(f"no budget with id {budget_id!r}", param="id")
        self._registry.reload()
        self._engine.bump()  # binds every process for the next request it admits
        return self.render(row)

    def delete(self, caller: Principal, budget_id: str) -> dict[str, Any]:
        b = self._found(budget_id)
        if self._binds(caller, b):
            raise PermissionDenied(f"budget {b.name!r} binds this key: it cannot delete it")
        out = self.render(b)
        self._store.delete(budget_id)
        self._registry.reload()
        self._engine.bump()  # binds every process for the next request it admits
        return out
