"""Routing cooldowns shared through Redis: a target one process saw failing is left out by all.

Off the hot path: every `interval_s` this service publishes the circuits this process opened
(`<prefix>cool:<policy>:<target>` = the wall-clock end of the cooldown, expiring with it) and,
in the same round trip, reads those of every process; a circuit open elsewhere opens here until
the same moment, after which one probe may try the target as usual. A failed probe anywhere
opens it again for everyone. Redis unreachable: each process keeps its own circuits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tallygate.pipeline.routing.policies import Policy

log = logging.getLogger("tallygate.routing.shared")


class SharedCooldowns:
    """Publishes and adopts open circuits (a service)."""

    def __init__(self, policies: Mapping[str, Policy], url: str, *, prefix: str = "tg:", interval_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._policies = policies
        self._aio = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._p = prefix
        self._interval = interval_s
        self._clock = clock
        self._published: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def _key(self, policy: str, target: str) -> str:
        return f"{self._p}cool:{policy}:{target}"

    async def sync(self) -> None:
        """One round: publish the circuits opened here, adopt those opened elsewhere."""
        now, wall_ms = self._clock(), time.time_ns() // 1_000_000
        names: list[tuple[str, str]] = []
        async with self._aio.pipeline(transaction=False) as pipe:
            for pname, policy in self._policies.items():
                for target in policy.targets:
                    h = policy.health[target.name]
                    ident = (pname, target.name)
                    names.append(ident)
                    left_ms = int((h.open_until - now) * 1000)
                    if h.tripped and left_ms > 0 and self._published.get(ident) != h.open_until:
                        pipe.set(self._key(*ident), wall_ms + left_ms, px=left_ms)
                        self._published[ident] = h.open_until
            pipe.mget([self._key(*ident) for ident in names])
            found = (await pipe.execute())[-1]
        for (pname, tname), until in zip(names, found, strict=True):
            if until is None:
                continue
            left_s = (int(until) - wall_ms) / 1000
            health = self._policies[pname].health
            h = health[tname]
            if left_s > 0 and (not h.tripped or h.open_until < now + left_s - 0.1):
                h.tripped, h.probing = True, False
                h.failures = max(h.failures, health.threshold)
                h.open_until = now + left_s
                self._published[(pname, tname)] = h.open_until  # adopted, not ours to publish

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sync()
            except (RedisError, OSError) as exc:
                log.warning("sharing routing cooldowns through Redis failed: %s", exc)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
        await self._aio.aclose()
