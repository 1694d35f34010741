#!/usr/bin/env python3
"""CPU per upstream JSON POST, aiohttp against pyreqwest, to a running bench/mock_upstream.py:
`.venv/bin/python bench/upstream_client_cpu.py PORT` (3 interleaved rounds of 2,000 calls each;
process CPU, so pyreqwest's Tokio thread is counted)."""
import datetime
import sys
import time

import aiohttp
import orjson
import uvloop
from pyreqwest.client import ClientBuilder

URL = f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions"
BODY = orjson.dumps({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hello there"}]})
HEADERS = {"Authorization": "Bearer sk-" + "x" * 40, "Content-Type": "application/json"}
N, WARMUP = 2000, 200


async def timed(one) -> float:
    for _ in range(WARMUP):
        await one()
    c0 = time.process_time()
    for _ in range(N):
        await one()
    return (time.process_time() - c0) / N


async def with_aiohttp() -> float:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), skip_auto_headers=("User-Agent",))
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)

    async def one():
        async with session.post(URL, data=BODY, headers=HEADERS, timeout=timeout, allow_redirects=False) as r:
            return orjson.loads(await r.read())
    try:
        return await timed(one)
    finally:
        await session.close()


async def with_pyreqwest() -> float:
    client = (ClientBuilder().follow_redirects(False).no_proxy()
              .connect_timeout(datetime.timedelta(seconds=10)).build())
    timeout = datetime.timedelta(seconds=60)

    async def one():
        r = await client.post(URL).headers(HEADERS).body_bytes(BODY).timeout(timeout).build().send()
        return orjson.loads(memoryview(await r.bytes()))
    try:
        return await timed(one)
    finally:
        await client.close()


if __name__ == "__main__":
    for _ in range(3):
        for name, run in (("aiohttp", with_aiohttp), ("pyreqwest", with_pyreqwest)):
            print(f"{name:10} {uvloop.run(run()) * 1e6:6.1f} µs CPU per call", flush=True)
