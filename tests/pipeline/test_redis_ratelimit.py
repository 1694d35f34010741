"""Rate limits in the Redis budget's reservation against a real redis-server: a rate refusal
holds no budget and a budget refusal counts against no rate limit, a dead process's slots in
flight are reaped, and with Redis away (`budgets_unavailable: open`) each process still limits
itself: never unbounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tallygate.errors import BudgetExceeded, BudgetUnavailable, RateLimited
from tallygate.pipeline.budget import Scope
from tallygate.pipeline.ratelimit import RateHold
from tallygate.pipeline.ratelimit_rules import Rule
from tallygate.pipeline.redis_ratelimit import RatedRedisBudget
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


def _engine(url: str, **kw: object) -> RatedRedisBudget:
    return RatedRedisBudget(url, lambda w: {}, **kw)  # type: ignore[arg-type]


async def _drained(engine: RatedRedisBudget) -> None:
    for _ in range(100):
        if not engine._rate_queue and not engine._queue:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def test_rate_and_budget_are_all_or_nothing_in_one_call(url: str) -> None:
    async def run() -> None:
        engine = _engine(url)
        await engine.start()
        try:
            budget = Scope("budget", "budget:b", "budget 'b'", 100)
            rpm = Rule("rl:r", "rate limit 'r'", 2, 1000, 5)
            _, first = await engine.reserve_rated([budget], 60, [rpm], 400)
            assert dict(first.headers)[b"x-ratelimit-remaining-requests"] == b"1"
            assert dict(first.headers)[b"x-ratelimit-remaining-tokens"] == b"600"
            with pytest.raises(BudgetExceeded):  # the budget refuses: no rate limit counts it
                await engine.reserve_rated([budget], 60, [rpm], 400)
            hold, second = await engine.reserve_rated([budget], 40, [rpm], 400)
            assert dict(second.headers)[b"x-ratelimit-remaining-requests"] == b"0"
            with pytest.raises(RateLimited) as refused:  # the rate limit refuses: no budget held
                await engine.reserve_rated([], 0, [rpm], 1)
            assert 59 <= refused.value.retry_after <= 60  # type: ignore[operator]
            assert engine.reserved("budget:b") == 100
            engine.settle(hold, 0)
            engine.settle_rate(second, 10)  # 400 reserved, 10 used
            engine.settle_rate(first, None)  # never served: out of the windows altogether
            await _drained(engine)
            _, third = await engine.reserve_rated([], 0, [rpm], 400)
            assert dict(third.headers)[b"x-ratelimit-remaining-tokens"] == b"590"
            assert dict(third.headers)[b"x-ratelimit-remaining-requests"] == b"0"
        finally:
            await engine.stop()

    asyncio.run(run())


def test_slots_in_flight_of_a_dead_process_are_reaped(url: str) -> None:
    async def run() -> None:
        dead, alive = _engine(url, ttl_s=0.5), _engine(url, ttl_s=0.5)
        await dead.start()
        await alive.start()
        try:
            one = Rule("rl:c", "rate limit 'c'", None, None, 1)
            await dead.reserve_rated([], 0, [one], 0)
            with pytest.raises(RateLimited):
                await alive.reserve_rated([], 0, [one], 0)
            for task in dead._tasks:  # it stops renewing, as a killed process would
                task.cancel()
            await asyncio.sleep(1.0)
            await alive.reserve_rated([], 0, [one], 0)
        finally:
            await alive.stop()

    asyncio.run(run())


def test_with_redis_away_and_budgets_open_each_process_still_limits_its_rate(tmp_path: Path) -> None:
    """A process started while Redis is away admits its share of the count kept on its host (the
    whole limit when it was alone); with none kept, nothing under a rate limit, holding no budget."""
    async def run() -> None:
        gone = closed_port_url().replace("http://", "redis://")
        (tmp_path / "redis-peers").write_text("1\n")
        rule = Rule("rl:o", "rate limit 'o'", 2, None, None)
        budget = Scope("budget", "budget:o", "budget 'o'", 10**15)
        engine = _engine(gone, fail_open=True, open_allowance=10**12, timeout_s=0.2,
                         peers_file=tmp_path / "redis-peers")
        await engine.start()
        try:
            for _ in range(2):
                await engine.reserve_rated([budget], 10, [rule], 0)
            with pytest.raises(RateLimited):
                await engine.reserve_rated([budget], 10, [rule], 0)
        finally:
            await engine.stop()
        engine = _engine(gone, fail_open=True, open_allowance=10, timeout_s=0.2, peers_file=tmp_path / "none")
        await engine.start()
        try:
            with pytest.raises(BudgetUnavailable, match="has not seen how many processes share"):
                await engine.reserve_rated([budget], 10, [rule], 0)
            await engine.reserve_rated([budget], 10, [], 0)  # the budget's allowance was not taken
        finally:
            await engine.stop()

    asyncio.run(run())


def test_requests_per_second_hold_across_two_processes_on_redis_time(url: str) -> None:
    """Two engines (two processes' worth) share the one-second log: in no 1,000 ms of Redis's
    clock (the admission times Redis recorded) are more than the limit admitted."""
    async def run() -> list[float]:
        a, b = _engine(url), _engine(url)
        await a.start()
        await b.start()
        try:
            rule = Rule("rl:s", "rate limit 's'", 1000, None, None, requests_per_second=3)
            deadline = asyncio.get_running_loop().time() + 2.5
            turn = admitted = 0
            while asyncio.get_running_loop().time() < deadline:
                try:
                    _, hold = await (a, b)[turn % 2].reserve_rated([], 0, [rule], 0)
                    admitted += 1
                    assert dict(hold.headers)[b"x-ratelimit-limit-requests"] == b"3"  # the tightest
                except RateLimited as refused:
                    assert 0 <= refused.retry_after <= 1.0  # type: ignore[operator]
                    assert refused.message.startswith("rate limit 's' allows 3 requests per second")
                turn += 1
                await asyncio.sleep(0.01)
            usage, counted_by = await a.rate_usage(["rl:s"])
            assert counted_by == "redis" and usage["rl:s"].requests == admitted
            assert 1 <= usage["rl:s"].requests_last_second <= 3
        finally:
            await a.stop()
            await b.stop()
        # the minute's log keeps every admission with the Redis time (ms) it was admitted at
        return [score for _, score in redis.Redis.from_url(url).zrange("tg:rq:rl:s", 0, -1, withscores=True)]

    admitted = asyncio.run(run())
    for t in admitted:
        assert sum(1 for x in admitted if t <= x < t + 1000) <= 3, admitted
    assert len(admitted) >= 6  # and it admits the limit each second


def test_with_redis_away_processes_share_the_limit_they_last_saw_it_shared_by() -> None:
    """Two processes that last saw each other in Redis each admit half of a limit while Redis is
    down: the two together stay within it (without sharing, each would admit all of it)."""
    async def run() -> None:
        with redis_server() as server:
            a, b = _engine(server.url, ttl_s=1.0, timeout_s=0.2), _engine(server.url, ttl_s=1.0, timeout_s=0.2)
            await a.start()
            await b.start()
            try:
                await asyncio.sleep(0.8)  # a heartbeat each (every ttl / 3): both see two processes
                assert a.peers == b.peers == 2
                server.stop()
                per_minute = Rule("rl:away", "rate limit 'away'", 4, None, None)
                in_flight = Rule("rl:away2", "rate limit 'away2'", None, None, 3)
                for rule, each in ((per_minute, 2), (in_flight, 1)):  # 4 a minute: 2 each; 3 at once: 1 each
                    admitted = {"a": 0, "b": 0}
                    for name, engine in (("a", a), ("b", b)) * 4:
                        try:
                            await engine.reserve_rated([], 0, [rule], 0)
                            admitted[name] += 1
                        except RateLimited as refused:
                            assert f"allows {each} " in refused.message, refused.message
                    assert admitted == {"a": each, "b": each}
            finally:
                await a.stop()
                await b.stop()

    asyncio.run(run())


def test_a_first_targets_limit_is_decided_in_the_reservation_and_never_refuses_the_request(url: str) -> None:
    """`reserve_routed`: once the request is admitted (its own limit and budget), the first
    target's model limit is decided in the same call; at its limit, the target's 429 comes back
    for the executor, the request stays admitted and the target counts nothing. A request
    refused by its own limit counts against the target's limit neither."""
    async def run() -> None:
        engine = _engine(url)
        await engine.start()
        try:
            budget = Scope("budget", "budget:t", "budget 't'", 100)
            own = Rule("rl:own", "rate limit 'own'", 3, None, None)
            target = Rule("rl:tgt", "rate limit 'tgt'", 1, None, 5, "model")
            hold, rate, first = await engine.reserve_routed([budget], 10, [own], 0, first=[target])
            assert isinstance(first, RateHold) and hold.held == ("budget:t",)
            assert dict(rate.headers)[b"x-ratelimit-remaining-requests"] == b"2"  # the request's own limits
            hold2, rate2, refused = await engine.reserve_routed([budget], 10, [own], 0, first=[target])
            assert isinstance(refused, RateLimited) and hold2.held == ("budget:t",)  # admitted all the same
            assert engine.reserved("budget:t") == 20
            client = redis.Redis.from_url(url)
            assert client.zcard("tg:rq:rl:tgt") == 1 and client.zcard("tg:rq:rl:own") == 2
            assert client.get("tg:rt:rlc:rl:tgt") == b"1"  # one slot in flight: the admitted one's
            await engine.reserve_routed([budget], 10, [own], 0, first=[target])
            with pytest.raises(RateLimited):  # its own limit refuses: the target is not asked
                await engine.reserve_routed([budget], 10, [own], 0, first=[target])
            assert client.zcard("tg:rq:rl:tgt") == 1
            engine.settle_rate(first, None)  # never tried: out of the target's window altogether
            await _drained(engine)
            assert client.zcard("tg:rq:rl:tgt") == 0 and client.get("tg:rt:rlc:rl:tgt") is None
        finally:
            await engine.stop()

    asyncio.run(run())


def test_settles_held_up_with_rate_settles_across_a_redis_restart_count_once() -> None:
    """A budget settle and a rate-limit settle wait while Redis is killed -9 (no persistence):
    once it is back and the counters are rebuilt from the ledger (which has the request), the
    budget settle only releases its hold, as it does without rate limits (it counted the cost a
    second time: the counter ended at twice the ledger)."""
    ledger = {"k": 0}
    with redis_server() as own:
        async def run() -> None:
            engine = RatedRedisBudget(own.url, lambda w: {f"{w.slots[0]}:s:{k}": v for k, v in ledger.items()})
            await engine.start()
            try:
                key, rpm = Scope("key", "k", "key", 10**6), Rule("rl:r", "rate limit 'r'", 100, None, None)
                hold, rate = await engine.reserve_rated([key], 10, [rpm], 10, request_id="r1")
                restart = asyncio.create_task(asyncio.to_thread(own.restart, 1.0))
                await asyncio.sleep(0.1)
                engine.settle(hold, 5)  # both fail while Redis is away, and wait
                engine.settle_rate(rate, 10)
                ledger["k"] = 5  # the record was written meanwhile
                await restart
                assert engine.spend("k") == 5  # a view rebuilds the counters from the ledger
                for _ in range(500):
                    if not engine._queue and not engine._rate_queue:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                assert engine.spend("k") == 5 and engine.drift() == 0
            finally:
                await engine.stop()

        asyncio.run(run())
