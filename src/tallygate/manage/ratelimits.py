"""Rate-limit management: create, list, read, change and delete rate limits, without escalation.

The rules are budgets' (`manage/budgets.py`): a bound key (one with its own monthly limit, or a
key or label budget or rate limit that applies to it) cannot loosen a rate limit that binds it:
raise or remove one of its limits, change its scope, or delete it; tag and model limits bind
every such key, since any of its requests may carry the tag or name the model. Tightening and
creating are always allowed. A bound key cannot leave a label-group limit through the labels of
the keys it creates or changes (`manage/label_groups.py`, used by `manage/keys.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from tallygate.errors import InvalidRequest, NotFound, PermissionDenied
from tallygate.manage.budgets import _iso, is_bound
from tallygate.manage.ratelimit_schemas import LIMITS, RateLimitCreate, RateLimitUpdate
from tallygate.pipeline.ratelimit import WINDOW_S, MemoryLimiter, RateLimiter, RuleUsage
from tallygate.pipeline.ratelimit_rules import RuleRegistry
from tallygate.pipeline.scopes import BudgetSet
from tallygate.store.keys import KeyStore, now_ms
from tallygate.store.ratelimits import RateLimitRecord, RateLimitStore
from tallygate.store.refusals import REFUSAL_CODES, RefusalCounts
from tallygate.types import Principal

REFUSALS_WINDOW_MS = 3_600_000


def _counts(usage: RuleUsage | None) -> dict[str, int]:
    if usage is None:
        return {"requests": 0, "requests_last_second": 0, "tokens": 0, "in_flight": 0}
    return {"requests": usage.requests, "requests_last_second": usage.requests_last_second,
            "tokens": usage.tokens, "in_flight": usage.in_flight}


def _looser(before: int | None, after: int | None) -> bool:
    return after is None and before is not None or (after is not None and before is not None and after > before)


class RateLimitAdmin:
    """The operations behind `/v1/manage/ratelimit` and `tallygate ratelimits` (blocking)."""

    def __init__(self, store: RateLimitStore, keys: KeyStore, registry: RuleRegistry,
                 budgets: Callable[[], BudgetSet], bump: Callable[[], None], *,
                 limiter: RateLimiter | None = None, refusals: RefusalCounts | None = None) -> None:
        """`budgets()`: the budgets in force (whether a caller is bound); `bump()` tells the
        other processes to reload before admitting their next request; `limiter` counts what
        the limits admitted and `refusals` reads the ledger's (for `key_usage`)."""
        self._store, self._keys, self._registry = store, keys, registry
        self._budgets, self._bump = budgets, bump
        self._limiter = limiter or MemoryLimiter()
        self._refusals = refusals

    async def key_usage(self, key_ids: Sequence[str]) -> dict[str, Any]:
        """The rate limits on every request of each key, what each counts now, and each key's
        refusals in the last hour: two queries and one limiter read for any number of keys."""
        since = now_ms() - REFUSALS_WINDOW_MS
        found, refusals = await asyncio.to_thread(self._key_rows, set(key_ids), since)
        rules = self._registry.current
        per_key: dict[str, list[RateLimitRecord]] = {}
        limits: dict[str, RateLimitRecord] = {}
        for key_id in dict.fromkeys(key_ids):
            row = found.get(key_id)
            if row is not None:
                per_key[key_id] = rules.of_key(row.id, row.labels)
                limits.update((r.id, r) for r in per_key[key_id])
        counts, counted_by = await self._limiter.usage(["rl:" + rid for rid in limits])
        none = dict.fromkeys(REFUSAL_CODES, 0)
        return {
            "object": "ratelimit.usage", "counted_by": counted_by, "window_s": int(WINDOW_S),
            "refusals_since": _iso(since),
            "limits": [{"id": r.id, "name": r.name, "scope": r.scope, **{f: getattr(r, f) for f in LIMITS},
                        "usage": _counts(counts.get("rl:" + r.id))} for r in limits.values()],
            "keys": [{"id": key_id, "rate_limits": [r.id for r in bound],
                      "refusals_last_hour": refusals.get(key_id, none)} for key_id, bound in per_key.items()],
        }

    def _key_rows(self, key_ids: set[str], since: int) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
        rows = self._keys.by_ids(key_ids)
        return rows, self._refusals.by_key(rows.keys(), since) if self._refusals is not None else {}

    def render(self, r: RateLimitRecord) -> dict[str, Any]:
        creator = self._keys.users_by_id({r.created_by}).get(r.created_by) if r.created_by else None
        return {"id": r.id, "name": r.name, "scope": r.scope, **{f: getattr(r, f) for f in LIMITS},
                "created_by": {"id": r.created_by, "name": creator.name if creator else None},
                "created_at": _iso(r.created_at)}

    def _check_key(self, scope: dict[str, Any]) -> None:
        if "key" in scope and self._keys.get(scope["key"]) is None:
            raise InvalidRequest(f"no API key with id {scope['key']!r}", param="scope.key")

    def _changed(self) -> None:
        self._registry.reload()
        self._bump()

    def create(self, caller: Principal, req: RateLimitCreate) -> dict[str, Any]:
        scope = req.scope.as_dict()
        self._check_key(scope)
        r = self._store.create(name=req.name, scope=scope, limits={f: getattr(req, f) for f in LIMITS},
                               created_by=caller.user_id)
        self._changed()
        return self.render(r)

    def get(self, limit_id: str) -> dict[str, Any]:
        return self.render(self._found(limit_id))

    def page(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.render(r) for r in self._store.all()]}

    def _found(self, limit_id: str) -> RateLimitRecord:
        r = self._store.get(limit_id)
        if r is None:
            raise NotFound(f"no rate limit with id {limit_id!r}", param="id")
        return r

    def _binds(self, caller: Principal, r: RateLimitRecord) -> bool:
        rules = self._registry.current
        bound = is_bound(self._budgets(), caller) or bool(rules.key_bound(caller))
        return bound and any(x.id == r.id for x in rules.binding(caller))

    def update(self, caller: Principal, limit_id: str, req: RateLimitUpdate) -> dict[str, Any]:
        r = self._found(limit_id)
        given = req.model_fields_set
        values: dict[str, Any] = {f: getattr(req, f) for f in LIMITS if f in given}
        if "name" in given:
            if req.name is None:
                raise InvalidRequest("name cannot be null", param="name")
            values["name"] = req.name
        if "scope" in given:
            if req.scope is None:
                raise InvalidRequest("scope cannot be null", param="scope")
            values["scope"] = req.scope.as_dict()
            self._check_key(values["scope"])
        if all(values.get(f, getattr(r, f)) is None for f in LIMITS):
            raise InvalidRequest("a rate limit keeps at least one limit (delete it instead)",
                                 param=next(f for f in LIMITS if f in given))
        loosened = [f for f in LIMITS if f in values and _looser(getattr(r, f), values[f])]
        if values.get("scope", r.scope) != r.scope:
            loosened.insert(0, "scope")
        if loosened and self._binds(caller, r):
            raise PermissionDenied(f"rate limit {r.name!r} binds this key: it may lower its limits or rename it, "
                                   "not raise or remove a limit or change its scope", param=loosened[0])
        row = self._store.update(limit_id, values) if values else r
        if row is None:
            raise NotFound(f"no rate limit with id {limit_id!r}", param="id")
        self._changed()
        return self.render(row)

    def delete(self, caller: Principal, limit_id: str) -> dict[str, Any]:
        r = self._found(limit_id)
        if self._binds(caller, r):
            raise PermissionDenied(f"rate limit {r.name!r} binds this key: it cannot delete it")
        out = self.render(r)
        self._store.delete(limit_id)
        self._changed()
        return out
