"""Rate limits across real `tallygate serve` processes on one PostgreSQL and one Redis: three
single-process gateways and one with `--workers 2` (five processes). A burst spread over them is
admitted at most the limit (requests per minute, tokens per minute, requests in flight); every
process reports the same shared usage; and the rate limits ride in the budget's reservation
round trip (counted with MONITOR: one reservation script call per request, none more)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path

import aiohttp
import pytest
import redis

from tallygate.pipeline.redis_lua import RESERVE
from tallygate.pipeline.redis_ratelimit_lua import RESERVE_RATED
from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.postgres import PostgresInstance
from tests.redis import RedisServer, redis_server

HELLO = [{"role": "user", "content": "hello rate limits"}]


@pytest.fixture(scope="module")
def fleet(upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    """Three single-process gateways, then one with two worker processes behind one port."""
    root = tmp_path_factory.mktemp("rl-fleet")
    config = standard_config(upstream)
    for provider in config["providers"].values():
        provider["timeout_s"] = 15.0
    config["models"]["down"] = {"provider": "openai", "model": "fail-503"}
    config["policies"] = {"spill": {"strategy": "fallback", "targets": ["down", "local-llama"]},
                          "mini-first": {"strategy": "fallback", "targets": ["gpt-4o-mini", "local-llama"]}}
    gateways: list[Gateway] = []
    try:
        for i, extra in enumerate(((), (), (), ("--workers", "2"))):  # the first start migrates the database
            path = Path(root / str(i))
            path.mkdir()
            gateways.append(Gateway(path, config, db_url=pg.url, args=("--redis", rds.url, *extra)).start())
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def _limited_key(gw: Gateway, name: str, **limits: int) -> str:
    status, _, key = gw.post_json("/v1/manage/apikey", {"name": name})
    assert status == 201, key
    status, _, rec = gw.post_json("/v1/manage/ratelimit", {"name": name, "scope": {"key": key["id"]}, **limits})
    assert status == 201, rec
    return str(key["key"])


def burst(gateways: list[Gateway], key: str, n: int, model: str, max_tokens: int = 10) -> list[int]:
    """`n` requests at once, spread over the processes: the statuses."""
    async def run() -> list[int]:
        targets = cycle(gateways)
        async with aiohttp.ClientSession() as session:
            async def one(gw: Gateway) -> int:
                body = {"model": model, "messages": HELLO, "max_tokens": max_tokens}
                async with session.post(gw.base_url + "/chat/completions", json=body,
                                        headers={"Authorization": f"Bearer {key}"}) as resp:
                    await resp.read()
                    return resp.status

            return list(await asyncio.gather(*(one(next(targets)) for _ in range(n))))

    return asyncio.run(run())


def test_requests_per_minute_hold_across_processes(fleet: list[Gateway]) -> None:
    key = _limited_key(fleet[0], "mp-rpm", requests_per_minute=10)
    statuses = burst(fleet, key, 80, "priced")
    assert statuses.count(200) == 10 and statuses.count(429) == 70, statuses  # each process alone would admit 10
    # Every process, the two workers included, reads the same shared count (the dashboard's Keys page).
    key_id = fleet[0].get("/v1/key", key=key)[1]["id"]
    for gw in fleet:
        status, usage = gw.get(f"/v1/manage/ratelimit/usage?key={key_id}")
        assert status == 200, usage
        assert usage["counted_by"] == "redis" and usage["limits"][0]["usage"]["requests"] == 10, usage


def test_a_models_limit_counts_the_fallbacks_it_serves_across_processes(fleet: list[Gateway]) -> None:
    """`local-llama` limited to 6 a minute: requests to `policy/mini-first`, which its first target
    serves, are not counted; reached only by fallback (`policy/spill`'s first target fails), of 40
    requests at once over every process 6 are served, the rest get its 429."""
    status, _, rec = fleet[0].post_json("/v1/manage/ratelimit", {"name": "llama-quota", "requests_per_minute": 6,
                                                                 "scope": {"model": "local-llama"}})
    assert status == 201, rec
    status, _, key = fleet[1].post_json("/v1/manage/apikey", {"name": "mp-spill"})
    try:
        statuses = burst(fleet, key["key"], 20, "policy/mini-first")
        assert statuses.count(200) == 20, statuses
        statuses = burst(fleet, key["key"], 40, "policy/spill")
        assert statuses.count(200) == 6 and statuses.count(429) == 34, statuses
    finally:
        assert fleet[0].request("DELETE", "/v1/manage/ratelimit/" + rec["id"])[0] == 200


def test_a_policys_first_target_limit_admitted_in_the_reservation_is_exact_across_processes(
        fleet: list[Gateway], upstream: FakeUpstream) -> None:
    """`gpt-4o-mini`, `policy/mini-first`'s first target, limited to 6 a minute: its admission
    rides in each request's one reservation call; of 40 requests at once over every process,
    exactly 6 reach it and the other 34 are sent on to `local-llama`, every one served."""
    status, _, rec = fleet[0].post_json("/v1/manage/ratelimit", {"name": "mini-quota", "requests_per_minute": 6,
                                                                 "scope": {"model": "gpt-4o-mini"}})
    assert status == 201, rec
    status, _, key = fleet[2].post_json("/v1/manage/apikey", {"name": "mp-first"})
    upstream.clear()
    try:
        statuses = burst(fleet, key["key"], 40, "policy/mini-first")
        assert statuses == [200] * 40, statuses
        models = [r["body"]["model"] for r in upstream.requests if r["path"] == "/v1/chat/completions"]
        assert models.count("gpt-4o-mini") == 6 and models.count("llama-3.1-8b") == 34, models
    finally:
        assert fleet[0].request("DELETE", "/v1/manage/ratelimit/" + rec["id"])[0] == 200


def test_requests_per_second_hold_across_processes_on_redis_time(fleet: list[Gateway], rds: RedisServer) -> None:
    """However long the burst takes on this machine, no second of Redis's clock (the admission
    times Redis recorded in the minute's log) holds more than the per-second limit."""
    status, _, key = fleet[0].post_json("/v1/manage/apikey", {"name": "mp-rps"})
    assert status == 201, key
    status, _, rec = fleet[0].post_json("/v1/manage/ratelimit", {
        "name": "mp-rps", "scope": {"key": key["id"]}, "requests_per_second": 4, "requests_per_minute": 1000})
    assert status == 201, rec
    statuses = burst(fleet, key["key"], 60, "priced")
    admitted = [t for _, t in redis.Redis.from_url(rds.url).zrange(f"tg:rq:rl:{rec['id']}", 0, -1, withscores=True)]
    assert statuses.count(200) == len(admitted) >= 4 and statuses.count(429) == 60 - len(admitted), statuses
    for t in admitted:
        assert sum(1 for x in admitted if t <= x < t + 1000) <= 4, admitted


def test_requests_in_flight_hold_across_processes(fleet: list[Gateway]) -> None:
    key = _limited_key(fleet[1], "mp-concurrent", max_concurrent=2)
    statuses = burst(fleet, key, 30, "priced-slow")  # 0.4 s each: the burst arrives while two are in flight
    assert 1 <= statuses.count(200) <= 2 and statuses.count(200) + statuses.count(429) == 30, statuses
    # The slots came back: one at a time, each process admits again.
    for gw in fleet:
        assert burst([gw], key, 1, "priced") == [200]


def test_tokens_per_minute_hold_across_processes_and_settle_to_actual_usage(fleet: list[Gateway]) -> None:
    key = _limited_key(fleet[2], "mp-tpm", tokens_per_minute=2500)
    # Each request's worst case is about 1,000 tokens (its max_tokens and prompt): at most two fit.
    statuses = burst(fleet, key, 30, "priced-slow", max_tokens=1000)
    assert 1 <= statuses.count(200) <= 2 and statuses.count(200) + statuses.count(429) == 30, statuses
    # Settled to the few tokens they used, the minute has room for more of them.
    for gw in fleet:
        assert burst([gw], key, 1, "priced", max_tokens=1000) == [200]


def test_a_rate_limit_made_with_the_cli_binds_every_process_from_the_moment_it_returns(
        fleet: list[Gateway], rds: RedisServer) -> None:
    """`tallygate ratelimits create --redis` announces the change: a burst right after it, on all
    three processes, is admitted at most the new limit (without it, each would wait for its poll)."""
    status, _, key = fleet[0].post_json("/v1/manage/apikey", {"name": "mp-cli"})
    assert status == 201, key
    assert burst(fleet, key["key"], 3, "priced") == [200] * 3  # each process knows the key, unlimited
    done = subprocess.run([sys.executable, "-m", "tallygate", "ratelimits", "create", "--name", "mp-cli",
                           "--key", key["id"], "--rpm", "5", "--db", fleet[0].db_url],
                          env={**fleet[0].env, "TALLYGATE_REDIS_URL": rds.url}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    statuses = burst(fleet, key["key"], 30, "priced")
    assert statuses.count(200) <= 5 and statuses.count(200) + statuses.count(429) == 30, statuses


def test_rate_limits_add_no_round_trip_to_the_budget_reservation(fleet: list[Gateway], rds: RedisServer) -> None:
    """All four limits (per second and minute, tokens, in flight) and a budget: one script call a request."""
    gw = fleet[0]
    status, _, key = gw.post_json("/v1/manage/apikey", {"name": "mp-trips", "monthly_limit": "100"})
    assert status == 201
    status, _, rec = gw.post_json("/v1/manage/ratelimit", {"name": "mp-trips", "scope": {"key": key["id"]},
                                                           "requests_per_second": 100, "requests_per_minute": 1000,
                                                           "tokens_per_minute": 10**9, "max_concurrent": 100})
    assert status == 201
    burst([gw], key["key"], 1, "priced")  # scripts loaded, rules reloaded
    rated = hashlib.sha1(RESERVE_RATED.encode()).hexdigest()
    plain = hashlib.sha1(RESERVE.encode()).hexdigest()
    seen: list[str] = []
    client = redis.Redis.from_url(rds.url)
    stop = threading.Event()

    def watch() -> None:
        with client.monitor() as m:
            for command in m.listen():
                if stop.is_set() and "rl-monitor-off" in command["command"]:
                    return  # every command sent before it has been read
                seen.append(command["command"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    other = redis.Redis.from_url(rds.url)
    deadline = time.monotonic() + 5
    while not any("rl-monitor-on" in c for c in seen) and time.monotonic() < deadline:
        other.echo("rl-monitor-on")  # MONITOR sees it once it is listening
        time.sleep(0.05)
    other.close()
    try:
        for _ in range(5):
            assert burst([gw], key["key"], 1, "priced") == [200]
    finally:
        stop.set()
        client.echo("rl-monitor-off")  # the monitor reads up to this one, then stops
        watcher.join(10)
        client.close()
    reservations = [c for c in seen if c.upper().startswith(("EVALSHA " + rated).upper())]
    assert len(reservations) == 5, seen  # one reservation call per request: budget and rate limit together
    assert not [c for c in seen if plain in c], seen  # and no separate budget reservation


def test_gateways_started_while_redis_is_down_admit_their_share_or_nothing(
        upstream: FakeUpstream, pg: PostgresInstance, tmp_path: Path) -> None:
    """Two gateway processes on one host (one journal directory, as `--workers 2` share) with
    `budgets_unavailable: open` saw each other share Redis, then were restarted while Redis was
    down: the new processes take the count kept on the host and admit half of a 10-a-minute
    limit each (10 of 40 together, not 20). A gateway that never saw Redis admits nothing under
    a rate limit (503 `budget_unavailable`), and, though a budget exists, starts and serves a key
    the budget binds within the budgets' open allowance."""
    with redis_server() as own:
        args = ("--redis", own.url, "--budgets-unavailable", "open")
        env = {"TALLYGATE_HOLD_TTL_S": "1.5", "TALLYGATE_JOURNAL_DIR": str(tmp_path / "journal")}  # heartbeats 0.5 s
        pair: list[Gateway] = []
        fresh = None
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                pair.append(Gateway(tmp_path / name, standard_config(upstream), env=env, db_url=pg.url,
                                    args=args).start())
            key = _limited_key(pair[0], "restarted", requests_per_minute=10)
            status, _, bound = pair[0].post_json("/v1/manage/apikey", {"name": "budgeted"})
            status, _, budget = pair[0].post_json("/v1/manage/budget", {"name": "outage", "monthly_limit": "5",
                                                                        "scope": {"key": bound["id"]}})
            assert status == 201, budget
            time.sleep(2)  # a few heartbeats: each process has seen the other
            own.stop()
            for gw in pair:
                gw.stop()
                gw.start()  # while Redis is down
            statuses = burst(pair, key, 40, "priced")
            assert statuses.count(200) == 10 and statuses.count(429) == 30, statuses
            assert (tmp_path / "journal" / "redis-peers").read_text() == "2\n"

            (tmp_path / "fresh").mkdir()
            fresh = Gateway(tmp_path / "fresh", standard_config(upstream), db_url=pg.url, args=args).start()
            statuses = burst([fresh], key, 10, "priced")
            assert statuses == [503] * 10, statuses
            statuses = burst([fresh], bound["key"], 3, "priced")  # a budget, no rate limit: the allowance
            assert statuses == [200] * 3, statuses
        finally:
            for gw in (*pair, fresh):
                if gw is not None:
                    gw.stop()
