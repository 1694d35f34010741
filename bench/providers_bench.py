#!/usr/bin/env python3
"""What each provider type adds per request through the gateway: p50 latency and gateway CPU,
against the `openai` type, every provider on the test suite's faithful fakes (tests/fakes).

    .venv/bin/python bench/providers_bench.py [--requests 1200] [--block 50]

One `tallygate serve` process (tests/gateway.Gateway) with one model per provider type: openai,
azure (api-key), bedrock (SigV4 from static env credentials, Converse), gemini, vertex (Gemini,
a service-account token from the fake token endpoint) and vertex Claude (rawPredict). The fakes
run in threads of this process; requests are sequential non-streamed chat completions over one
keep-alive connection, in short blocks interleaved across types so drift hits every type alike.
Per type: p50 of the request's wall time, and the gateway process's CPU (user+system, psutil)
per request. The fakes'
own speed differs a little per wire format, so the p50 delta bounds the gateway's added latency
from above; the CPU delta is the gateway's own. Loopback only, bounded, no network.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.azure import KEY as AZURE_KEY  # noqa: E402
from tests.fakes.azure import FakeAzure  # noqa: E402
from tests.fakes.bedrock import ACCESS_KEY, REGION, SECRET_KEY, FakeBedrock  # noqa: E402
from tests.fakes.gemini import KEY as GEMINI_KEY  # noqa: E402
from tests.fakes.gemini import FakeGemini  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402
from tests.fakes.vertex import FakeVertex  # noqa: E402
from tests.gateway import ADMIN_KEY, Gateway  # noqa: E402

TYPES = ["openai", "azure", "bedrock", "gemini", "vertex", "vertex-claude"]
BODY = {"messages": [{"role": "user", "content": "Say hello to the benchmark, briefly please."}], "max_tokens": 32}


def config(up: FakeUpstream, az: FakeAzure, br: FakeBedrock, ge: FakeGemini, vx: FakeVertex, folder: Path) -> dict:
    sa = str(vx.service_account_file(folder))
    vertex = {"type": "vertex", "project": "bench", "location": "us-central1", "base_url": vx.root_url,
              "credentials_file": sa}
    providers = {
        "openai": {"type": "openai", "base_url": up.base_url, "api_key": "sk-bench"},
        "azure": {"type": "azure", "base_url": az.root_url, "api_key": AZURE_KEY},
        "bedrock": {"type": "bedrock", "region": REGION, "base_url": br.root_url},
        "gemini": {"type": "gemini", "base_url": ge.root_url, "api_key": GEMINI_KEY},
        "vertex": vertex,
        "vertex-claude": {**vertex, "publisher": "anthropic"},
    }
    models = {"openai": "gpt-4o-mini", "azure": "gpt-4o-mini", "bedrock": "amazon.nova-lite-v1:0",
              "gemini": "gemini-2.5-flash", "vertex": "gemini-2.5-flash", "vertex-claude": "claude-haiku-4-5@20251001"}
    return {"providers": providers,
            "models": {name: {"provider": name, "model": model} for name, model in models.items()}}


def run(conn: http.client.HTTPConnection, model: str, n: int) -> list[float]:
    body = json.dumps({**BODY, "model": model}).encode()
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    times = []
    for _ in range(n):
        began = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        times.append(time.perf_counter() - began)
        if resp.status != 200:
            raise SystemExit(f"{model}: HTTP {resp.status}: {data[:200]!r}")
    return times


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1200, help="timed requests per type")
    parser.add_argument("--block", type=int, default=50, help="requests per type in a row")
    args = parser.parse_args()
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream() as up, FakeAzure() as az, FakeBedrock() as br, \
            FakeGemini() as ge, FakeVertex() as vx:
        folder = Path(tmp)
        gw = Gateway(folder, config(up, az, br, ge, vx, folder), env=env).start()
        try:
            assert gw.proc is not None
            proc = psutil.Process(gw.proc.pid)
            conn = http.client.HTTPConnection("127.0.0.1", gw.port)
            times: dict[str, list[float]] = {t: [] for t in TYPES}
            spent: dict[str, float] = dict.fromkeys(TYPES, 0.0)
            for t in TYPES:
                run(conn, t, 50)  # warm-up: connections, tokens, price lookups
            for r in range(args.requests // args.block):  # short blocks, each round starting elsewhere:
                for t in TYPES[r % len(TYPES):] + TYPES[:r % len(TYPES)]:  # drift hits every type alike
                    before = cpu(proc)
                    times[t] += run(conn, t, args.block)
                    spent[t] += cpu(proc) - before
            conn.close()
        finally:
            gw.stop()
    p50 = {t: statistics.median(v) * 1000 for t, v in times.items()}
    per_request = {t: spent[t] / len(times[t]) * 1000 for t in TYPES}
    print(f"{'type':<14} {'p50 ms':>8} {'CPU ms':>8} {'added p50':>10} {'added CPU':>10}")
    for t in TYPES:
        print(f"{t:<14} {p50[t]:8.3f} {per_request[t]:8.3f} {p50[t] - p50['openai']:+10.3f} "
              f"{per_request[t] - per_request['openai']:+10.3f}")
    print(f"({args.requests} sequential JSON chat requests per type, in blocks of {args.block} interleaved "
          "across types; gateway CPU is user+system of its process)")


if __name__ == "__main__":
    main()
