"""API-key management: who may create, see, edit and revoke which keys.

Rules: `manage: read` lists and reads keys, `manage: write` changes them. No escalation: a key
cannot create a key with a permission above its own, cannot edit or revoke a key that has one,
and cannot change its own permissions, limit or labels (labels decide whose spend it is). A
partial `permissions` object changes only the areas it names. A key bound by a monthly limit (its own, or
a key or label budget that applies to every request it makes) is bound by the tightest of them
in the same way: the keys it creates or edits get a limit no higher (inherited when none is
given), and it cannot touch a key whose limit is higher or absent. A key bound by a
label budget cannot take a key (itself or one it manages) out of that budget by changing its
labels, and the keys it creates carry the budget's labels. Changes reach the in-memory key
cache at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

from tallygate.core import windows
from tallygate.core.money import PICO_PER_USD, usd_text
from tallygate.core.windows import as_tight
from tallygate.errors import InvalidRequest, NotFound, PermissionDenied
from tallygate.manage.label_groups import inherited_labels, label_escape
from tallygate.manage.schemas import KeyCreate, KeyUpdate
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import BudgetEngine, usage_text, window_fields
from tallygate.pipeline.ratelimit_rules import RuleSet
from tallygate.pipeline.scopes import BudgetSet
from tallygate.store.keys import KeyRecord, KeyStore, User
from tallygate.store.logs import decode_cursor, encode_cursor
from tallygate.types import Principal

_LEVEL = {"none": 0, "read": 1, "write": 2}


def _iso(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def _pico(amount: Decimal | None) -> int | None:
    return None if amount is None else int(amount * PICO_PER_USD)


def _limit_above(limit: int | None, cap: int | None) -> bool:
    """Whether `limit` (None = no limit) is more than a caller bound by `cap` may grant."""
    return cap is not None and (limit is None or limit > cap)


def _exceeds(permissions: dict[str, str], caller: Principal) -> str | None:
    """The first area where `permissions` go beyond the caller's own, if any."""
    for area, level in permissions.items():
        if _LEVEL.get(level, 0) > _LEVEL.get(caller.permissions.get(area, "none"), 0):
            return area
    return None


class KeyAdmin:
    """The operations behind `/v1/manage/apikey` and `/v1/key` (blocking; run in a thread)."""

    def __init__(self, store: KeyStore, auth: Authenticator, budget: BudgetEngine,
                 policies: Collection[str] = (), budgets: Callable[[], BudgetSet] = BudgetSet,
                 ratelimits: Callable[[], RuleSet] = RuleSet, periods_changed: Callable[[], None] = lambda: None
                 ) -> None:
        """`budgets()` and `ratelimits()` return the budgets and rate limits in force (for the
        label rules); `periods_changed()` starts a key's new window from the ledger (the budget
        registry's reload)."""
        self._periods_changed = periods_changed
        self._budgets = budgets
        self._ratelimits = ratelimits
        self._store = store
        self._auth = auth
        self._budget = budget
        self._policies = policies
        self.policies = policies  # the routing policies a key may name

    def render(self, row: KeyRecord, users: dict[str, User] | None = None) -> dict[str, Any]:
        users = users if users is not None else self._store.users_by_id({row.created_by} if row.created_by else set())
        creator = users.get(row.created_by or "")
        limit = row.monthly_limit_pico
        spend, reserved = usage_text(self._budget, row.id, row.limit_period)
        return {
            "id": row.id, "name": row.name, "key_prefix": row.key_prefix,
            "monthly_limit": None if limit is None else usd_text(limit),
            "monthly_spend": spend, "monthly_reserved": reserved, **window_fields(self._budget, row.limit_period),
            "permissions": row.permissions, "labels": row.labels,
            "created_by": {"id": row.created_by, "name": creator.name if creator else None},
            "created_at": _iso(row.created_at), "revoked_at": _iso(row.revoked_at),
            "policy": row.policy,
        }

    def _cap(self, caller: Principal) -> int | None:
        """The tightest monthly limit binding every request of `caller` (its own, key and label
        budgets), None when none does."""
        limits = [s.limit for s in self._budgets().key_bound(caller) if s.limit is not None]
        return min(limits, default=None)

    def _check_period(self, caller: Principal, period: str) -> None:
        """A bound caller may not give a key a limit that resets sooner than one binding it (a
        daily $10 lets through up to $310 in the month a monthly $10 caps)."""
        for s in self._budgets().key_bound(caller):
            if s.limit is not None and not as_tight(period, s.period):
                raise PermissionDenied(f"cannot give a key a {windows.label(period)} limit: it resets sooner than "
                                       f"the {windows.label(s.period)} limit that binds your own", param="period")

    def _check_policy(self, policy: str | None) -> None:
        if policy is not None and policy not in self._policies:
            known = ", ".join(sorted(self._policies)) or "none configured"
            raise InvalidRequest(f"policy {policy!r} is not defined in the config (known: {known})",
                                 param="policy")

    def create(self, caller: Principal, req: KeyCreate) -> dict[str, Any]:
        permissions = req.permissions.model_dump()
        if area := _exceeds(permissions, caller):
            raise PermissionDenied(f"cannot create a key with permissions.{area} above your own",
                                   param=f"permissions.{area}")
        self._check_policy(req.policy)
        limit, cap = _pico(req.monthly_limit), self._cap(caller)
        if limit is None and "monthly_limit" not in req.model_fields_set:
            limit = cap  # a bound key's children inherit the tightest limit that binds it
        if _limit_above(limit, cap):
            raise PermissionDenied("cannot create a key with a monthly limit above the tightest limit or "
                                   "budget that binds your own", param="monthly_limit")
        self._check_period(caller, req.period)
        labels = inherited_labels(self._budgets().label_budgets(), caller, req.labels, "budget")
        labels = inherited_labels(self._ratelimits().label_limits(), caller, labels, "rate limit")
        row, secret = self._store.create(name=req.name, labels=labels, permissions=permissions,
                                         monthly_limit_pico=limit, policy=req.policy,
                                         created_by=caller.user_id, limit_period=req.period)
        self._auth.remember(row)
        return {**self.render(row), "key": secret}

    def get(self, key_id: str) -> dict[str, Any]:
        row = self._store.get(key_id)
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", param="id")
        return self.render(row)

    def page(self, labels: dict[str, str], limit: int, cursor: str | None) -> dict[str, Any]:
        after = decode_cursor(cursor) if cursor else None
        rows = self._store.page(labels, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        users = self._store.users_by_id({r.created_by for r in rows if r.created_by})
        return {"object": "list", "data": [self.render(r, users) for r in rows], "has_more": more,
                "next_cursor": encode_cursor(rows[-1].created_at, rows[-1].id) if more else None}

    def _editable(self, caller: Principal, key_id: str) -> KeyRecord:
        row = self._store.get(key_id)
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", param="id")
        if area := _exceeds(row.permissions, caller):
            raise PermissionDenied(f"cannot change a key whose permissions.{area} is above your own")
        if _limit_above(row.monthly_limit_pico, self._cap(caller)):
            raise PermissionDenied("cannot change a key whose monthly limit is above the tightest limit or "
                                   "budget that binds your own")
        return row

    def update(self, caller: Principal, key_id: str, req: KeyUpdate) -> dict[str, Any]:
        given = req.model_fields_set
        own = given & {"permissions", "monthly_limit", "period", "labels"}
        if key_id == caller.key_id and own:
            # Labels decide whose spend this is: a key moving its own would move its spend.
            raise PermissionDenied("a key cannot change its own permissions, limit, period or labels",
                                   param=sorted(own)[0])
        current = self._editable(caller, key_id)
        fields: dict[str, Any] = {}
        if "name" in given:
            if req.name is None:
                raise InvalidRequest("name cannot be null", param="name")
            fields["name"] = req.name
        if "labels" in given:
            fields["labels"] = req.labels or {}
            if left := label_escape(self._budgets().label_budgets(), caller, current.labels, fields["labels"]):
                raise PermissionDenied(f"these labels would take the key out of budget {left.name!r}, "
                                       "which binds this key", param="labels")
            if out := label_escape(self._ratelimits().label_limits(), caller, current.labels, fields["labels"]):
                raise PermissionDenied(f"these labels would take the key out of rate limit {out.name!r}, "
                                       "which binds this key", param="labels")
        if "permissions" in given:
            if req.permissions is None:
                raise InvalidRequest("permissions cannot be null", param="permissions")
            # Only the areas named change: {"manage": "read"} leaves `completions` as it was.
            permissions = {**current.permissions, **req.permissions.model_dump(exclude_unset=True)}
            if area := _exceeds(permissions, caller):
                raise PermissionDenied(f"cannot grant permissions.{area} above your own",
                                       param=f"permissions.{area}")
            fields["permissions"] = permissions
        if "monthly_limit" in given:
            fields["monthly_limit_pico"] = _pico(req.monthly_limit)
            if _limit_above(fields["monthly_limit_pico"], self._cap(caller)):
                raise PermissionDenied("cannot set a monthly limit above the tightest limit or budget that "
                                       "binds your own", param="monthly_limit")
        if "period" in given:
            if req.period is None:
                raise InvalidRequest("period cannot be null", param="period")
            fields["limit_period"] = req.period
        if given & {"period", "monthly_limit"}:  # the limit granted, in its period
            self._check_period(caller, fields.get("limit_period", current.limit_period))
        if "policy" in given:
            self._check_policy(req.policy)
            fields["policy"] = req.policy
        updated = self._store.update(key_id, fields) if fields else self._store.get(key_id)
        assert updated is not None
        if updated.limit_period != current.limit_period:
            self._periods_changed()  # the key's spend in its new window, from the ledger, first
        self._auth.remember(updated)
        if fields.keys() & {"monthly_limit_pico", "limit_period", "labels", "permissions"}:
            self._budget.bump()  # binds every process for the next request it admits
        return self.render(updated)

    def revoke(self, caller: Principal, key_id: str) -> dict[str, Any]:
        self._editable(caller, key_id)
        self._store.revoke(key_id)
        row = self._store.get(key_id)
        assert row is not None
        self._auth.remember(row)
        self._budget.bump()
        return self.render(row)

    def own(self, caller: Principal) -> dict[str, Any]:
        """The calling key's own record (the bootstrap admin has none in the database)."""
        if caller.key_id is None:
            return {"id": None, "name": caller.name, "key_prefix": None, "monthly_limit": None,
                    "monthly_spend": "0", "monthly_reserved": "0", **window_fields(self._budget, "month"),
                    "permissions": caller.permissions,
                    "labels": {}, "created_by": {"id": caller.user_id, "name": caller.name},
                    "created_at": None, "revoked_at": None, "policy": None}
        return self.get(caller.key_id)
