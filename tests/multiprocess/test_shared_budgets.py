"""Several real `tallygate serve` processes on one PostgreSQL and one Redis, both started by the
tests on free ports: limits hold across processes, holds of a killed process expire, and no
answered request loses its ledger record when Redis or PostgreSQL restarts under load."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway
from tests.multiprocess.budgets import (
    HELLO,
    HOLD_TTL_S,
    burst,
    every_answer_recorded,
    ledger_spend,
    make_budget,
    make_gateway,
    make_key,
    reserved_returns_to_zero,
    worst_case,
)
from tests.postgres import PostgresInstance
from tests.redis import RedisServer


@pytest.fixture(scope="module")
def trio(upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    root = tmp_path_factory.mktemp("trio")
    gateways: list[Gateway] = []
    try:
        for i in range(3):  # one after the other: the first start migrates the database
            gateways.append(make_gateway(root / str(i), upstream, pg, rds).start())
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


@pytest.mark.parametrize("kind", ["key", "label", "tag"])
def test_three_processes_share_one_limit(trio: list[Gateway], pg: PostgresInstance, kind: str) -> None:
    """200 concurrent requests (JSON, streams, some abandoned by the client) over 3 processes
    against room for about five at once (each may cost up to ~$0.08 on the prompt bound of a
    token a byte): spend stays at or under the limit, reservations return to 0. How many are
    served depends on how soon the first ones settle, so only "some" is asserted."""
    run = uuid.uuid4().hex[:8]
    limit, tags = "0.40", []
    if kind == "key":
        keys = [make_key(trio[0], f"burst-{run}", limit=limit)]
        path = "/v1/manage/apikey/" + keys[0]["id"]
    elif kind == "label":
        keys = [make_key(trio[0], f"burst-{run}-{i}", {"team": run}) for i in range(3)]
        path = "/v1/manage/budget/" + make_budget(trio[0], {"label": {"team": run}}, limit)["id"]
    else:
        keys = [make_key(trio[0], f"burst-{run}")]
        tags = [f"customer/{run}/eu", f"customer/{run}"]
        path = "/v1/manage/budget/" + make_budget(trio[0], {"tag": f"customer/{run}"}, limit)["id"]
    time.sleep(1.2)  # every process has seen the new key and budget
    out = burst(trio, [k["key"] for k in keys], 200, tags)
    assert 1 <= out.status(200) and out.status(402) > 100, (out.status(200), out.status(402), out.bodies[:2])
    assert out.status(200) + out.status(402) == len(out.answered), out.bodies[:3]
    recorded = every_answer_recorded(pg, out)
    assert all(recorded[rid]["status"] == s for s, rid in out.answered)
    for gw in trio:
        rec = reserved_returns_to_zero(gw, path)
    assert ledger_spend(pg, [k["id"] for k in keys]) <= Decimal(limit)
    assert Decimal(rec["monthly_spend"]) <= Decimal(limit)


def test_killed_process_holds_expire_and_the_others_keep_serving(
        trio: list[Gateway], pg: PostgresInstance, rds: RedisServer, upstream: FakeUpstream,
        tmp_path: Path) -> None:
    victim = make_gateway(tmp_path / "victim", upstream, pg, rds).start()
    key = make_key(trio[0], "victim-key", limit="1.20")
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
    reserved_returns_to_zero(trio[1], path, timeout=HOLD_TTL_S + 10)
    assert time.monotonic() - died < 60
    every_answer_recorded(pg, out)
    assert ledger_spend(pg, [key["id"]]) <= Decimal("1.20")


def test_redis_restart_under_load_loses_no_ledger_record(trio: list[Gateway], pg: PostgresInstance,
                                                         rds: RedisServer) -> None:
    """Redis is killed (state lost, no persistence) and back after 0.5 s, mid-burst. Every answered
    request has its record; spend passes the limit by at most the worst cases of the requests in
    flight when the state was lost (their holds went with it)."""
    concurrency = 20
    key = make_key(trio[0], "redis-restart", limit="0.40")
    time.sleep(1.2)
    out = burst(trio, [key["key"]], 300, concurrency=concurrency, during=lambda: rds.restart(down_s=0.5),
                pace_s=0.01)
    late = [s for s, _ in out.answered[-60:]]
    assert out.status(200) >= 10 and 503 not in late  # served again once Redis is back
    unavailable = [e for e in out.bodies if e.get("code") == "budget_unavailable"]
    assert all(e["type"] == "server_error" for e in unavailable)
    every_answer_recorded(pg, out)
    bound = Decimal("0.40") + concurrency * worst_case(out)
    assert ledger_spend(pg, [key["id"]]) <= bound
    for gw in trio:
        reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
    status, body = trio[0].get("/readyz", key=None)
    assert status == 200 and "redis" in body["passed"]


def test_postgres_restart_under_load_loses_no_ledger_record(trio: list[Gateway], pg: PostgresInstance) -> None:
    key = make_key(trio[0], "pg-restart", limit="0.40")
    time.sleep(1.2)
    out = burst(trio, [key["key"]], 200, concurrency=20, during=pg.restart, pace_s=0.01)
    refused = [e for e in out.bodies if e.get("code") not in (None, "budget_exceeded")]
    assert out.status(200) >= 10 and out.status(503) == 0, refused  # keys and budgets are in memory
    every_answer_recorded(pg, out, timeout=30)
    assert ledger_spend(pg, [key["id"]]) <= Decimal("0.40")


def test_workers_share_one_port_and_one_budget(upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
                                               tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, upstream, pg, rds, "--workers", "2").start()
    try:
        key = make_key(gw, "workers", limit="1.20")  # ~$0.08 worst case a request: room for ~15 at once
        time.sleep(1.2)
        out = burst([gw], [key["key"]], 100)
        assert out.status(200) >= 5 and out.status(402) > 0  # how many: settle timing decides
        every_answer_recorded(pg, out)
        reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
        assert ledger_spend(pg, [key["id"]]) <= Decimal("1.20")
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

    gw = make_gateway(tmp_path, upstream, pg, rds, "--workers", "2").start()
    children: list[psutil.Process] = []
    try:
        key = make_key(gw, "orphans")
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
        every_answer_recorded(pg, out)
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
        key = make_key(gw, "thousand", limit="5")

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
        # each holds ~$0.10 (its JSON body and 10 output tokens at $0.001 a token): ~49 fit in $5
        assert statuses.count(200) >= 45 and statuses.count(200) + statuses.count(402) == 1000
        me = reserved_returns_to_zero(gw, "/v1/manage/apikey/" + key["id"])
        assert Decimal(me["monthly_spend"]) <= Decimal("5")
    finally:
        gw.stop()


def test_a_budget_binds_every_process_from_the_moment_it_is_created(trio: list[Gateway],
                                                                    pg: PostgresInstance) -> None:
    run = uuid.uuid4().hex[:8]
    key = make_key(trio[0], f"fresh-{run}")  # no limit: the other processes had nothing to ask Redis
    tags = [f"launch/{run}"]
    assert burst(trio, [key["key"]], 3, tags).status(200) == 3  # each process knows the key now
    budget = make_budget(trio[1], {"tag": f"launch/{run}"}, "0.40")  # then hammered at once, everywhere
    out = burst(trio, [key["key"]], 150, tags)
    assert out.status(402) > 0 and out.status(200) + out.status(402) == len(out.answered), out.bodies[:3]
    every_answer_recorded(pg, out)
    for gw in trio:
        reserved_returns_to_zero(gw, "/v1/manage/budget/" + budget["id"])
    deadline = time.monotonic() + 10  # requests written late (abandoned, or from before the budget)
    while (counter := Decimal(trio[0].get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"])) \
            != (ledger := ledger_spend(pg, [key["id"]])) and time.monotonic() < deadline:
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
    key = make_key(trio[0], f"cli-{run}")  # no limit: nothing binds it yet
    tags, limit = [f"cli/{run}"], Decimal("0.10")  # room for ~14 requests, about 3 held at once
    if change == "labels":
        make_budget(trio[0], {"label": {"team": run}}, str(limit))
    first = burst(trio, [key["key"]], 3, tags)  # each process knows the key (and the budget)
    assert first.status(200) == 3
    every_answer_recorded(pg, first)
    before = ledger_spend(pg, [key["id"]])
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
    every_answer_recorded(pg, out)
    counted = ledger_spend(pg, [key["id"]]) - (before if change == "labels" else 0)  # (labels: spend from now on)
    assert counted <= limit


def test_a_cli_change_with_redis_unreachable_changes_nothing(trio: list[Gateway]) -> None:
    from tests.fakes.loopback import closed_port_url

    gone = closed_port_url().replace("http://", "redis://")
    key = make_key(trio[0], "cli-unreachable")
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

    key = make_key(trio[0], "monitored", limit="5")
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
