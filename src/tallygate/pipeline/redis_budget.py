"""A `BudgetEngine` shared by several processes and replicas through Redis.

One round trip per reservation: a Lua script checks every limited scope of the request and holds
the amount against all of them, or none (`pipeline/redis_lua.py`). Settling never waits: it is
queued, and a flusher sends every queued settle in one pipelined round trip. Holds belong to
this process and live as long as it renews them (every `ttl_s / 3`); the holds of a process that
dies are reaped by the others within `ttl_s` of its last renewal, however long its requests ran.

Counters are kept per slot of each scope's window (`core/windows.py`) and built from the ledger
when Redis has none for a window (`pipeline/redis_rebuild.py`, this engine's base).
Settles that could not be sent while Redis was away are sent once it is back, but if it came back
without its state (`pepoch` changed) only to release holds: their costs are in the ledger the
counters are rebuilt from, and counted again they would put a counter above it.
Reservations are batched (`pipeline/redis_batch.py`) on a client of their own whose two
connections are opened at start: however many requests are in flight, none fails for want of a
pooled connection, and none waits for a connection to be opened.

When Redis cannot be reached, `fail_open=False` refuses requests under a limit with 503
`budget_unavailable`; `fail_open=True` serves them (logged loudly) and queues their spend, but
only up to `open_allowance` picodollars of worst-case cost per limited scope and process for
each outage: past it, 503 as when closed. A scope can therefore pass its limit by at most
`open_allowance` times the number of processes (plus the usual holds lost with Redis's state).
A process started while Redis is unreachable starts all the same: the ledger spend it could not
send (`adopt`: budgets new to it) goes with the first heartbeat Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from tallygate.core import clock
from tallygate.core.windows import MONTH, Window, Windows, window
from tallygate.errors import BudgetUnavailable
from tallygate.pipeline.budget import Hold, Scope, StaleScopes, counters, refusal
from tallygate.pipeline.redis_batch import ScriptBatch
from tallygate.pipeline.redis_lua import HEARTBEAT, RELEASE_ALL, RESERVE, SETTLE
from tallygate.pipeline.redis_rebuild import REBUILD_AGAIN_S, LedgerCounters, text

log = logging.getLogger("tallygate.budget.redis")
_MAX_QUEUED = 200_000  # settles kept while Redis is away; the ledger has them in any case
_RETRY_S = 0.05  # between tries of a settle flush that failed


def unsettled(request_id: str, names: Sequence[str], owner: str = "") -> str:
    """RESERVE's second argument: the request id, the counters its cost will count in and
    '@<owner>', the process that will settle it."""
    if not (request_id and names):
        return ""
    return f"{request_id} {' '.join(names)}{f' @{owner}' if owner else ''}"


def _client(url: str, timeout_s: float, connections: int) -> aioredis.Redis:
    """A client that never opens more than `connections` connections (a caller past them waits
    for one) and keeps those it opened: a new one per request would cost each a handshake.
    A pooled connection may have died with a Redis restart: it reconnects once, at once, before
    calling Redis unreachable (redis-py retries only the errors named in retry_on_error)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=timeout_s * 5, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, retry=AsyncRetry(NoBackoff(), 1), retry_on_error=[RedisConnectionError])
    return aioredis.Redis.from_pool(pool)


class RedisBudget(LedgerCounters):
    """Budget state in Redis (a service: `start()` and `stop()` with the gateway)."""

    def __init__(self, url: str, ledger_spend: Callable[[Window], dict[str, int]], *, fail_open: bool = False,
                 open_allowance: int = 0, ttl_s: float = 15.0, prefix: str = "tg:", timeout_s: float = 1.0,
                 tz: str = "UTC", periods: Callable[[], Iterable[str]] = lambda: (MONTH,),
                 ledger_costs: Callable[[list[str]], dict[str, int]] | None = None,
                 ledger_written: Callable[[], Awaitable[None]] | None = None) -> None:
        """`ledger_spend(window)`: the ledger's spend in each slot of `window` of every scope
        counted over its period, by counter '<slot>:s:<scope>' (blocking); `periods()`: the
        periods scopes use now (the windows `drift` compares);
        `open_allowance`: with `fail_open`, the worst-case cost (picodollars) served per limited
        scope while Redis is unreachable, before refusing with 503; `ledger_costs(ids)`: the cost
        of each request of `ids` the ledger has (blocking), so that a build from the ledger leaves
        out the costs whose settles are still to come; `ledger_written()`: returns once this
        process's ledger has written every record journaled so far (raises while it cannot)."""
        self.url = url
        aio = _client(url, timeout_s, 1)
        # The reservations' own connections, one per batch (two at most): a settle, a heartbeat or
        # a rebuild being sent never makes a request's reservation open one (a TCP connection and
        # a handshake before its one round trip). `aio` (everything else) keeps one connection.
        self._hot = _client(url, timeout_s, 2)
        sync = redis.Redis.from_url(url, socket_timeout=timeout_s * 2, socket_connect_timeout=timeout_s,
                                    retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError])
        super().__init__(aio, sync, prefix, ledger_spend, ledger_costs, Windows(tz), ledger_written)
        self._fail_open = fail_open
        self._open_allowance = open_allowance
        self._unenforced: dict[str, int] = {}  # worst cases served per scope during this outage
        self.loaded_version = ""  # the budgets/keys version this process decides scopes with
        self._down_until = 0.0  # unlimited requests skip the version check until then
        self._ttl_ms = int(ttl_s * 1000)
        self.process = uuid.uuid4().hex
        self._reserve = ScriptBatch(self._hot, self._hot.register_script(RESERVE), on_orphan=self._orphan)
        self._settle = self._aio.register_script(SETTLE)
        self._heartbeat = self._aio.register_script(HEARTBEAT)
        self._release = self._aio.register_script(RELEASE_ALL)
        self._queue: list[tuple[Hold, int]] = []
        self._wake: asyncio.Event | None = None
        self._periods = periods
        self._warned = 0.0
        self._flush_failed = False
        self.unavailable = 0  # requests served or refused while Redis was unreachable

    def now_ms(self) -> int:
        return clock.now_ms()

    def _limits(self, limited: Sequence[Scope], at: int) -> list[Any]:
        """The RESERVE script's (scope, limit, slots) triples."""
        out: list[Any] = []
        for s in limited:
            out += (s.id, s.limit, self.windows.at(s.period, at).spec)
        return out

    # -- the hot path ---------------------------------------------------------------------------

    async def reserve(self, scopes: Sequence[Scope], amount: int, at_ms: int | None = None,
                      request_id: str = "") -> Hold:
        at = self.now_ms() if at_ms is None else at_ms
        names = counters(scopes, self.windows, at)
        limited = [s for s in scopes if s.limit is not None]
        noted = unsettled(request_id, names, self.process)
        if not limited or not amount:  # only check that no budget or limit has appeared since
            if time.monotonic() < self._down_until:
                return Hold(names, (), 0)  # Redis just failed: do not make it wait for a timeout
            try:
                res = await self._reserve([self._p, noted, self.process, 0, self._ttl_ms, self.loaded_version])
            except (RedisError, OSError):
                self._down_until = time.monotonic() + 1.0
                return Hold(names, (), 0)  # nothing known to limit it: served either way
            if res[0] == 3:
                raise StaleScopes(text(res[1]))
            return Hold(names, (), 0, request_id if noted else "")
        args: list[Any] = [self._p, noted, self.process, amount, self._ttl_ms, self.loaded_version,
                           *self._limits(limited, at)]
        for _ in range(3):
            try:
                res = await self._reserve(args)
            except (RedisError, OSError) as exc:
                return self._unavailable(names, limited, amount, exc)
            if self._unenforced:
                self._unenforced.clear()  # Redis is back: the next outage has its own allowance
            if res[0] == 0:
                return Hold(names, tuple(s.id for s in limited), amount, request_id if noted else "")
            if res[0] == 3:
                raise StaleScopes(text(res[1]))
            if res[0] == 1:
                raise refusal(limited[int(res[1]) - 1], int(res[2]), int(res[3]), amount)
            try:
                await self.rebuild(self.windows.at(limited[int(res[1]) - 1].period, at))
            except Exception as exc:
                return self._unavailable(names, limited, amount, exc)
        return self._unavailable(names, limited, amount, RuntimeError("the window's counters could not be built"))

    def _orphan(self, args: Sequence[Any], res: Any) -> None:
        """A reservation whose request went away while Redis answered: release it."""
        if isinstance(res, list) and res and res[0] == 0:
            self.settle(Hold((), tuple(args[6::3]), int(args[3]), text(args[1]).partition(" ")[0]), 0)

    def _unavailable(self, names: tuple[str, ...], limited: Sequence[Scope], amount: int,
                     exc: BaseException) -> Hold:
        self.unavailable += 1
        now = time.monotonic()
        if now - self._warned > 5.0:
            self._warned = now
            log.error("Redis budget state unreachable (%s: %s); %s", type(exc).__name__, exc,
                      "serving requests under limits WITHOUT enforcing them (budgets_unavailable: open)"
                      if self._fail_open else "refusing requests under limits (budgets_unavailable: closed)")
        if not self._fail_open:
            raise BudgetUnavailable("budget state is unreachable, so requests under a limit or budget are "
                                    "refused until it is back")
        served = self._unenforced
        if any(served.get(s.id, 0) + amount > self._open_allowance for s in limited):
            raise BudgetUnavailable("budget state is unreachable and this request's limits have used the "
                                    "allowance served unenforced (budgets_open_allowance); retry once it is back")
        for s in limited:
            served[s.id] = served.get(s.id, 0) + amount
        return Hold(names, (), 0)

    def settle(self, hold: Hold, actual: int) -> None:
        if not hold.held and not actual and not hold.request:
            return
        if len(self._queue) >= _MAX_QUEUED:
            log.error("dropping a queued budget settle: Redis has been unreachable too long")
            self._queue.pop(0)
        self._queue.append((hold, actual))
        if self._wake is not None:
            self._wake.set()

    def _settle_args(self, hold: Hold, actual: int) -> list[Any]:
        return [self._p, self.process, hold.request, hold.amount, actual, len(hold.held), *hold.held,
                *(hold.counters if actual else ())]

    async def _flush(self) -> None:
        """Send every queued settle: one script call, or one pipelined round trip for many."""
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        try:
            batch = await self._held_up(batch)
            if len(batch) == 1:
                await self._settle(args=self._settle_args(*batch[0]))
                return
            for attempt in range(2):
                try:
                    # EVALSHA by hand: redis-py's pipelined scripts cost an extra SCRIPT EXISTS round trip.
                    async with self._aio.pipeline(transaction=False) as pipe:
                        for hold, actual in batch:
                            pipe.evalsha(self._settle.sha, 0, *self._settle_args(hold, actual))
                        await pipe.execute()
                    return
                except NoScriptError:  # Redis restarted: nothing of this pipeline ran
                    if attempt:
                        raise
                    await self._aio.script_load(SETTLE)
        except BaseException:
            self._queue[:0] = batch
            self._flush_failed = True
            raise

    async def _held_up(self, batch: list[tuple[Hold, int]]) -> list[tuple[Hold, int]]:
        """`batch` to send after a failed flush: if Redis lost its state meanwhile, the settles
        only release holds (the counters rebuilt from the ledger hold these costs already), except
        those of requests noted since (no build holds theirs), and the windows are read again."""
        if not self._flush_failed:
            return batch
        if await self._state_lost():
            noted = await self._noted([hold.request for hold, _ in batch])
            batch = [(hold, actual if hold.request in noted else 0) for hold, actual in batch]
            for w in self.windows.current() if not self._closing else ():
                asyncio.get_running_loop().call_later(REBUILD_AGAIN_S, self._again, w)  # late writes
        self._flush_failed = False
        return batch

    async def _noted(self, ids: list[str]) -> set[str]:
        """Those of `ids` Redis notes unsettled now: reserved since it lost its state, so no build
        from the ledger holds their costs (builds leave noted costs out): their settles count them."""
        ids = [i for i in ids if i]
        notes = await self._aio.mget([f"{self._p}u:{i}" for i in ids]) if ids else []
        return {i for i, note in zip(ids, notes, strict=True) if note is not None}

    async def _flusher(self) -> None:
        """Sends settles as they come, until `stop()` (which sends the rest)."""
        assert self._wake is not None
        warned = 0.0
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                if time.monotonic() - warned > 5.0:
                    warned = time.monotonic()
                    log.warning("settling %d budget holds in Redis failed (%s); retrying", len(self._queue), exc)
                # Soon, not with a growing backoff: a settle queued once Redis is back (a request
                # reserved before it lost its state, ending after) must not wait to be sent with
                # the held-up ones, which only release holds (`_held_up`). (A refused connection
                # costs nothing; a stalled Redis makes each try wait for its timeout.)
                await asyncio.sleep(_RETRY_S)
                self._wake.set()

    # -- reads for the management API (blocking) --------------------------------------------------

    def _read(self, key: str) -> int:
        try:
            return int(self._sync.get(key) or 0)
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"budget state is unreachable ({type(exc).__name__})") from None

    def drift(self) -> int:
        """Reconciliation: the sum over the counters of every scope's current window of
        |Redis counter - ledger spend in that slot|, in picodollars (blocking; 0 once every
        settled request is in the ledger). Spend settled but not yet written by a ledger writer
        shows as drift for that moment."""
        at = self.now_ms()
        ledger: dict[str, int] = {}
        live: set[str] = set()
        for period in set(self._periods()):
            w = window(period, at, self.windows.tz)
            live.update(w.slots)
            ledger.update(self._ledger_spend(w))
        head = len(self._p)
        try:
            counters = {}
            for k in self._sync.scan_iter(match=f"{self._p}*:s:*", count=1000):
                name = k.decode()[head:]
                if name.partition(":s:")[0] in live and (v := self._sync.get(k)) is not None:
                    counters[name] = int(v or 0)
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"budget state is unreachable ({type(exc).__name__})") from None
        return sum(abs(counters.get(c, 0) - ledger.get(c, 0)) for c in counters.keys() | ledger.keys())

    def version(self) -> str:
        """The shared budgets/keys version now (blocking; read before reloading them)."""
        return text(self._sync.get(f"{self._p}ver") or b"0")

    def bump(self) -> None:
        try:
            self._sync.incr(f"{self._p}ver")
        except (RedisError, OSError) as exc:  # the others still reload within their refresh period
            log.error("telling other processes of a budget or key change failed: %s", exc)

    def spend(self, scope_id: str, period: str = MONTH) -> int:
        """The scope's spend in its current window; when Redis has lost the window's counters
        (restarted without persistence), they are rebuilt from the ledger first: a view never
        reads a lost 0."""
        w = window(period, self.now_ms(), self.windows.tz)
        try:
            if not self._sync.exists(f"{self._p}{w.slots[0]}:ready"):
                log.warning("building budget counters for the %s window from the ledger (read before any request)",
                            w.period)
                for args in self._rebuild_args(self._ledger_spend(w), w.slots[0]):
                    self._rebuild_sync(args=args)
            values = self._sync.mget([f"{self._p}{slot}:s:{scope_id}" for slot in w.slots])
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"budget state is unreachable ({type(exc).__name__})") from None
        return sum(int(v) for v in values if v is not None)

    def reserved(self, scope_id: str) -> int:
        return self._read(f"{self._p}rt:{scope_id}")

    async def ping(self) -> str | None:
        """None when Redis answers, else the reason (for `/readyz`)."""
        try:
            await self._aio.ping()
        except (RedisError, OSError) as exc:
            return f"Redis unreachable: {type(exc).__name__}"
        return None

    # -- the service ----------------------------------------------------------------------------

    async def _beat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                await self._heartbeat(args=[self._p, self.process, self._ttl_ms])
                if self._unadopted:
                    await self._adopt_late()
                await self.sweep_dead()
            except (RedisError, OSError) as exc:
                log.warning("renewing budget holds in Redis failed: %s", exc)
            except Exception as exc:  # the ledger's read of the dead's requests: again at the next beat
                log.error("counting the requests of processes killed before their settles failed: %s", exc)

    async def start(self) -> None:
        self._wake, self._rebuilding = asyncio.Event(), asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        try:  # the version first: budgets and keys are loaded after the engine starts
            self.loaded_version = text(await self._aio.get(f"{self._p}ver") or b"0")
            await self._aio.set(f"{self._p}epoch", uuid.uuid4().hex, nx=True)
            self._epoch = text(await self._aio.get(f"{self._p}epoch") or b"")
            await self._heartbeat(args=[self._p, self.process, self._ttl_ms])
            await asyncio.gather(self._hot.ping(), self._hot.ping())  # the reservations' two, opened now
            await self.rebuild(self.windows.at(MONTH, self.now_ms()))
        except (RedisError, OSError) as exc:
            log.error("Redis budget state unreachable at start-up (%s); budgets_unavailable: %s", exc,
                      "open" if self._fail_open else "closed")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._flusher()), loop.create_task(self._beat())]
        if self._replayed_unnoted:
            self._rebuild_current()

    async def stop(self) -> None:
        """Send the settles still queued (requests have drained by now) and let go of any hold."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        for task in self._tasks[1:]:  # the flusher ends by itself after its current round trip
            task.cancel()
        if self._tasks:  # (a cancellation inside a Redis call can be lost: wait, but not forever)
            await asyncio.wait(self._tasks, timeout=5)
        for attempt in range(5):
            try:
                await self._flush()
                await self._release(args=[self._p, self.process])
                break
            except (RedisError, OSError) as exc:
                log.error("final budget settle failed (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.2 * (attempt + 1))
        await self._aio.aclose()
        await self._hot.aclose()
        self._sync.close()
