"""Reloading budgets and keys when another process changed them (`StaleScopes`).

Every change of a budget, or of a key's limit, labels or permissions, bumps a version in Redis
(`BudgetEngine.bump`) before the management API answers; the reservation script compares it
with the version this process decided the request's scopes with, in the same round trip. On a
mismatch `Freshness.catch_up` reloads budgets and changed keys (once for every request that
found the same version), and the pipeline decides the scopes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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
