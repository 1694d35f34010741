"""Which rate limits a request counts against, and the registry that keeps them current.

A rate limit applies to a request when its scope holds it: `{"key": id}` its key, `{"label":
{...}}` a key carrying every pair, `{"tag": path}` a tag at or under `path`, `{"model": name}`
the requests that model serves (a policy's targets are admitted as they are tried,
`pipeline/target_limits.py`), or `{"model": "policy/<name>"}` every request the policy routes
(its key's own policy included). A label, tag or model limit is one counter shared by every
request it applies to, as a budget is one total.

`RuleRegistry` reloads the table every `refresh_s` and at once after a change made through this
process (with Redis, every process reloads before admitting its next request, as for budgets).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from tallygate.core.periodic import Periodic
from tallygate.core.tagpath import prefixes
from tallygate.store.budgets import labels_match
from tallygate.store.ratelimits import RateLimitRecord, RateLimitStore
from tallygate.types import Principal

log = logging.getLogger("tallygate.ratelimits")


def limit_scope_text(scope: dict[str, Any]) -> str:
    """`label team=growth`, `tag customer/acme`, `key <id>`, `model gpt-4o`."""
    kind, value = next(iter(scope.items()))
    if kind == "label":
        return "label " + ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return f"{kind} {value}"


class Rule(NamedTuple):
    """One rate limit as the hot path reads it: `id` is 'rl:<record id>' (its counters' name),
    `kind` its scope's kind ('key', 'label', 'tag', 'model'; '' unknown), which decides what a
    refusal may tell the caller (`ratelimit.redacted`)."""

    id: str
    name: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    kind: str = ""
    requests_per_second: int | None = None

    @classmethod
    def of(cls, r: RateLimitRecord) -> Rule:
        return cls("rl:" + r.id, f"rate limit {r.name!r} ({limit_scope_text(r.scope)})",
                   r.requests_per_minute, r.tokens_per_minute, r.max_concurrent, r.kind, r.requests_per_second)


class RuleSet:
    """An immutable index of rate limits: by key id, by tag path, by model; labels as a list."""

    def __init__(self, records: Iterable[RateLimitRecord] = ()) -> None:
        self.records = {r.id: r for r in records}
        self._by_key: dict[str, list[Rule]] = {}
        self._labels: list[tuple[dict[str, str], Rule]] = []
        self._tags: dict[str, list[Rule]] = {}
        models: dict[str, list[Rule]] = {}
        for r in self.records.values():
            rule, value = Rule.of(r), r.scope[r.kind]
            if r.kind == "key":
                self._by_key.setdefault(value, []).append(rule)
            elif r.kind == "label":
                self._labels.append((value, rule))
            elif r.kind == "tag":
                self._tags.setdefault(value, []).append(rule)
            else:
                models.setdefault(value, []).append(rule)
        self._models = {name: tuple(rules) for name, rules in models.items()}
        self._cache: dict[str, tuple[Principal, tuple[Rule, ...]]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def key_bound(self, principal: Principal) -> tuple[Rule, ...]:
        """The limits on every request of this key: its key and label limits."""
        if principal.key_id is None or not (self._by_key or self._labels):
            return ()
        cached = self._cache.get(principal.key_id)
        if cached is not None and cached[0] is principal:
            return cached[1]
        found = list(self._by_key.get(principal.key_id, ()))
        found += [rule for labels, rule in self._labels if labels_match(labels, principal.labels)]
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[principal.key_id] = (principal, tuple(found))
        return tuple(found)

    def of_key(self, key_id: str, labels: dict[str, str]) -> list[RateLimitRecord]:
        """The limits on every request of a key (its key and label limits), from its record."""
        ids = {rule.id for rule in self._by_key.get(key_id, ())}
        ids |= {rule.id for want, rule in self._labels if labels_match(want, labels)}
        return [r for r in self.records.values() if "rl:" + r.id in ids]

    def rules(self, principal: Principal, tags: tuple[str, ...], models: Sequence[str] = ()) -> tuple[Rule, ...]:
        """Every limit a request counts against (the bootstrap admin's key and labels none);
        `models`: each model or policy name it resolves to, once."""
        if not self.records:
            return ()
        rules = self.key_bound(principal)
        if tags and self._tags:
            rules += tuple(rule for p in prefixes(tags) for rule in self._tags.get(p, ()))
        if self._models:
            rules += tuple(rule for m in models for rule in self._models.get(m, ()))
        return rules

    def model_rules(self) -> Mapping[str, tuple[Rule, ...]]:
        """The limits on each model or policy name that has any (empty when none has: one
        truth test tells a request that no target of its policy is limited)."""
        return self._models

    def binding(self, principal: Principal) -> list[RateLimitRecord]:
        """The limits that bind a key: its key and label limits, and every tag and model limit
        (any request of it may carry the tag or name the model)."""
        ids = {rule.id.removeprefix("rl:") for rule in self.key_bound(principal)}
        return [r for r in self.records.values() if r.id in ids or r.kind in ("tag", "model")]

    def label_limits(self) -> list[RateLimitRecord]:
        return [r for r in self.records.values() if r.kind == "label"]


class RuleRegistry:
    """The current `RuleSet`, reloaded from the database every `refresh_s` (a service)."""

    def __init__(self, store: RateLimitStore, refresh_s: float = 1.0) -> None:
        self._store = store
        self.current = RuleSet()
        self._refresher = Periodic(refresh_s, self.reload_async, log,
                                   "refreshing rate limits failed; the last known ones still apply")

    def rules(self, principal: Principal, tags: tuple[str, ...], models: Sequence[str] = ()) -> tuple[Rule, ...]:
        return self.current.rules(principal, tags, models)

    def model_rules(self) -> Mapping[str, tuple[Rule, ...]]:
        return self.current.model_rules()

    def reload(self) -> None:
        """Read every rate limit (blocking)."""
        self.current = RuleSet(self._store.all())

    async def reload_async(self) -> None:
        await asyncio.to_thread(self.reload)

    async def start(self) -> None:
        await self.reload_async()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()
