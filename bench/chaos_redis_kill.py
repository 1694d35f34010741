"""Chaos run for the shared budget counters: two `tallygate serve` processes on a throw-away
PostgreSQL and Redis (the tests' servers, on free loopback ports), eight clients (half streaming,
slow and fast models) for `--seconds`, Redis killed -9 and restarted (no persistence) at 2 s and
8 s, one gateway killed -9 and restarted at 5 s; then, 12 s after the load stops, the key's
counter against the ledger's sum (picodollars; 0 is right) and the notes left in Redis.

    .venv/bin/python bench/chaos_redis_kill.py --runs 5

One JSON line per run. Bounded: about 45 s a run on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import redis
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CI", "true")  # the test servers fail instead of skipping when missing

from tests.conftest import standard_config  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402
from tests.gateway import Gateway  # noqa: E402
from tests.postgres import PostgresInstance, postgres_instance  # noqa: E402
from tests.redis import redis_server  # noqa: E402

HELLO = [{"role": "user", "content": "hello budget"}]


def _ledger(pg: PostgresInstance, sql: str, **params: object) -> list[tuple]:
    engine = create_engine(pg.url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def _load(gws: list[Gateway], key: str, stop: threading.Event, counts: dict[str, int]) -> None:
    async def client(session: aiohttp.ClientSession, n: int) -> None:
        stream, i = n % 2 == 0, 0
        while not stop.is_set():
            i += 1
            gw = gws[(n + i) % len(gws)]
            model = ("slowstream" if i % 2 else "priced") if stream else ("priced-slow" if i % 2 else "priced")
            body: dict = {"model": model, "messages": HELLO, "max_tokens": 10, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            try:
                async with session.post(gw.base_url + "/chat/completions", json=body,
                                        headers={"Authorization": f"Bearer {key}"}) as r:
                    await r.read()
                    counts["served" if r.status == 200 else "refused"] += 1
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(client(session, n) for n in range(8)))

    asyncio.run(run())


def one_run(root: Path, seconds: float, flush_ms: int) -> dict:
    with FakeUpstream() as up, postgres_instance() as pg, redis_server() as rds:
        config = standard_config(up)
        for provider in config["providers"].values():
            provider["timeout_s"] = 15.0
        env = {"TALLYGATE_HOLD_TTL_S": "3", "TALLYGATE_LEDGER_FLUSH_MS": str(flush_ms)}
        gws: list[Gateway] = []
        try:
            for i in range(2):
                (root / str(i)).mkdir(parents=True)
                gws.append(Gateway(root / str(i), config, env=env, db_url=pg.url, args=("--redis", rds.url)).start())
            _, _, key = gws[0].post_json("/v1/manage/apikey", {"name": "chaos", "monthly_limit": "1000"})
            stop, counts = threading.Event(), {"served": 0, "refused": 0}
            loader = threading.Thread(target=_load, args=(gws, key["key"], stop, counts))
            loader.start()
            t0 = time.monotonic()

            def at(s: float) -> None:
                time.sleep(max(0.0, t0 + s - time.monotonic()))

            at(2)
            rds.restart(down_s=0.5)
            at(5)
            assert gws[1].proc is not None
            gws[1].proc.kill()
            gws[1].proc.wait()
            gws[1].start()
            at(8)
            rds.restart(down_s=0.5)
            at(seconds)
            stop.set()
            loader.join(60)
            time.sleep(12)  # settles, ledger writers, rebuild passes, the dead process reaped
            ledger = int(_ledger(pg, "SELECT coalesce(sum(cost_pico), 0) FROM requests WHERE key_id = :k",
                                 k=key["id"])[0][0])
            counter = int(Decimal(gws[0].get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"]) * 10**12)
            direct = redis.Redis.from_url(rds.url)
            notes = [k.decode()[5:] for k in direct.scan_iter(match="tg:u:*")]
            written = _ledger(pg, "SELECT id FROM requests WHERE id = ANY(:ids)", ids=notes) if notes else []
            direct.close()
            return {**counts, "ledger_pico": ledger, "counter_pico": counter, "counter_minus_ledger": counter - ledger,
                    "notes_left": len(notes), "notes_left_written": len(written)}
        finally:
            for gw in gws:
                gw.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=14.0, help="load per run (the kills are at 2, 5 and 8 s)")
    ap.add_argument("--flush-ms", type=int, default=250, help="TALLYGATE_LEDGER_FLUSH_MS of the gateways")
    args = ap.parse_args()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tallygate-chaos-") as root:
            print(json.dumps(one_run(Path(root), args.seconds, args.flush_ms)), flush=True)


if __name__ == "__main__":
    main()
