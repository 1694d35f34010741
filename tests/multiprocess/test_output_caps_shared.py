"""No body makes a limited request spend past its key's limit when three gateways share it: the
output-cap matrix (every route, native or translated target, JSON or stream) against three
`tallygate serve` processes on one PostgreSQL and one Redis, one of them with `--workers 2`.

Each key has room for one worst case ($5 at $0.001 a token; a request without a cap reserves
4,096 output tokens), and each case sends one request to every process at once."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, text

from tests.api.test_output_caps import CASES, LIMIT, caps_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.postgres import postgres_instance
from tests.redis import redis_server

_PRICED = {"input_per_mtok": "1000", "output_per_mtok": "1000"}
# Embeddings have no translated target (no Anthropic embeddings API) and no stream: their worst
# case is their input; 3 x 2,000 tokens do not fit in $5, 2 x 2,000 do.
_TOKENS = [[7] * 2000]
EMBEDDINGS = [("/v1/embeddings", "embed-priced", {"input": "a" * 6000}),
              ("/v1/embeddings", "embed-priced", {"input": _TOKENS}),
              ("/v1/embeddings", "embed-priced", {"input": ["b" * 3000, "c" * 3000]})]
ALL = [(path, model, body, stream) for path, model, body in CASES for stream in (False, True)] + \
      [(path, model, body, False) for path, model, body in EMBEDDINGS]
_names = itertools.count()


@pytest.fixture(scope="module")
def trio(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Gateway], str]]:
    config = caps_config(upstream)
    config["models"]["embed-priced"] = {"provider": "openai", "model": "text-embedding-3-small", "pricing": _PRICED}
    for provider in config["providers"].values():
        provider["timeout_s"] = 30.0
    root = tmp_path_factory.mktemp("caps")
    gateways: list[Gateway] = []
    with postgres_instance() as pg, redis_server() as rds:
        try:
            for i, extra in enumerate((("--workers", "2"), (), ())):
                path: Path = root / str(i)
                path.mkdir()
                gateways.append(Gateway(path, config, db_url=pg.url, args=("--redis", rds.url, *extra)).start())
            yield gateways, pg.url
        finally:
            for gw in gateways:
                gw.stop()


def _ledger_spend(db_url: str, key_ids: list[str]) -> dict[str, Decimal]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT key_id, coalesce(sum(cost_pico), 0) FROM requests "
                                     "WHERE key_id = ANY(:k) GROUP BY key_id"), {"k": key_ids}).all()
            return {k: Decimal(int(v)) / 10**12 for k, v in rows}
    finally:
        engine.dispose()


async def _case(session: aiohttp.ClientSession, gateways: list[Gateway], key: str, path: str, model: str,
                body: dict, stream: bool) -> list[int]:
    payload = {**body, "model": model, **({"stream": True} if stream else {})}
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key, "anthropic-version": "2023-06-01"}

    async def one(gw: Gateway) -> int:
        async with session.post(gw.url + path, data=json.dumps(payload), headers=headers) as resp:
            await resp.read()
            return resp.status

    return await asyncio.gather(*(one(gw) for gw in gateways))


def test_no_body_makes_a_limited_request_spend_past_its_limit_across_processes(
        trio: tuple[list[Gateway], str]) -> None:
    gateways, db_url = trio
    keys = []
    for _ in ALL:
        status, _, rec = gateways[0].post_json("/v1/manage/apikey", {"name": f"shared-cap-{next(_names)}",
                                                                    "monthly_limit": str(LIMIT)})
        assert status == 201, rec
        keys.append(rec)

    async def run() -> list[list[int]]:
        sem = asyncio.Semaphore(4)  # cases at a time (each: one request to every process)
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
            async def limited(i: int) -> list[int]:
                async with sem:
                    return await _case(session, gateways, keys[i]["key"], *ALL[i])
            return await asyncio.gather(*(limited(i) for i in range(len(ALL))))

    statuses = asyncio.run(run())
    for (path, model, body, stream), got in zip(ALL, statuses, strict=True):
        assert set(got) <= {200, 400, 402}, (path, model, body, stream, got)
        if 100 in (body.get("max_tokens"), body.get("max_completion_tokens"), body.get("max_output_tokens")):
            assert got == [200] * 3, (path, model, body, stream, got)  # an honest small cap is served
    ids = [k["id"] for k in keys]
    for gw in gateways:  # every hold settled on every process, then the ledger has every cost
        for k in keys:
            _settled(gw, k["id"])
    spend = _ledger_spend(db_url, ids)
    over = [(case, spend[k["id"]]) for case, k in zip(ALL, keys, strict=True) if spend.get(k["id"], 0) > LIMIT]
    assert over == []
    assert sum(got.count(402) for got in statuses) > len(ALL)  # the one limit refused across processes
    for k in keys:  # the views read the shared counters: the ledger's spend, on every process
        assert Decimal(gateways[1].get("/v1/manage/apikey/" + k["id"])[1]["monthly_spend"]) == spend.get(k["id"], 0)


def _settled(gw: Gateway, key_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (rec := gw.get("/v1/manage/apikey/" + key_id)[1])["monthly_reserved"] != "0":
        assert time.monotonic() < deadline, rec
        time.sleep(0.1)
