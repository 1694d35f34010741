"""The Redis budget engine against a real redis-server: atomic all-or-nothing holds, exact
64-bit money, expiring holds of dead processes, rebuild from the ledger, open/closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from tallygate.errors import BudgetExceeded, BudgetUnavailable
from tallygate.pipeline.budget import Scope
from tallygate.pipeline.redis_budget import RedisBudget
from tests.fakes.loopback import closed_port_url
from tests.redis import RedisServer, redis_server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


@pytest.fixture()
def url(server: RedisServer) -> str:
    redis.Redis.from_url(server.url).flushall()
    return server.url


def _engine(url: str, ledger: dict[str, int] | None = None, **kw: object) -> RedisBudget:
    return RedisBudget(url, lambda w: {f"{w.slots[0]}:s:{k}": v for k, v in (ledger or {}).items()},
                       **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _running(url: str, ledger: dict[str, int] | None = None, **kw: object) -> AsyncIterator[RedisBudget]:
    """A started engine (`_engine`), stopped at the end."""
    engine = _engine(url, ledger, **kw)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def _drained(engine: RedisBudget, tries: int = 100) -> None:
    """Until the engine's settle queue is empty, `tries` times 10 ms at most."""
    for _ in range(tries):
        if not engine._queue:
            break
        await asyncio.sleep(0.01)


async def _settled(engine: RedisBudget) -> None:
    await _drained(engine)
    await asyncio.sleep(0.02)


async def _unwritten_settle_over_a_pass_from_the_ledger(url: str, ledger: dict[str, int], written: int) -> None:
    """With the ledger at `written` for "k": another process's settle of 100 reaches the counter
    before its record is written, the pass from the ledger after a state loss runs, then that
    record is written (the ledger at `written` + 100)."""
    direct = redis.Redis.from_url(url)
    [counter] = direct.scan_iter(match="tg:*:s:k")
    direct.incrby(counter, 100)  # another process's settle, its record not yet written
    ledger["k"] = written
    await asyncio.sleep(3.5)  # the pass from the ledger after the state loss
    ledger["k"] = written + 100  # the other's written


def test_a_reservation_holds_every_scope_or_none(url: str) -> None:
    async def run() -> None:
        async with _running(url) as engine:
            key, team, free = Scope("key", "k", "key", 100), Scope("budget", "budget:b", "budget 'b'", 90), \
                Scope("key", "k2", "free", None)
            hold = await engine.reserve([key, team, free], 80)
            assert (engine.reserved("k"), engine.reserved("budget:b"), engine.reserved("k2")) == (80, 80, 0)
            with pytest.raises(BudgetExceeded, match="budget 'b' would pass its monthly limit of \\$0.00000000009"):
                await engine.reserve([key, team], 15)  # the key has room, the budget does not
            assert (engine.reserved("k"), engine.reserved("budget:b")) == (80, 80)
            engine.settle(hold, 30)
            await _settled(engine)
            assert engine.reserved("k") == engine.reserved("budget:b") == 0
            assert (engine.spend("k"), engine.spend("budget:b"), engine.spend("k2")) == (30, 30, 30)
            await engine.reserve([team], 60)  # 30 spent + 60 held = exactly the limit
            with pytest.raises(BudgetExceeded):
                await engine.reserve([team], 1)

    asyncio.run(run())


def test_limits_near_nine_million_dollars_compare_exactly(url: str) -> None:
    """Lua numbers are doubles: a limit of $9M in picodollars (9e18) must still hold to the picodollar."""
    limit = 9_000_000 * 10**12 + 1

    async def run() -> None:
        async with _running(url, {"big": limit - 10}) as engine:
            scope = Scope("key", "big", "big", limit)
            assert engine.spend("big") == limit - 10
            hold = await engine.reserve([scope], 11 - 1)  # exactly the limit
            with pytest.raises(BudgetExceeded):
                await engine.reserve([scope], 1)
            engine.settle(hold, 0)
            await _settled(engine)
            assert engine.reserved("big") == 0 and engine.spend("big") == limit - 10

    asyncio.run(run())


def test_holds_of_a_process_that_stops_renewing_expire(url: str) -> None:
    async def run() -> None:
        dead, alive = _engine(url, ttl_s=1.0), _engine(url, ttl_s=1.0)
        await dead.start()
        await alive.start()
        scope = Scope("key", "k", "key", 100)
        await dead.reserve([scope], 90)
        for task in dead._tasks:  # the process "dies": no renewals, no settles
            task.cancel()
        with pytest.raises(BudgetExceeded):
            await alive.reserve([scope], 20)
        await asyncio.sleep(1.6)  # past the TTL; the next script reaps it
        hold = await alive.reserve([scope], 20)
        assert alive.reserved("k") == 20
        alive.settle(hold, 5)
        await _settled(alive)
        assert alive.reserved("k") == 0 and alive.spend("k") == 5
        await alive.stop()
        await dead._aio.aclose()

    asyncio.run(run())


def test_long_requests_keep_their_holds_while_the_process_renews_them(url: str) -> None:
    async def run() -> None:
        async with _running(url, ttl_s=1.0) as a, _running(url, ttl_s=1.0) as b:
            scope = Scope("key", "k", "key", 100)
            await a.reserve([scope], 90)
            await asyncio.sleep(2.5)  # longer than the TTL: `a` renews every ttl/3
            await b._heartbeat(args=[b._p, b.process, b._ttl_ms])
            assert b.reserved("k") == 90
        assert redis.Redis.from_url(url).get("tg:rt:k") is None  # a clean stop lets go of its holds

    asyncio.run(run())


def test_counters_are_rebuilt_from_the_ledger_when_redis_loses_them(url: str) -> None:
    ledger = {"k": 40}

    async def run() -> None:
        async with _running(url, ledger) as engine:
            scope = Scope("key", "k", "key", 100)
            assert engine.spend("k") == 40
            hold = await engine.reserve([scope], 10)
            engine.settle(hold, 10)
            await _settled(engine)
            assert engine.spend("k") == 50
            ledger["k"] = 50  # the ledger wrote the record
            redis.Redis.from_url(url).flushall()  # Redis restarted without persistence
            with pytest.raises(BudgetExceeded):
                await engine.reserve([scope], 51)  # rebuilt from the ledger first: 50 + 51 > 100
            assert engine.spend("k") == 50  # the larger of the counter and the ledger: never twice
            await engine.reserve([scope], 50)

    asyncio.run(run())


def test_unreachable_redis_refuses_limited_requests_when_closed_and_serves_its_allowance_when_open() -> None:
    url = closed_port_url().replace("http://", "redis://")

    async def run() -> None:
        closed, opened = _engine(url, timeout_s=0.2), _engine(url, fail_open=True, open_allowance=25, timeout_s=0.2)
        await closed.start()
        await opened.start()
        limited, free = Scope("key", "k", "key", 100), Scope("key", "f", "free", None)
        with pytest.raises(BudgetUnavailable) as exc:
            await closed.reserve([limited], 10)
        assert exc.value.status == 503 and exc.value.code == "budget_unavailable"
        assert (await closed.reserve([free], 10)).held == ()  # no limit applies: served
        hold = await opened.reserve([limited], 10)
        assert hold.held == () and opened.unavailable == 1
        await opened.reserve([limited], 10)
        with pytest.raises(BudgetUnavailable):  # 10 + 10 + 10 > the allowance of 25
            await opened.reserve([limited], 10)
        assert (await opened.reserve([free], 10)).held == ()  # no limit applies: still served
        assert await opened.ping() is not None
        for engine in (closed, opened):
            for task in engine._tasks:
                task.cancel()
            await engine._aio.aclose()

    asyncio.run(run())


def test_thousands_of_concurrent_reservations_share_one_connection_and_a_cancelled_one_is_released(
        url: str) -> None:
    async def run() -> None:
        async with _running(url) as engine:
            scope = Scope("key", "k", "key", 10**15)
            holds = await asyncio.gather(*(engine.reserve([scope], 7) for _ in range(3000)))
            assert engine.reserved("k") == 3000 * 7
            pool = engine._aio.connection_pool
            assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
            for hold in holds:
                engine.settle(hold, 0)
            gone = asyncio.ensure_future(engine.reserve([scope], 5))
            await asyncio.sleep(0)  # queued (or sent): its client goes away before the answer
            gone.cancel()
            for _ in range(500):  # the release rides the next batch: up to 5 s on a loaded machine
                await _settled(engine)
                if engine.reserved("k") == 0:
                    break
            assert engine.reserved("k") == 0

    asyncio.run(run())


def test_ledger_spend_adopted_while_redis_is_down_is_sent_once_it_answers() -> None:
    """A budget new to a process that starts while Redis is down (`BudgetRegistry` adopts its
    spend at start-up): adopting does not fail the start-up, and the counter reaches Redis with
    the next heartbeat once it answers."""
    async def run() -> None:
        with redis_server() as own:
            async with _running(own.url, ttl_s=0.3, timeout_s=0.2) as engine:
                w = engine.windows.at("month", engine.now_ms())
                own.stop()
                await asyncio.to_thread(engine.adopt, {f"{w.slots[0]}:s:budget:new": 70}, [w])
                own.start()
                client = redis.Redis.from_url(own.url)
                for _ in range(50):
                    if client.get(f"tg:{w.slots[0]}:s:budget:new") is not None:
                        break
                    await asyncio.sleep(0.1)
                assert int(client.get(f"tg:{w.slots[0]}:s:budget:new") or 0) == 70

    asyncio.run(run())


def test_a_settle_held_up_across_a_redis_restart_counts_when_reserved_after_it() -> None:
    """Redis killed -9 (no persistence) while a settle waits: once it is back, that settle only
    releases its hold (its cost is in the ledger the counters are rebuilt from); the settle of a
    request reserved after the restart, sent in the same batch, counts: no build holds its cost,
    and a later pass from the ledger cannot lift a counter that other processes' settles, not yet
    written, keep above the ledger (it stayed 7 below for good)."""
    ledger = {"k": 0}
    with redis_server() as own:
        async def run() -> None:
            async with _running(own.url, ledger) as engine:
                scope = Scope("key", "k", "key", 10**6)
                before = await engine.reserve([scope], 10, request_id="r-before")
                restart = asyncio.create_task(asyncio.to_thread(own.restart, 2.0))
                await asyncio.sleep(0.1)
                engine.settle(before, 5)  # fails: the flusher backs off (its next try ~3 s after the kill)
                ledger["k"] = 5  # its record was written meanwhile
                await restart
                after = await engine.reserve([scope], 10, request_id="r-after")  # counters built: 5
                engine.settle(after, 7)  # queued behind the held-up one
                await _drained(engine, 500)
                await _unwritten_settle_over_a_pass_from_the_ledger(own.url, ledger, 12)  # 12: r-after written
                assert engine.spend("k") == 112 and engine.drift() == 0

        asyncio.run(run())


def test_a_request_reserved_before_a_redis_restart_and_settled_after_it_counts() -> None:
    """A request reserved before Redis was killed -9 ends once Redis is back and this process has
    used it again: its record cannot be in the counters rebuilt from the ledger, so its settle
    counts its cost. It used to wait behind the settles held up by the outage (the flusher backed
    off up to 2 s) and only release its hold with them, leaving the counter below the ledger
    whenever other processes' unwritten settles kept it above the ledger at the later pass."""
    ledger = {"k": 0}
    with redis_server() as own:
        async def run() -> None:
            async with _running(own.url, ledger) as engine:
                scope = Scope("key", "k", "key", 10**6)
                held_up = await engine.reserve([scope], 10, request_id="r-held-up")
                long = await engine.reserve([scope], 10, request_id="r-long")  # still running
                restart = asyncio.create_task(asyncio.to_thread(own.restart, 2.0))
                await asyncio.sleep(0.1)
                engine.settle(held_up, 5)  # fails while Redis is away
                ledger["k"] = 5  # its record was written meanwhile
                await restart
                await engine.reserve([scope], 10, request_id="r-next")  # Redis answers again: counters built (5)
                await asyncio.sleep(0.3)
                engine.settle(long, 7)  # its record comes later than the build
                await _drained(engine, 500)
                await _unwritten_settle_over_a_pass_from_the_ledger(own.url, ledger, 12)  # 12: r-long written
                assert engine.spend("k") == 112 and engine.drift() == 0

        asyncio.run(run())
