"""What the multiprocess budget tests share: gateways on one PostgreSQL and one Redis, keys and
budgets made through the API, bursts of requests, and what the ledger and the counters say."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal
from itertools import cycle
from pathlib import Path

import aiohttp
from sqlalchemy import create_engine, text

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.postgres import PostgresInstance
from tests.redis import RedisServer

HELLO = [{"role": "user", "content": "hello budget"}]
PICO = Decimal(10) ** 12
HOLD_TTL_S = 3


def make_gateway(path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer,
             *extra: str) -> Gateway:
    path.mkdir(parents=True, exist_ok=True)
    config = standard_config(upstream)
    for provider in config["providers"].values():  # 200 requests at once on 2 cores: no 504s
        provider["timeout_s"] = 15.0
    return Gateway(path, config, env={"TALLYGATE_HOLD_TTL_S": str(HOLD_TTL_S)},
                   db_url=pg.url, args=("--redis", rds.url, *extra))


def make_key(gw: Gateway, name: str, labels: dict | None = None, limit: str | None = None) -> dict:
    body: dict = {"name": name, "labels": labels or {}}
    if limit is not None:
        body["monthly_limit"] = limit
    status, _, rec = gw.post_json("/v1/manage/apikey", body)
    assert status == 201, rec
    return rec


def make_budget(gw: Gateway, scope: dict, limit: str) -> dict:
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


def ledger_rows(pg: PostgresInstance, ids: list[str]) -> dict[str, dict]:
    engine = create_engine(pg.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, key_id, status, cost_pico, tags FROM requests "
                                     "WHERE id = ANY(:ids)"), {"ids": ids}).mappings()
            return {r["id"]: dict(r) for r in rows}
    finally:
        engine.dispose()


def ledger_spend(pg: PostgresInstance, key_ids: list[str]) -> Decimal:
    engine = create_engine(pg.url)
    try:
        with engine.connect() as conn:
            pico = conn.execute(text("SELECT coalesce(sum(cost_pico), 0) FROM requests WHERE key_id = ANY(:k)"),
                                {"k": key_ids}).scalar()
            return Decimal(int(pico or 0)) / PICO
    finally:
        engine.dispose()


def every_answer_recorded(pg: PostgresInstance, out: Outcome, timeout: float = 20) -> dict[str, dict]:
    ids = [rid for _, rid in out.answered]
    deadline = time.monotonic() + timeout
    while True:
        found = ledger_rows(pg, ids)
        if len(found) == len(ids) or time.monotonic() > deadline:
            assert sorted(set(ids) - set(found)) == [], "answered requests without a ledger record"
            return found
        time.sleep(0.2)


def reserved_returns_to_zero(gw: Gateway, path: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, rec = gw.get(path)
        assert status == 200, rec
        if rec["monthly_reserved"] == "0" or time.monotonic() > deadline:
            assert rec["monthly_reserved"] == "0", rec
            return rec
        time.sleep(0.1)


def counter_drift(gw: Gateway, expect: Decimal = Decimal(0)) -> Decimal:
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


def worst_case(out: Outcome) -> Decimal:
    """The most one request may cost, as a 402 reported it."""
    for err in out.bodies:
        m = re.search(r"may cost up to \$([0-9.]+)", err["message"])
        if m:
            return Decimal(m.group(1))
    raise AssertionError(f"no 402 among {out.bodies[:3]}")


async def reserved_slow_requests(session: aiohttp.ClientSession, gw: Gateway, key: str,
                                 n: int = 6) -> list[asyncio.Task[str]]:
    """`n` requests of `key` to `priced-slow` (answered in 0.4 s), started and given 0.15 s to be
    reserved: their tasks, each returning its request id."""

    async def one() -> str:
        async with session.post(gw.base_url + "/chat/completions",
                                json={"model": "priced-slow", "messages": HELLO, "max_tokens": 10},
                                headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200, await r.text()
            return str((await r.json())["id"])

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.sleep(0.15)
    return tasks
