"""Several real `tallygate serve` processes on one PostgreSQL and one Redis, both started by the
tests on free ports: limits hold across processes, holds of a killed process expire, and no
answered request loses its ledger record when Redis or PostgreSQL restarts under load."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from itertools import cycle
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway
from tests.postgres import PostgresInstance
from tests.redis import RedisServer, redis_server

HELLO = [{"role": "user", "content": "hello budget"}]
PICO = Decimal(10) ** 12
HOLD_TTL_S = 3


def _gateway(path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
             *extra: str) -> Gateway:
    path.mkdir(parents=True, exist_ok=True)
    config = standard_config(upstream)
    for provider in config["providers"].values():  # 200 requests at once on 2 cores: no 504s
        provider["timeout_s"] = 15.0
    return Gateway(path, config, env={"TALLYGATE_HOLD_TTL_S": str(HOLD_TTL_S)},
                   db_url=pg.url, args=("--redis", rds.url, *extra))


@pytest.fixture(scope="module")
def trio(upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    root = tmp_path_factory.mktemp("trio")
    gateways: list[Gateway] = []
    try:
        for i in range(3):  # one after the other: the first start migrates the database
            gateways.append(_gateway(root / str(i), upstream, pg, rds).start())
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def _key(gw: Gateway, name: str, labels: dict | None = None, limit: str | None = None) -> dict:
    body: dict = {"name": name, "labels": labels or {}}
    if limit is not None:
        body["monthly_limit"] = limit
    status, _, rec = gw.post_json("/v1/manage/apikey", body)
    assert status == 201, rec
    return rec


def _budget(gw: Gateway, scope: dict, limit: str) -> dict:
    status, _, rec = gw.post_json("/v1/manage/budget", {"name": "burst", "scope": scope, "monthly_limit": limit})
    assert status == 201, rec
    return rec


class Outcome:
    """What the clients saw: (status, request id) of every answered request."""

    def __init__(self) -> None:
        self.answered: list[tuple[int, str]] = []
        self.abandoned = 0
        self.bodies: list[dict] = []

    def status(self, code: int) -> int:
        return sum(1 for s, _ in self.answered if s == code)


async def _one(session: aiohttp.ClientSession, gw: Gateway, key: str, i: int, tags: list[str],
               out: Outcome) -> None:
    stream, cancel = i % 4 == 1, i % 10 == 3
    body = {"model": "priced-slow" if cancel else "priced", "messages": HELLO, "max_tokens": 10,
            "request_tags": tags, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}

    async def call() -> None:
        async with session.post(gw.base_url + "/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {key}"}) as resp:
            raw = await resp.read()
            out.answered.append((resp.status, resp.headers["x-request-id"]))
            if resp.status != 200:
                out.bodies.append(json.loads(raw)["error"])

    try:
        await asyncio.wait_for(call(), 0.1 if cancel else 30)
    except (TimeoutError, aiohttp.ClientError):
        out.abandoned += 1


def burst(gateways: list[Gateway], keys: list[str], n: int, tags: list[str] | None = None,
          concurrency: int = 200, during=None, pace_s: float = 0.0) -> Outcome:  # type: ignore[no-untyped-def]
    """`n` requests spread over the processes and keys, `concurrency` at a time, one every
    `pace_s`; `during()` runs in a thread once a fifth of them have been sent."""
    out = Outcome()

    async def run() -> None:
        sem = asyncio.Semaphore(concurrency)
        targets = cycle([(g, k) for g in gateways for k in keys])
        side = None
        async with aiohttp.ClientSession() as session:
            async def limited(i: int, gw: Gateway, key: str) -> None:
                async with sem:
                    await _one(session, gw, key, i, tags or [], out)

            tasks = []
            for i in range(n):
                gw, key = next(targets)
                tasks.append(asyncio.create_task(limited(i, gw, key)))
                if during is not None and i == n // 5:
                    await asyncio.sleep(0.05)
                    side = asyncio.create_task(asyncio.to_thread(during))
                await asyncio.sleep(pace_s)
            await asyncio.gather(*tasks)
            if side is not None:
                await side

    asyncio.run(run())
    return out


def _ledger(pg: PostgresInstance, ids: list[str]) -> dict[str, dict]:
    engine = create_engine(pg.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, key_id, status, cost_pico, tags FROM requests "
                                     "WHERE id = ANY(:ids)"), {"ids": ids}).mappings()
            return {r["id"]: dict(r) for r in rows}
    finally:
        engine.dispose()


def _spend(pg: PostgresInstance, key_ids: list[str]) -> Decimal:
    engine = create_engine(pg.url)
    try:
        with engine.connect() as conn:
            pico = conn.execute(text("SELECT coalesce(sum(cost_pico), 0) FROM requests WHERE key_id = ANY(:k)"),
                                {"k": key_ids}).scalar()
            return Decimal(int(pico or 0)) / PICO
    finally:
        engine.dispose()


def _every_answer_recorded(pg: PostgresInstance, out: Outcome, timeout: float = 20) -> dict[str, dict]:
    ids = [rid for _, rid in out.answered]
    deadline = time.monotonic() + timeout
    while True:
        found = _ledger(pg, ids)
        if len(found) == len(ids) or time.monotonic() > deadline:
            assert sorted(set(ids) - set(found)) == [], "answered requests without a ledger record"
            return found
        time.sleep(0.2)


def _reserved_returns_to_zero(gw: Gateway, path: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, rec = gw.get(path)
        assert status == 200, rec
        if rec["monthly_reserved"] == "0" or time.monotonic() > deadline:
            assert rec["monthly_reserved"] == "0", rec
            return rec
        time.sleep(0.1)


def _drift(gw: Gateway, expect: Decimal = Decimal(0)) -> Decimal:
    """`tallygate_budget_drift_usd` from /metrics, once it reads `expect` (or after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        status, _, raw = gw.request("GET", "/metrics", key=None)
        assert status == 200
        found = re.search(rb"^tallygate_budget_drift_usd (\S+)$", raw, re.M)
        assert found, raw[-500:]
        drift = Decimal(found.group(1).decode())
        if drift == expect or time.monotonic() > deadline:
            return drift
        time.sleep(0.2)


def _worst_case(out: Outcome) -> Decimal:
    """The most one request may cost, as a 402 reported it."""
    for err in out.bodies:
        m = re.search(r"may cost up to \$([0-9.]+)", err["message"])
        if m:
            return Decimal(m.group(1))
    raise AssertionError(f"no 402 among {out.bodies[:3]}")


@pytest.mark.parametrize("kind", ["key", "label", "tag"])
def test_three_processes_share_one_limit(trio: list[Gateway], pg: PostgresInstance, kind: str) -> None:
    """200 concurrent requests (JSON, streams, some abandoned by the client) over 3 processes
    against room for about five at once (each may cost up to ~$0.08 on the prompt bound of a
    token a byte): spend stays at or under the limit, reservations return to 0. How many are
    served depends on how soon the first ones settle, so only "some" is asserted."""
    run = uuid.uuid4().hex[:8]
    limit, tags = "0.40", []
    if kind == "key":
        keys = [_key(trio[0], f"burst-{run}", limit=limit)]
        path = "/v1/manage/apikey/" + keys[0]["id"]
    elif kind == "label":
        keys = [_key(trio[0], f"burst-{run}-{i}", {"team": run}) for i in range(3)]
        path = "/v1/manage/budget/" + _budget(trio[0], {"label": {"team": run}}, limit)["id"]
    else:
        keys = [_key(trio[0], f"burst-{run}")]
        tags = [f"customer/{run}/eu", f"customer/{run}"]
        path = "/v1/manage/budget/" + _budget(trio[0], {"tag": f"customer/{run}"}, limit)["id"]
    time.sleep(1.2)  # every process has seen the new key and budget
    out = burst(trio, [k["key"] for k in keys], 200, tags)
    assert 1 <= out.status(200) and out.status(402) > 100, (out.status(200), out.status(402), out.bodies[:2])
    assert out.status(200) + out.status(402) == len(out.answered), out.bodies[:3]
    recorded = _every_answer_recorded(pg, out)
    assert all(recorded[rid]["status"] == s for s, rid in out.answered)
    for gw in trio:
        rec = _reserved_returns_to_zero(gw, path)
    assert _spend(pg, [k["id"] for k in keys]) <= Decimal(limit)
    assert Decimal(rec["monthly_spend"]) <= Decimal(limit)


def test_killed_process_holds_expire_and_the_others_keep_serving(
        trio: list[Gateway], pg: PostgresInstance, rds: RedisServer, upstream: FakeUpstream,
        tmp_path: Path) -> None:
    victim = _gateway(tmp_path / "victim", upstream, pg, rds).start()
    key = _key(trio[0], "victim-key", limit="1.20")
    path = "/v1/manage/apikey/" + key["id"]
    time.sleep(1.2)

    async def hang() -> int:
        """Slow requests at the victim, so it holds a lot when it dies."""
        async with aiohttp.ClientSession() as session:
            body = {"model": "priced-slow", "messages": HELLO, "max_tokens": 10}

            async def one() -> int:
                try:
                    async with session.post(victim.base_url + "/chat/completions", json=body,
                                            headers={"Authorization": f"Bearer {key['key']}"}) as r:
                        return r.status
                except aiohttp.ClientError:
                    return 0

            tasks = [asyncio.create_task(one()) for _ in range(10)]
            await asyncio.sleep(0.25)
            victim.proc.kill()  # type: ignore[union-attr]  # kill -9, mid-request
            return sum(1 for s in await asyncio.gather(*tasks) if s == 0)

    killed_mid_request = asyncio.run(hang())
    victim.proc.wait()  # type: ignore[union-attr]
    victim.proc = None
    assert killed_mid_request >= 1
    status, rec = trio[0].get(path)
    assert Decimal(rec["monthly_reserved"]) > 0  # the dead process's holds, until they expire
    died = time.monotonic()
    out = burst(trio, [key["key"]], 60)  # the others keep serving meanwhile
    assert out.status(200) >= 1
    _reserved_returns_to_zero(trio[1], path, timeout=HOLD_TTL_S + 10)
    assert time.monotonic() - died < 60
    _every_answer_recorded(pg, out)
    assert _spend(pg, [key["id"]]) <= Decimal("1.20")


def test_redis_restart_under_load_loses_no_ledger_record(trio: list[Gateway], pg: PostgresInstance,
                                                         rds: RedisServer) -> None:
    """Redis is killed (state lost, no persistence) and back after 0.5 s, mid-burst. Every answered
    request has its record; spend passes the limit by at most the worst cases of the requests in
    flight when the state was lost (their holds went with it)."""
    concurrency = 20
    key = _key(trio[0], "redis-restart", limit="0.40")
    time.sleep(1.2)
    out = burst(trio, [key["key"]], 300, concurrency=concurrency, during=lambda: rds.restart(down_s=0.5),
                pace_s=0.01)
    late = [s for s, _ in out.answered[-60:]]
    assert out.status(200) >= 10 and 503 not in late  # served again once Redis is back
    unavailable = [e for e in out.bodies if e.get("code") == "budget_unavailable"]
    assert all(e["type"] == "server_error" for e in unavailable)
    _every_answer_recorded(pg, out)
    bound = Decimal("0.40") + concurrency * _worst_case(out)
    assert _spend(pg, [key["id"]]) <= bound
    for gw in trio:
        _reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
    status, body = trio[0].get("/readyz", key=None)
    assert status == 200 and "redis" in body["passed"]


def test_postgres_restart_under_load_loses_no_ledger_record(trio: list[Gateway], pg: PostgresInstance) -> None:
    key = _key(trio[0], "pg-restart", limit="0.40")
    time.sleep(1.2)
    out = burst(trio, [key["key"]], 200, concurrency=20, during=pg.restart, pace_s=0.01)
    refused = [e for e in out.bodies if e.get("code") not in (None, "budget_exceeded")]
    assert out.status(200) >= 10 and out.status(503) == 0, refused  # keys and budgets are in memory
    _every_answer_recorded(pg, out, timeout=30)
    assert _spend(pg, [key["id"]]) <= Decimal("0.40")


def test_workers_share_one_port_and_one_budget(upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
                                               tmp_path: Path) -> None:
    gw = _gateway(tmp_path, upstream, pg, rds, "--workers", "2").start()
    try:
        key = _key(gw, "workers", limit="1.20")  # ~$0.08 worst case a request: room for ~15 at once
        time.sleep(1.2)
        out = burst([gw], [key["key"]], 100)
        assert out.status(200) >= 5 and out.status(402) > 0  # how many: settle timing decides
        _every_answer_recorded(pg, out)
        _reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
        assert _spend(pg, [key["id"]]) <= Decimal("1.20")
        status, body = gw.get("/readyz", key=None)
        assert status == 200, body
    finally:
        gw.stop()


def test_the_workers_of_a_killed_serve_stop_and_free_its_port(upstream: FakeUpstream, pg: PostgresInstance,
                                                              rds: RedisServer, tmp_path: Path) -> None:
    """kill -9 of `tallygate serve --workers 2`: its workers stop (gracefully: what they answered is
    written) instead of serving its port unsupervised, so a restart can bind the port again."""
    import socket

    import psutil

    gw = _gateway(tmp_path, upstream, pg, rds, "--workers", "2").start()
    children: list[psutil.Process] = []
    try:
        key = _key(gw, "orphans")
        out = burst([gw], [key["key"]], 20)
        assert gw.proc is not None
        children = psutil.Process(gw.proc.pid).children(recursive=True)
        assert sum("multiprocessing-fork" in " ".join(c.cmdline()) for c in children) == 2
        gw.proc.kill()
        gw.proc.wait()
        gw.proc = None
        gw._log.close()
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [" ".join(c.cmdline()) for c in alive]
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", gw.port))  # free: a restart can serve it
        _every_answer_recorded(pg, out)
    finally:
        for child in children:
            if child.is_running():
                child.kill()
        gw.stop()


def test_several_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, None, args=("--workers", "2"))
    gw.port = 1
    out = gw.cli("serve", "--workers", "2")
    assert out.returncode != 0
    assert "--workers 2 needs --redis" in out.stderr and "2 times their limit" in out.stderr
    assert ADMIN_KEY not in out.stderr


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_unreachable_redis_refuses_or_serves_limited_requests_and_always_serves_the_rest(
        upstream: FakeUpstream, tmp_path: Path, mode: str) -> None:
    from tests.fakes.upstream import closed_port_url

    gone = closed_port_url().replace("http://", "redis://")
    gw = Gateway(tmp_path, standard_config(upstream), args=("--redis", gone, "--budgets-unavailable", mode)).start()
    try:
        limited, free = _key(gw, "limited", limit="10"), _key(gw, "free")
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


def test_a_target_one_process_saw_failing_is_left_out_by_all(upstream: FakeUpstream, rds: RedisServer,
                                                             tmp_path: Path) -> None:
    config = standard_config(upstream)
    config["policies"] = {"shared": {"strategy": "fallback", "targets": ["fail-500", "gpt-4o-mini"],
                                     "cooldown": {"failures": 1, "seconds": 30}}}
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    pair = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            pair.append(Gateway(tmp_path / name, config, db_url=db_url, args=("--redis", rds.url)).start())
        body = {"model": "policy/shared", "messages": HELLO, "max_tokens": 5}
        status, _, out = pair[0].post_json("/v1/chat/completions", body)
        assert status == 200  # fail-500 failed once (its circuit opens), gpt-4o-mini answered
        time.sleep(1.5)  # both processes sync every 0.5 s
        upstream.clear()
        for _ in range(5):
            status, _, out = pair[1].post_json("/v1/chat/completions", body)
            assert status == 200
        models = [r["body"]["model"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
        assert models == ["gpt-4o-mini"] * 5  # process b never tried the target a saw failing
    finally:
        for gw in pair:
            gw.stop()


def test_a_thousand_concurrent_limited_requests_on_one_process_get_no_false_503(
        upstream: FakeUpstream, rds: RedisServer, tmp_path: Path) -> None:
    config = standard_config(upstream)
    config["providers"]["openai"]["timeout_s"] = 30.0
    gw = Gateway(tmp_path, config, env={"TALLYGATE_MAX_CONNECTIONS_PER_ADDRESS": "0"},
                 args=("--redis", rds.url)).start()
    try:
        key = _key(gw, "thousand", limit="5")

        async def fire() -> list[int]:
            body = {"model": "priced", "messages": HELLO, "max_tokens": 10}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                async def one() -> int:
                    async with session.post(gw.base_url + "/chat/completions", json=body,
                                            headers={"Authorization": f"Bearer {key['key']}"}) as resp:
                        await resp.read()
                        return resp.status
                return await asyncio.gather(*(one() for _ in range(1000)))

        statuses = asyncio.run(fire())
        assert statuses.count(503) == 0, gw.log()[-2000:]
        assert statuses.count(200) >= 50 and statuses.count(200) + statuses.count(402) == 1000
        me = _reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
        assert Decimal(me["monthly_spend"]) <= Decimal("5")
    finally:
        gw.stop()


def test_budgets_open_serves_at_most_its_allowance_while_redis_is_away(upstream: FakeUpstream,
                                                                       tmp_path: Path) -> None:
    from tests.fakes.upstream import closed_port_url

    gone = closed_port_url().replace("http://", "redis://")
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_BUDGETS_OPEN_ALLOWANCE": "0.10"},
                 args=("--redis", gone, "--budgets-unavailable", "open")).start()
    try:
        key = _key(gw, "open", limit="0.01")  # Redis could not tell: the limit is already passed
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
        assert sum(Decimal(r["cost"]) for r in page["data"]) <= Decimal("0.10")
    finally:
        gw.stop()


def test_views_of_spend_after_redis_lost_its_state_are_rebuilt_not_zero(upstream: FakeUpstream,
                                                                         tmp_path: Path) -> None:
    with redis_server() as own:
        gw = Gateway(tmp_path, standard_config(upstream), args=("--redis", own.url)).start()
        try:
            key = _key(gw, "viewed", limit="5")
            budget = _budget(gw, {"key": key["id"]}, "5")
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
            assert _drift(gw) == 0  # the reconciliation: every counter equals the ledger
            import redis

            direct = redis.Redis.from_url(own.url)
            [counter] = list(direct.scan_iter(match=f"tg:*:s:{key['id']}"))
            direct.incrby(counter, 10**10)  # a counter off by a cent is seen
            assert _drift(gw, Decimal("0.01")) == Decimal("0.01")
        finally:
            gw.stop()


def test_a_budget_binds_every_process_from_the_moment_it_is_created(trio: list[Gateway],
                                                                    pg: PostgresInstance) -> None:
    run = uuid.uuid4().hex[:8]
    key = _key(trio[0], f"fresh-{run}")  # no limit: the other processes had nothing to ask Redis
    tags = [f"launch/{run}"]
    assert burst(trio, [key["key"]], 3, tags).status(200) == 3  # each process knows the key now
    budget = _budget(trio[1], {"tag": f"launch/{run}"}, "0.40")  # then hammered at once, everywhere
    out = burst(trio, [key["key"]], 150, tags)
    assert out.status(402) > 0 and out.status(200) + out.status(402) == len(out.answered), out.bodies[:3]
    _every_answer_recorded(pg, out)
    for gw in trio:
        _reserved_returns_to_zero(gw, "/v1/manage/budget/" + budget["id"])
    deadline = time.monotonic() + 10  # requests written late (abandoned, or from before the budget)
    while (counter := Decimal(trio[0].get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"])) \
            != (ledger := _spend(pg, [key["id"]])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counter == ledger <= Decimal("0.40") + Decimal("0.05")  # the first 3 before it


def _cli(gw: Gateway, rds_url: str, *args: str) -> subprocess.CompletedProcess:
    """`tallygate …` as an operator runs it next to the gateways: Redis from TALLYGATE_REDIS_URL."""
    return subprocess.run([sys.executable, "-m", "tallygate", *args, "--db", gw.db_url],
                          env={**gw.env, "TALLYGATE_REDIS_URL": rds_url}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("change", ["budget", "key-limit", "labels"])
def test_a_cli_change_binds_every_process_from_the_moment_it_returns(trio: list[Gateway], pg: PostgresInstance,
                                                                     rds: RedisServer, change: str) -> None:
    """A budget created, a key's limit set or its labels changed with `tallygate` next to three
    running processes, then 150 requests at once on all of them: spend stays within the limit
    (without the announcement, each process served unbound until its next poll: 3-4 times it)."""
    run = uuid.uuid4().hex[:8]
    key = _key(trio[0], f"cli-{run}")  # no limit: nothing binds it yet
    tags, limit = [f"cli/{run}"], Decimal("0.10")  # room for ~14 requests, about 3 held at once
    if change == "labels":
        _budget(trio[0], {"label": {"team": run}}, str(limit))
    first = burst(trio, [key["key"]], 3, tags)  # each process knows the key (and the budget)
    assert first.status(200) == 3
    _every_answer_recorded(pg, first)
    before = _spend(pg, [key["id"]])
    if change == "budget":
        args: tuple[str, ...] = ("budgets", "create", "--name", f"cli-{run}", "--tag", f"cli/{run}",
                                 "--limit", str(limit))
    elif change == "key-limit":
        args = ("keys", "update", key["id"], "--limit", str(limit))
    else:
        args = ("keys", "update", key["id"], "--label", f"team={run}")
    done = _cli(trio[0], rds.url, *args)
    assert done.returncode == 0, done.stderr
    out = burst(trio, [key["key"]], 150, tags)  # at once, on every process
    assert out.status(402) > 0 and out.status(200) + out.status(402) == len(out.answered), out.bodies[:3]
    _every_answer_recorded(pg, out)
    counted = _spend(pg, [key["id"]]) - (before if change == "labels" else 0)  # (labels: spend from now on)
    assert counted <= limit


def test_a_cli_change_with_redis_unreachable_changes_nothing(trio: list[Gateway]) -> None:
    from tests.fakes.upstream import closed_port_url

    gone = closed_port_url().replace("http://", "redis://")
    key = _key(trio[0], "cli-unreachable")
    for args in (("budgets", "create", "--name", "unreached", "--key", key["id"], "--limit", "1"),
                 ("keys", "update", key["id"], "--limit", "1"), ("keys", "create", "--name", "unreached")):
        done = _cli(trio[0], gone, *args)
        assert done.returncode != 0 and "Redis (--redis / TALLYGATE_REDIS_URL) is unreachable" in done.stderr, done
        assert "nothing was changed" in done.stderr and gone not in done.stderr
    assert trio[0].get("/v1/manage/apikey/" + key["id"])[1]["monthly_limit"] is None
    names = [b["name"] for b in trio[0].get("/v1/manage/budget")[1]["data"]]
    assert "unreached" not in names
    keys = trio[0].get("/v1/manage/apikey?limit=500")[1]["data"]
    assert [k for k in keys if k["name"] == "unreached"] == []


def test_the_version_check_adds_no_round_trip_to_a_reservation(trio: list[Gateway], rds: RedisServer) -> None:
    """Redis MONITOR while one process serves 20 limited requests one after the other: 20
    reservation scripts, and no other command on the request's path (no read of the version)."""
    import hashlib
    import socket
    import threading

    from tallygate.pipeline.redis_lua import RESERVE

    key = _key(trio[0], "monitored", limit="5")
    body = {"model": "priced", "messages": HELLO, "max_tokens": 10}
    assert trio[0].post_json("/v1/chat/completions", body, key["key"])[0] == 200  # the version is loaded
    time.sleep(0.5)
    seen: list[bytes] = []
    with socket.create_connection(("127.0.0.1", rds.port), timeout=5) as mon:
        mon.sendall(b"MONITOR\r\n")
        assert mon.recv(5) == b"+OK\r\n"

        def read() -> None:
            buf = b""
            while True:
                try:
                    chunk = mon.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\r\n")
                seen.extend(lines)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for _ in range(20):
            assert trio[0].post_json("/v1/chat/completions", body, key["key"])[0] == 200
        time.sleep(0.5)  # the last settle
        mon.shutdown(socket.SHUT_RDWR)
        reader.join(5)
    sha = hashlib.sha1(RESERVE.encode()).hexdigest().encode()
    top = [line for line in seen if b" lua]" not in line and line.startswith(b"+")]  # sent by clients
    reserves = [line for line in top if b'"EVALSHA" "' + sha + b'"' in line]
    assert len(reserves) == 20, top[:5]
    assert [line for line in top if b'"tg:ver"' in line] == []  # the version is read inside the script only

    def client(line: bytes) -> bytes:
        return line.split(b"[", 1)[1].split(b"]", 1)[0]

    on_the_path = {client(line) for line in reserves}  # (views and the reconciliation use another client)
    sent = {line.split(b'] "', 1)[1].split(b'"', 1)[0].upper() for line in top if client(line) in on_the_path}
    assert sent - {b"HELLO", b"CLIENT"} == {b"EVALSHA"}, sent  # (a pooled connection's set-up aside) settles
    # and heartbeats are scripts too: no GET, no EXISTS


def test_a_process_killed_before_its_settles_reach_redis_has_them_counted_at_its_replay(
        upstream: FakeUpstream, pg: PostgresInstance, tmp_path: Path) -> None:
    """Answered, journaled, then kill -9 before the settles left: the restart's replay writes
    the records and counts their costs in the shared counters, once (no drift, no double count)."""
    import redis

    with redis_server() as own:
        gw = _gateway(tmp_path, upstream, pg, own)
        gw.env["TALLYGATE_LEDGER_FLUSH_MS"] = "10000"  # the answered records wait in the journal
        gw.start()
        direct = redis.Redis.from_url(own.url)
        try:
            key = _key(gw, "unsettled", limit="100")
            budget = _budget(gw, {"key": key["id"]}, "100")
            settled = burst([gw], [key["key"]], 3)  # settled as usual (before the kill, not yet written)
            assert settled.status(200) == 3

            async def answered_while_settles_wait() -> list[str]:
                async with aiohttp.ClientSession() as session:
                    body = {"model": "priced-slow", "messages": HELLO, "max_tokens": 10}

                    async def one() -> str:
                        async with session.post(gw.base_url + "/chat/completions", json=body,
                                                headers={"Authorization": f"Bearer {key['key']}"}) as r:
                            assert r.status == 200, await r.text()
                            return str((await r.json())["id"])

                    tasks = [asyncio.create_task(one()) for _ in range(6)]
                    await asyncio.sleep(0.15)  # reserved; the upstream answers in 0.4 s
                    direct.client_pause(5000, all=False)  # Redis takes no write (no settle) for now
                    return await asyncio.gather(*tasks)

            ids = asyncio.run(answered_while_settles_wait())
            time.sleep(0.2)
            gw.proc.kill()  # type: ignore[union-attr]  # kill -9: the settles die unsent
            gw.proc.wait()  # type: ignore[union-attr]
            gw.proc = None
            direct.client_unpause()
            gw.start()  # replays the journal
            assert set(ids) <= set(_ledger(pg, ids))
            spent = _spend(pg, [key["id"]])
            assert spent > 0
            assert Decimal(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) == spent
            assert Decimal(gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"]) == spent
            assert _drift(gw) == 0
        finally:
            gw.stop()
            direct.close()



def _answered_while_redis_stalls(gw: Gateway, own: RedisServer, key: str, stall_s: float) -> None:
    """Six slow requests; Redis stops (SIGSTOP) once they are reserved, until `stall_s` after
    they are answered: their settles time out (1 s) and are sent again meanwhile."""
    import signal

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            body = {"model": "priced-slow", "messages": HELLO, "max_tokens": 10}

            async def one() -> None:
                async with session.post(gw.base_url + "/chat/completions", json=body,
                                        headers={"Authorization": f"Bearer {key}"}) as r:
                    assert r.status == 200, await r.text()

            tasks = [asyncio.create_task(one()) for _ in range(6)]
            await asyncio.sleep(0.15)  # reserved; the upstream answers in 0.4 s
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
        gw = _gateway(tmp_path, upstream, pg, own).start()
        try:
            key = _key(gw, "stalled", limit="100")
            if case == "sent-again":
                assert burst([gw], [key["key"]], 1).status(200) == 1  # Redis knows the settle script
                time.sleep(3.5)  # past the second build
            _answered_while_redis_stalls(gw, own, key["key"], 2.5 if case == "sent-again" else 3.5)
            _reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
            time.sleep(0.6)  # the ledger's batched writer
            spent = _spend(pg, [key["id"]])
            assert spent > 0
            assert Decimal(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) == spent
            assert _drift(gw) == 0
        finally:
            gw.stop()


def test_a_replay_after_redis_lost_its_state_counts_the_replayed_costs(upstream: FakeUpstream,
                                                                      pg: PostgresInstance, tmp_path: Path) -> None:
    """A process killed with answered records in its journal, then Redis restarted without its
    state (and the notes of those requests), and the counters built again from a ledger that
    lacked them: the replay at the process's restart builds them once more, now with them."""
    with redis_server() as own:
        a = _gateway(tmp_path / "a", upstream, pg, own).start()
        b = _gateway(tmp_path / "b", upstream, pg, own)
        b.env["TALLYGATE_LEDGER_FLUSH_MS"] = "10000"  # its answered records wait in its journal
        b.start()
        try:
            key = _key(a, "replayed", limit="100")
            time.sleep(1.2)  # b knows the key
            assert burst([b], [key["key"]], 3).status(200) == 3
            b.proc.kill()  # type: ignore[union-attr]
            b.proc.wait()  # type: ignore[union-attr]
            b.proc = None
            own.restart()  # Redis loses its state
            assert burst([a], [key["key"]], 1).status(200) == 1  # a builds the counters from the ledger
            time.sleep(3.5)  # and builds them again, still without b's records
            b.start()  # replays its journal into the ledger
            spent = _spend(pg, [key["id"]])
            assert _drift(a) == 0
            assert Decimal(a.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) == spent
        finally:
            a.stop()
            b.stop()
