#!/usr/bin/env python3
"""Reservations in Redis at high concurrency: a pool sized to the connection bound against one
batched connection (`pipeline/redis_batch.ScriptBatch`), as `pipeline/redis_budget.py` uses.

Starts a throw-away redis-server (loopback, no persistence), then for each concurrency runs the
real reservation script (one unlimited-room scope, then released) from that many coroutines
and prints wall time, client CPU per call and the connections each way opened. Bounded: at most
--calls calls per run.

    .venv/bin/python bench/redis_reserve_batching.py --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import redis.asyncio as aioredis  # noqa: E402

from tallygate.pipeline.redis_batch import ScriptBatch  # noqa: E402
from tallygate.pipeline.redis_lua import RESERVE  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(url: str, mode: str, concurrency: int, calls: int) -> tuple[float, float, int]:
    pool = 4096 if mode == "pool" else 100
    client = aioredis.Redis.from_url(url, max_connections=pool)
    script = client.register_script(RESERVE)
    batch = ScriptBatch(client, script)
    args = ["bench:", 1, "p1", 1, 60000, "scope", 10**18]
    call = (lambda: script(args=args)) if mode == "pool" else (lambda: batch(args))
    await client.set("bench:1:ready", 1)
    assert (await call())[0] == 0
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    opened = len(client.connection_pool._available_connections) + len(client.connection_pool._in_use_connections)
    await client.aclose()
    return wall, cpu, opened


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    a = ap.parse_args()
    binary = shutil.which("redis-server") or sys.exit("redis-server not found")
    port, tmp = _free_port(), tempfile.mkdtemp(prefix="tallygate-bench-batch-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", tmp], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        print("| concurrency | mode | calls/s | client CPU µs/call | connections |")
        print("|---|---|---|---|---|")
        for concurrency in (1, 64, 1000):
            for mode in ("pool", "batch"):
                wall, cpu, opened = asyncio.run(_run(url, mode, concurrency, a.calls))
                print(f"| {concurrency} | {mode} | {a.calls / wall:,.0f} | {cpu / a.calls * 1e6:.0f} | {opened} |")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
