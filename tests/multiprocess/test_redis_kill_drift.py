"""Two `tallygate serve` processes on one PostgreSQL and one Redis: a process killed -9 after
its answered requests reached the database but before their budget settles reached Redis (Redis
stalled, or its flusher backing off after a Redis restart) leaves no shared counter below the
ledger. No journal replay sees those records; a live process counts them once the dead one is
reaped."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.multiprocess.budgets import (
    HOLD_TTL_S,
    burst,
    counter_drift,
    ledger_rows,
    ledger_spend,
    make_budget,
    make_gateway,
    make_key,
    reserved_slow_requests,
)
from tests.postgres import PostgresInstance
from tests.redis import RedisServer, redis_server


@pytest.fixture()
def rds() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _answered_while_settles_wait(gw: Gateway, key: str, direct: redis.Redis) -> list[str]:
    """Six slow requests; once they are reserved Redis takes no write for 8 s (no settle)."""

    async def run() -> list[str]:
        async with aiohttp.ClientSession() as session:
            tasks = await reserved_slow_requests(session, gw, key)
            direct.client_pause(8000, all=False)
            return await asyncio.gather(*tasks)

    return asyncio.run(run())


def test_a_process_killed_after_its_records_were_written_but_before_its_settles_leaves_no_drift(
        upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer, tmp_path: Path) -> None:
    gws = [make_gateway(tmp_path / str(i), upstream, pg, rds).start() for i in range(2)]
    direct = redis.Redis.from_url(rds.url)
    try:
        key = make_key(gws[0], f"written-{uuid.uuid4().hex[:8]}", limit="100")
        budget = make_budget(gws[0], {"key": key["id"]}, "100")
        assert burst(gws, [key["key"]], 10).status(200) >= 8  # (one abandoned by its client)
        time.sleep(0.5)  # written
        rds.restart(down_s=0.3)  # kill -9: counters rebuilt from the ledger at the next reservation
        direct = redis.Redis.from_url(rds.url)
        victim = gws[1]
        ids = _answered_while_settles_wait(victim, key["key"], direct)
        deadline = time.monotonic() + 5
        while len(ledger_rows(pg, ids)) < len(ids):  # in the database, not only in the journal
            assert time.monotonic() < deadline
            time.sleep(0.1)
        victim.proc.kill()  # type: ignore[union-attr]  # kill -9: the settles die unsent
        victim.proc.wait()  # type: ignore[union-attr]
        victim.proc = None
        direct.client_unpause()
        victim.start()  # its replay has nothing: the records were written
        spent = ledger_spend(pg, [key["id"]])
        deadline = time.monotonic() + 3 * HOLD_TTL_S + 5  # the dead process is reaped, its notes looked at
        while (seen := Decimal(gws[0].get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"])) != spent:
            assert time.monotonic() < deadline, (seen, spent)  # without the sweep: 0.036 below, for good
            time.sleep(0.2)
        for gw in gws:
            assert Decimal(gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"]) == spent
            assert counter_drift(gw) == 0
    finally:
        for gw in gws:
            gw.stop()
        direct.close()


def test_a_slow_ledger_writer_across_a_redis_restart_leaves_no_counter_below_the_ledger(
        upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer, tmp_path: Path) -> None:
    """Requests answered while Redis is down (killed -9, back 1 s later without its state): their
    settles only release holds once it is back, since the counters are rebuilt from the ledger.
    With a ledger writer slower than the rebuild's second pass (a loaded database; here a 6 s
    flush interval), the pass must wait for this process's records, else their costs are in
    neither."""
    gw = make_gateway(tmp_path, upstream, pg, rds)
    gw.env["TALLYGATE_LEDGER_FLUSH_MS"] = "6000"
    gw.start()
    try:
        key = make_key(gw, f"slow-writer-{uuid.uuid4().hex[:8]}", limit="100")

        async def answered_across_the_kill() -> list[str]:
            async with aiohttp.ClientSession() as session:
                tasks = await reserved_slow_requests(session, gw, key["key"])  # answered 0.25 s into the outage
                restart = asyncio.create_task(asyncio.to_thread(rds.restart, 1.0))
                ids = await asyncio.gather(*tasks)
                await restart
                return ids

        ids = asyncio.run(answered_across_the_kill())
        deadline = time.monotonic() + 10
        while len(ledger_rows(pg, ids)) < len(ids):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        spent = ledger_spend(pg, [key["id"]])
        deadline = time.monotonic() + 10
        while (seen := Decimal(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"])) != spent:
            assert time.monotonic() < deadline, (seen, spent)
            time.sleep(0.2)
        assert counter_drift(gw) == 0
    finally:
        gw.stop()
