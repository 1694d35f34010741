"""Counters from the ledger: how the Redis budget (`pipeline/redis_budget.py`) builds what Redis
does not hold, and settles what a killed process never sent.

Counters are kept per slot of each scope's window (`core/windows.py`) and built from the ledger
when Redis has none for a window (first start, a new window, Redis restarted without
persistence): each becomes the larger of itself and the ledger's total, and the build is
repeated `REBUILD_AGAIN_S` later, once this process's ledger has written what it journaled
(however slow the database: the costs of its settles that only released holds are in those
records). A build leaves out
the costs of requests still noted unsettled (their settles are still to add them). A journal
replay settles, once, the requests whose process was killed between their ledger record and
their settle (`settle_replayed`). New budgets start from the ledger's spend (`adopt`), sent once
Redis answers when it cannot be reached. Whether Redis lost its state meanwhile is told by its
epoch (`_state_lost`). A process killed after its answered requests reached the database but
before their settles reached Redis (a stall, or its flusher retrying after Redis came back) leaves
them noted with its id: once it is reaped, a live process counts those whose records the ledger
has (`sweep_dead`); the rest are its journal's, counted at its replay.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tallygate.core.windows import Window, Windows
from tallygate.pipeline.redis_lua import REBUILD, SETTLE_REPLAYED

log = logging.getLogger("tallygate.budget.redis")
REBUILD_AGAIN_S = 3.0
_CHUNK = 2000  # scopes per rebuild call


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def owner(note: object) -> str:
    """The process a note `redis_budget.unsettled` made names ('' for none)."""
    return next((t[1:] for t in text(note).split() if t.startswith("@")), "")


def _less(spend: dict[str, int], costs: dict[str, int], notes: Sequence[object]) -> dict[str, int]:
    """`spend` without each cost of `costs` (request id -> cost) in the counters its note names."""
    out = dict(spend)
    for cost, names in zip(costs.values(), notes, strict=True):
        for name in text(names).split() if names is not None else ():
            if name in out:
                out[name] = max(0, out[name] - cost)
    return out


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("second budget rebuild pass failed: %s", task.exception())


class LedgerCounters:
    """The Redis budget's counters built from the ledger (the base of `RedisBudget`)."""

    def __init__(self, aio: aioredis.Redis, sync: redis.Redis, prefix: str,
                 ledger_spend: Callable[[Window], dict[str, int]],
                 ledger_costs: Callable[[list[str]], dict[str, int]] | None, windows: Windows,
                 ledger_written: Callable[[], Awaitable[None]] | None = None) -> None:
        """`ledger_written()`: returns once this process's ledger has written every record
        journaled so far (raises while it cannot)."""
        self._aio, self._sync, self._p = aio, sync, prefix
        self._ledger_spend = ledger_spend
        self._ledger_costs = ledger_costs
        self._ledger_written = ledger_written
        self.windows = windows
        self._rebuild_async = aio.register_script(REBUILD)
        self._rebuild_sync = sync.register_script(REBUILD)
        self._settle_replayed_sync = sync.register_script(SETTLE_REPLAYED)
        self._settle_replayed_async = aio.register_script(SETTLE_REPLAYED)
        self._tasks: list[asyncio.Task[None]] = []
        self._rebuilding: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._epoch = ""  # names Redis's state: another value (or none) after it lost it
        self._unadopted: dict[str, int] = {}  # ledger spend `adopt` could not send: sent once Redis answers
        self._unadopted_windows: dict[str, Window] = {}
        self._unadopted_lock = threading.Lock()
        self.adoptions = 0
        self._replayed_unnoted = False  # a journal replay wrote records no note settled

    async def rebuild(self, w: Window) -> None:
        """Build a window's counters from the ledger (once at a time in this process)."""
        assert self._rebuilding is not None
        async with self._rebuilding:
            if await self._aio.exists(f"{self._p}{w.slots[0]}:ready"):
                return
            log.warning("building budget counters for the %s window from the ledger", w.period)
            await self._rebuild_pass(w)
        asyncio.get_running_loop().call_later(REBUILD_AGAIN_S, self._again, w)

    def _again(self, w: Window) -> None:
        task = asyncio.get_running_loop().create_task(self._pass_once_written(w))
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    async def _pass_once_written(self, w: Window) -> None:
        """A build pass once this process's ledger has written what it journaled so far."""
        for attempt in range(30):
            if self._ledger_written is None:
                break
            try:
                await self._ledger_written()
                break
            except Exception as exc:  # the database is away: the records wait in the journal
                log.warning("the budget rebuild waits for the ledger's writes (%s)", type(exc).__name__)
                await asyncio.sleep(min(0.1 * 2 ** attempt, 5.0))
        await self._rebuild_pass(w)

    def _rebuild_args(self, spend: dict[str, int], mark: str = "") -> list[list[Any]]:
        """REBUILD calls setting `spend`'s counters, the last one marking the window whose running
        slot is `mark` built (none when '')."""
        pairs = list(spend.items())
        calls = []
        for i in range(0, max(len(pairs), 1), _CHUNK):
            last = i + _CHUNK >= len(pairs)
            calls.append([self._p, "", mark if last else "", *(x for pair in pairs[i:i + _CHUNK] for x in pair)])
        return calls

    async def _rebuild_pass(self, w: Window) -> None:
        spend = await self._less_unsettled(await asyncio.to_thread(self._ledger_spend, w))
        for args in self._rebuild_args(spend, w.slots[0]):
            await self._rebuild_async(args=args)

    async def _less_unsettled(self, spend: dict[str, int]) -> dict[str, int]:
        """`spend` (read from the ledger) without the costs of requests still noted unsettled:
        their settles, delayed (a Redis stall) past their ledger write, are still to add them, and
        a counter raised to the ledger would count them twice. (A request settled since this
        read is in its counter already, so leaving it out of `spend` cannot lower anything.)"""
        if self._ledger_costs is None or not spend:
            return spend
        head = len(self._p) + 2
        ids = [text(k)[head:] async for k in self._aio.scan_iter(match=f"{self._p}u:*", count=1000)]
        costs = await asyncio.to_thread(self._ledger_costs, ids) if ids else {}
        if not costs:
            return spend
        return _less(spend, costs, await self._aio.mget([f"{self._p}u:{rid}" for rid in costs]))

    def _less_unsettled_now(self, spend: dict[str, int]) -> dict[str, int]:
        """`_less_unsettled`, blocking (for `adopt`)."""
        if self._ledger_costs is None or not spend:
            return spend
        head = len(self._p) + 2
        ids = [text(k)[head:] for k in self._sync.scan_iter(match=f"{self._p}u:*", count=1000)]
        costs = self._ledger_costs(ids) if ids else {}
        if not costs:
            return spend
        return _less(spend, costs, self._sync.mget([f"{self._p}u:{rid}" for rid in costs]))

    def adopt(self, spend: dict[str, int], wins: Sequence[Window] = ()) -> None:
        """Start new scopes from the ledger's spend, and rebuild `wins` again once every ledger
        writer has flushed (requests answered before the budget existed may be written after
        this read)."""
        self.adoptions += 1
        if spend:
            try:  # (without the costs of requests still noted: their settles are still to add them)
                for args in self._rebuild_args(self._less_unsettled_now(spend)):
                    self._rebuild_sync(args=args)
            except (RedisError, OSError) as exc:  # (a process starting while Redis is down)
                log.error("starting budget counters in Redis failed (%s); they are sent once it answers", exc)
                self._keep_for_later(spend, wins)
                return
            if self._loop is not None and not self._closing:
                for w in wins:
                    self._loop.call_soon_threadsafe(self._loop.call_later, REBUILD_AGAIN_S, self._again, w)

    def _keep_for_later(self, spend: dict[str, int], wins: Sequence[Window]) -> None:
        """Counters Redis could not take now: each raised to `spend` once it answers."""
        with self._unadopted_lock:
            for counter, pico in spend.items():
                self._unadopted[counter] = max(pico, self._unadopted.get(counter, 0))
            self._unadopted_windows.update((w.slots[0], w) for w in wins)

    def restart(self, scope_id: str, spend: dict[str, int], wins: Sequence[Window], change: str) -> None:
        """Set a scope's counters in `wins` to the ledger's `spend` (0 where it has none) when this
        process is the first to see `change`, else raise them to it as `adopt` does; and read
        those windows again once every ledger writer has flushed."""
        self.adoptions += 1
        exact = {name: spend.get(name, 0) for w in wins for name in (f"{slot}:s:{scope_id}" for slot in w.slots)}
        try:  # (without the costs of requests still noted: their settles are still to add them)
            self._rebuild_sync(args=[self._p, change, "", *(x for pair in self._less_unsettled_now(exact).items()
                                                               for x in pair)])
        except (RedisError, OSError) as exc:
            log.error("restarting budget counters in Redis failed (%s); they are raised once it answers", exc)
            self._keep_for_later(exact, wins)
            return
        if self._loop is not None and not self._closing:
            for w in wins:
                self._loop.call_soon_threadsafe(self._loop.call_later, REBUILD_AGAIN_S, self._again, w)

    async def _adopt_late(self) -> None:
        """Send what `adopt` could not while Redis was unreachable, then read those windows from
        the ledger again (spend settled meanwhile is in it)."""
        with self._unadopted_lock:
            spend, wins = self._unadopted, list(self._unadopted_windows.values())
            self._unadopted, self._unadopted_windows = {}, {}
        try:
            for args in self._rebuild_args(await self._less_unsettled(spend)):
                await self._rebuild_async(args=args)
        except BaseException:
            with self._unadopted_lock:
                for counter, pico in spend.items():
                    self._unadopted[counter] = max(pico, self._unadopted.get(counter, 0))
                self._unadopted_windows.update((w.slots[0], w) for w in wins)
            raise
        for w in wins:
            self._again(w)

    def settle_replayed(self, records: Sequence[tuple[str, int]]) -> int:
        """Count the cost of each (request id, cost) a journal replay wrote whose settle never
        reached Redis (its process was killed first), once; returns how many (blocking)."""
        settled = 0
        for i in range(0, len(records), _CHUNK):
            args = [self._p, *(x for pair in records[i:i + _CHUNK] for x in pair)]
            settled += int(self._settle_replayed_sync(args=args))
        if settled < len(records):  # settled before the kill, or their notes went with Redis's state:
            self._replayed_unnoted = True  # a build from the ledger, which has them now, counts the latter
            if self._loop is not None and not self._closing:
                self._loop.call_soon_threadsafe(self._rebuild_current)
        return settled

    async def sweep_dead(self) -> None:
        """Count the costs of the requests that processes reaped as dead left noted unsettled
        and whose records reached the ledger before the kill: no replay sees those records, and
        their settles died with the process. (Notes without a record yet are left to the dead
        process's replay.)"""
        dead = {text(d) for d in await self._aio.smembers(f"{self._p}dead")}
        if not dead:
            return
        if self._ledger_costs is not None:
            keys = [k async for k in self._aio.scan_iter(match=f"{self._p}u:*", count=1000)]
            notes = await self._aio.mget(keys) if keys else []
            head = len(self._p) + 2
            ids = [text(k)[head:] for k, note in zip(keys, notes, strict=True)
                   if note is not None and owner(note) in dead]
            costs = list((await asyncio.to_thread(self._ledger_costs, ids)).items()) if ids else []
            settled = 0
            for i in range(0, len(costs), _CHUNK):
                args = [self._p, *(x for pair in costs[i:i + _CHUNK] for x in pair)]
                settled += int(await self._settle_replayed_async(args=args))
            if settled:
                log.warning("counted %d requests that processes killed before their budget settles had "
                            "answered and written to the ledger", settled)
        await self._aio.srem(f"{self._p}dead", *dead)

    def _rebuild_current(self) -> None:
        for w in self.windows.current():
            self._again(w)

    async def _state_lost(self) -> bool:
        """Whether Redis lost its state since this process last looked (after a failed flush)."""
        epoch = await self._aio.get(f"{self._p}epoch")
        if epoch is not None and text(epoch) == self._epoch:
            return False
        await self._aio.set(f"{self._p}epoch", uuid.uuid4().hex, nx=True)
        self._epoch = text(await self._aio.get(f"{self._p}epoch") or b"")
        return True
