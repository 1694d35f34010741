"""Budget settles across Redis outages and kills, with real `tallygate serve` processes on one
PostgreSQL and one Redis: an unreachable Redis refuses or serves within the allowance, views are
rebuilt after Redis loses its state, and settles delayed by a stall, a kill -9 or a replay count
each request's cost once."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.multiprocess.budgets import (
    HELLO,
    burst,
    counter_drift,
    ledger_rows,
    ledger_spend,
    make_budget,
    make_gateway,
    make_key,
    reserved_returns_to_zero,
    reserved_slow_requests,
)
from tests.postgres import PostgresInstance
from tests.redis import RedisServer, redis_server


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_unreachable_redis_refuses_or_serves_limited_requests_and_always_serves_the_rest(
        upstream: FakeUpstream, tmp_path: Path, mode: str) -> None:
    from tests.fakes.loopback import closed_port_url

    gone = closed_port_url().replace("http://", "redis://")  # an allowance of $0.15: one hold (~$0.10)
    gw = Gateway(tmp_path, standard_config(upstream), args=("--redis", gone, "--budgets-unavailable", mode)).start()
    try:
        limited, free = make_key(gw, "limited", limit="10"), make_key(gw, "free")
        status, body = gw.get("/readyz", key=None)
        assert status == 503 and body["failed"] == "redis" and "Redis unreachable" in body["reason"]
        assert gone not in json.dumps(body)
        out = burst([gw], [limited["key"]], 3)  # (the 4th of a burst is abandoned by its client)
        if mode == "closed":
            assert out.status(503) == 3 and all(e["code"] == "budget_unavailable" for e in out.bodies)
        else:
            assert out.status(200) == 3
            assert "WITHOUT enforcing them" in gw.log()
        assert burst([gw], [free["key"]], 3).status(200) == 3  # no limit applies: served either way
        status, me = gw.get("/v1/key", key=limited["key"])
        assert status == 200 and me["monthly_spend"] is None  # unknown while Redis is away
        for status, rid in out.answered:
            assert gw.log_record(rid)["status"] == status
    finally:
        gw.stop()


def test_budgets_open_serves_at_most_its_allowance_while_redis_is_away(upstream: FakeUpstream,
                                                                       tmp_path: Path) -> None:
    from tests.fakes.loopback import closed_port_url

    gone = closed_port_url().replace("http://", "redis://")  # an allowance of $0.15: one hold (~$0.10)
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_BUDGETS_OPEN_ALLOWANCE": "0.15"},
                 args=("--redis", gone, "--budgets-unavailable", "open")).start()
    try:
        key = make_key(gw, "open", limit="0.01")  # Redis could not tell: the limit is already passed
        statuses = []
        for _ in range(8):
            status, _, answer = gw.post_json("/v1/chat/completions", {"model": "priced", "messages": HELLO,
                                                                      "max_tokens": 10}, key["key"])
            statuses.append(status)
            if status == 503:
                assert answer["error"]["code"] == "budget_unavailable", answer
        assert statuses[0] == 200 and statuses[-1] == 503 and set(statuses) == {200, 503}
        time.sleep(1.5)  # the ledger's batched writer
        _, page = gw.get(f"/v1/logs?key={key['id']}&limit=50")
        assert sum(Decimal(r["cost"]) for r in page["data"]) <= Decimal("0.15")
    finally:
        gw.stop()


def test_views_of_spend_after_redis_lost_its_state_are_rebuilt_not_zero(upstream: FakeUpstream,
                                                                         tmp_path: Path) -> None:
    with redis_server() as own:
        gw = Gateway(tmp_path, standard_config(upstream), args=("--redis", own.url)).start()
        try:
            key = make_key(gw, "viewed", limit="5")
            budget = make_budget(gw, {"key": key["id"]}, "5")
            status, _, _ = gw.post_json("/v1/chat/completions", {"model": "priced", "messages": HELLO,
                                                                 "max_tokens": 10}, key["key"])
            assert status == 200
            deadline = time.monotonic() + 10
            while (rec := gw.get("/v1/manage/apikey/" + key["id"])[1])["monthly_spend"] == "0" \
                    or rec["monthly_reserved"] != "0":  # settled
                assert time.monotonic() < deadline, rec
                time.sleep(0.1)
            spent = rec["monthly_spend"]
            time.sleep(0.5)  # the ledger's batched writer
            own.restart()  # without persistence: every counter is gone
            assert gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"] == spent
            assert gw.get("/v1/key", key=key["key"])[1]["monthly_spend"] == spent
            assert gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"] == spent
            assert counter_drift(gw) == 0  # the reconciliation: every counter equals the ledger
            import redis

            direct = redis.Redis.from_url(own.url)
            [counter] = list(direct.scan_iter(match=f"tg:*:s:{key['id']}"))
            direct.incrby(counter, 10**10)  # a counter off by a cent is seen
            assert counter_drift(gw, Decimal("0.01")) == Decimal("0.01")
        finally:
            gw.stop()


def test_a_process_killed_before_its_settles_reach_redis_has_them_counted_at_its_replay(
        upstream: FakeUpstream, pg: PostgresInstance, tmp_path: Path) -> None:
    """Answered, journaled, then kill -9 before the settles left: the restart's replay writes
    the records and counts their costs in the shared counters, once (no drift, no double count)."""
    import redis

    with redis_server() as own:
        gw = make_gateway(tmp_path, upstream, pg, own)
        gw.env["TALLYGATE_LEDGER_FLUSH_MS"] = "10000"  # the answered records wait in the journal
        gw.start()
        direct = redis.Redis.from_url(own.url)
        try:
            key = make_key(gw, "unsettled", limit="100")
            budget = make_budget(gw, {"key": key["id"]}, "100")
            settled = burst([gw], [key["key"]], 3)  # settled as usual (before the kill, not yet written)
            assert settled.status(200) == 3

            async def answered_while_settles_wait() -> list[str]:
                async with aiohttp.ClientSession() as session:
                    tasks = await reserved_slow_requests(session, gw, key["key"])
                    direct.client_pause(5000, all=False)  # Redis takes no write (no settle) for now
                    return await asyncio.gather(*tasks)

            ids = asyncio.run(answered_while_settles_wait())
            time.sleep(0.2)
            gw.proc.kill()  # type: ignore[union-attr]  # kill -9: the settles die unsent
            gw.proc.wait()  # type: ignore[union-attr]
            gw.proc = None
            direct.client_unpause()
            gw.start()  # replays the journal
            assert set(ids) <= set(ledger_rows(pg, ids))
            spent = ledger_spend(pg, [key["id"]])
            assert spent > 0
            assert Decimal(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) == spent
            assert Decimal(gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"]) == spent
            assert counter_drift(gw) == 0
        finally:
            gw.stop()
            direct.close()



def _answered_while_redis_stalls(gw: Gateway, own: RedisServer, key: str, stall_s: float) -> None:
    """Six slow requests; Redis stops (SIGSTOP) once they are reserved, until `stall_s` after
    they are answered: their settles time out (1 s) and are sent again meanwhile."""
    import signal

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            tasks = await reserved_slow_requests(session, gw, key)
            own.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                await asyncio.gather(*tasks)
                await asyncio.sleep(stall_s)
            finally:
                own.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    asyncio.run(run())


@pytest.mark.parametrize("case", ["sent-again", "built-meanwhile"])
def test_settles_delayed_by_a_redis_stall_count_once(upstream: FakeUpstream, pg: PostgresInstance,
                                                     tmp_path: Path, case: str) -> None:
    """Settles held up by a Redis stall count each request's cost once, whether they were sent
    twice (a copy timed out but ran) or the window's counters were built from the ledger, which
    already had the records, before the settles got through (the start-up's second build, 3 s
    after the first, falls in the stall)."""
    with redis_server() as own:
        gw = make_gateway(tmp_path, upstream, pg, own).start()
        try:
            key = make_key(gw, "stalled", limit="100")
            if case == "sent-again":
                assert burst([gw], [key["key"]], 1).status(200) == 1  # Redis knows the settle script
                time.sleep(3.5)  # past the second build
            _answered_while_redis_stalls(gw, own, key["key"], 2.5 if case == "sent-again" else 3.5)
            reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
            time.sleep(0.6)  # the ledger's batched writer
            spent = ledger_spend(pg, [key["id"]])
            assert spent > 0
            assert Decimal(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) == spent
            assert counter_drift(gw) == 0
        finally:
            gw.stop()


def test_a_replay_after_redis_lost_its_state_counts_the_replayed_costs(upstream: FakeUpstream,
                                                                      pg: PostgresInstance, tmp_path: Path) -> None:
    """A process killed with answered records in its journal, then Redis restarted without its
    state (and the notes of those requests), and the counters built again from a ledger that
    lacked them: the replay at the process's restart builds them once more, now with them."""
    with redis_server() as own:
        a = make_gateway(tmp_path / "a", upstream, pg, own).start()
        b = make_gateway(tmp_path / "b", upstream, pg, own)
        b.env["TALLYGATE_LEDGER_FLUSH_MS"] = "10000"  # its answered records wait in its journal
        b.start()
        try:
            key = make_key(a, "replayed", limit="100")
            time.sleep(1.2)  # b knows the key
            assert burst([b], [key["key"]], 3).status(200) == 3
            b.proc.kill()  # type: ignore[union-attr]
            b.proc.wait()  # type: ignore[union-attr]
            b.proc = None
            own.restart()  # Redis loses its state
            assert burst([a], [key["key"]], 1).status(200) == 1  # a builds the counters from the ledger
            time.sleep(3.5)  # and builds them again, still without b's records
            b.start()  # replays its journal into the ledger
            spent = ledger_spend(pg, [key["id"]])
            assert counter_drift(a) == 0
            assert Decimal(a.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) == spent
        finally:
            a.stop()
            b.stop()
