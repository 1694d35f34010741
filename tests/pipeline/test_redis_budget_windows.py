"""Budget windows in the Redis engine against a real redis-server, its clock injected: a rolling
window's 24 slots summed exactly in the reservation script (amounts past 2^53 included), spend
leaving it a slot at a time, a day and a month binding one reservation, counters rebuilt per
slot from the ledger after Redis lost them, and day and rolling counters expiring."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest
import redis

from tallygate.core.windows import Window
from tallygate.errors import BudgetExceeded
from tallygate.pipeline.budget import Scope
from tallygate.pipeline.redis_budget import RedisBudget
from tests.redis import RedisServer, redis_server

BIG = 15 * 10**17  # picodollars: $1.5M, far past what a double holds exactly (limits stay under $9M)


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


class Clocked(RedisBudget):
    """The engine on a clock the test moves; its ledger is a dict of counters the test fills."""

    def __init__(self, url: str, now: str) -> None:
        self.ledger: dict[str, int] = {}
        self.asked: list[str] = []
        super().__init__(url, self._spend_of, tz="Europe/Berlin", periods=lambda: ("month", "day", "hours:1"))
        self.now = ms(now)

    def _spend_of(self, w: Window) -> dict[str, int]:
        self.asked.append(w.period)
        return {c: v for c, v in self.ledger.items() if c.partition(":s:")[0] in w.slots}

    def now_ms(self) -> int:
        return self.now


def test_a_rolling_window_forgets_slot_by_slot_and_a_day_binds_beside_the_month(server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()

    async def run() -> None:
        engine = Clocked(server.url, "2026-12-08T10:00:00+01:00")
        await engine.start()
        try:
            rolling = Scope("budget", "budget:r", "budget 'r'", 2 * BIG + 100, True, "hours:1")
            day = Scope("budget", "budget:d", "budget 'd'", 3 * BIG, True, "day")
            month = Scope("budget", "budget:m", "budget 'm'", 5 * BIG, True, "month")
            engine.settle(await engine.reserve([rolling, day, month], BIG, engine.now), BIG)
            engine.now = ms("2026-12-08T10:30:00+01:00")
            engine.settle(await engine.reserve([rolling, day, month], BIG, engine.now), BIG)
            await asyncio.sleep(0.1)
            with pytest.raises(BudgetExceeded, match="rolling 1-hour limit"):
                await engine.reserve([rolling], 101, engine.now)
            assert engine.spend("budget:r", "hours:1") == 2 * BIG
            engine.now = ms("2026-12-08T11:00:00+01:00")  # the slot of 10:00 has left the hour
            assert engine.spend("budget:r", "hours:1") == BIG
            with pytest.raises(BudgetExceeded, match="daily limit"):  # room in the hour, not in the day
                await engine.reserve([rolling, day, month], BIG + 1, engine.now)
            engine.settle(await engine.reserve([rolling, day, month], BIG, engine.now), BIG)
            await asyncio.sleep(0.1)
            engine.now = ms("2026-12-09T00:00:01+01:00")  # local midnight: a new day, the same month
            with pytest.raises(BudgetExceeded, match="monthly limit"):
                await engine.reserve([day, month], 2 * BIG + 1, engine.now)
            assert (engine.spend("budget:d", "day"), engine.spend("budget:m")) == (0, 3 * BIG)
            r = redis.Redis.from_url(server.url)
            day_keys = [k for k in r.scan_iter("tg:d*:s:*")] + [k for k in r.scan_iter("tg:r*:s:*")]
            assert day_keys and all(0 < r.pttl(k) <= 35 * 86_400_000 for k in day_keys)
            assert all(r.pttl(k) == -1 for k in r.scan_iter("tg:1*:s:*"))  # a month's stay, as before
        finally:
            await engine.stop()

    asyncio.run(run())


def test_counters_lost_with_redis_are_rebuilt_per_slot_from_the_ledger(server: RedisServer) -> None:
    redis.Redis.from_url(server.url).flushall()

    async def run() -> None:
        engine = Clocked(server.url, "2026-12-08T10:40:00+01:00")
        await engine.start()
        try:
            rolling = Scope("key", "k", "key", 100, True, "hours:1")
            hour = engine.windows.at("hours:1", engine.now)
            engine.asked.clear()  # (the month's counters were built at start-up)
            # what the ledger holds: 30 in the running slot, 50 in the oldest, 99 in a slot already gone
            engine.ledger = {f"{hour.slots[0]}:s:k": 30, f"{hour.slots[-1]}:s:k": 50,
                             f"r150000:{int(hour.slots[-1].split(':')[1]) - 150000}:s:k": 99}
            with pytest.raises(BudgetExceeded, match="spent \\$0.00000000008"):
                await engine.reserve([rolling], 21, engine.now)
            assert engine.asked == ["hours:1"]
            assert engine.drift() == 0  # every slot's counter equals the ledger's (the gone slot not read)
            redis.Redis.from_url(server.url).incrby(f"tg:{hour.slots[3]}:s:k", 7)
            assert engine.drift() == 7
            engine.now += 150_000  # the oldest slot leaves: its 50 with it
            engine.ledger = {}
            with pytest.raises(BudgetExceeded, match="spent \\$0.000000000037"):  # 30 + the 7 drifted in
                await engine.reserve([rolling], 64, engine.now)  # (the next slot's build read the ledger again)
            assert engine.asked[-1] == "hours:1"
            assert (await engine.reserve([rolling], 63, engine.now)).amount == 63  # exactly to the limit
        finally:
            await engine.stop()

    asyncio.run(run())
