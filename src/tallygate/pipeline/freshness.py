"""Reloading budgets and keys when another process changed them (`StaleScopes`).

Every change of a budget, or of a key's limit, labels or permissions, bumps a version in Redis
(`BudgetEngine.bump`) before the management API answers; the reservation script compares it
with the version this process decided the request's scopes with, in the same round trip. On a
mismatch `Freshness.catch_up` reloads budgets and changed keys (once for every request that
found the same version), and the pipeline decides the scopes again.

The CLI changes the database directly; `SharedVersion` lets it bump the same version, so its
changes bind every running process as the management API's do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis
from redis.exceptions import RedisError

from tallygate.errors import BudgetUnavailable
from tallygate.pipeline.budget import MemoryBudget
from tallygate.pipeline.redis_budget import RedisBudget


class Freshness:
    """Reloads what decides scopes (`reloads`, in order) up to the shared version."""

    def __init__(self, engine: RedisBudget, *reloads: Callable[[], Awaitable[None]]) -> None:
        self._engine = engine
        self._reloads = reloads
        self._lock = asyncio.Lock()

    async def catch_up(self, version: str) -> None:
        async with self._lock:
            if self._engine.loaded_version == version:
                return  # another request of this process has just reloaded
            now = await asyncio.to_thread(self._engine.version)  # read before what it covers
            for reload in self._reloads:
                await reload()
            self._engine.loaded_version = now


    async def latest(self) -> None:
        """Catch up if another process moved the shared version: for requests that make no
        reservation (management, `/v1/key`), whose caller's key may have been revoked or changed
        elsewhere a moment ago. Without Redis, keys are as this process last polled them."""
        try:
            version = await asyncio.to_thread(self._engine.version)
        except (RedisError, OSError):
            return
        if version != self._engine.loaded_version:
            await self.catch_up(version)


class SharedVersion:
    """The budgets/keys version in Redis, for a process that serves no requests (the CLI).

    `check()` before a change: when Redis cannot be reached, nothing is changed. `bump()` after
    it: raises `BudgetUnavailable` if Redis went away meanwhile (the change is then saved, but
    the running processes only see it at their next poll)."""

    def __init__(self, url: str, prefix: str = "tg:", timeout_s: float = 2.0) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._key = f"{prefix}ver"  # as `RedisBudget.bump`

    def check(self) -> None:
        try:
            self._client.ping()
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"Redis (--redis / TALLYGATE_REDIS_URL) is unreachable ({type(exc).__name__}): "
                                    "nothing was changed, since running gateways could not be told at once"
                                    ) from None

    def bump(self) -> None:
        try:
            self._client.incr(self._key)
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"the change is saved, but telling running gateways through Redis failed "
                                    f"({type(exc).__name__}): they apply it at their next poll, within about "
                                    "a second") from None

    def close(self) -> None:
        self._client.close()


class AnnouncingBudget(MemoryBudget):
    """The in-memory budget of a process that changes budgets and keys but serves no request (the
    CLI): `bump` tells every running process at once through `shared` (None: no Redis, they poll)."""

    def __init__(self, shared: SharedVersion | None) -> None:
        super().__init__()
        self.shared = shared

    def bump(self) -> None:
        if self.shared is not None:
            self.shared.bump()
