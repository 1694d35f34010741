#!/usr/bin/env python3
"""Rate-limit benchmark (loopback only): what one rate limit adds to a budgeted request.

Starts bench/mock_upstream.py, a throw-away redis-server and one gateway with `--redis` on a fresh
SQLite ledger, with two API keys under a monthly limit (every request reserves and settles a
budget); the second also has a rate limit (requests per second and minute, tokens per minute
and in flight, all far above the load, so nothing is refused); a third key under a monthly limit
sends `policy/bench`, whose first target has a model rate limit as far above the load (admitted in
the reservation's round trip). Interleaved rounds of 1 client against each key: p50,
p99, gateway CPU per request, and Redis EVALSHA calls per request (INFO commandstats: the
reservation, plus the queued settles, which are pipelined off the request path).

Prints a markdown table; bounded: each run stops after --requests requests or 20 s.
"""
import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_budget import BODY, load, tree_ticks  # noqa: E402
from run_bench import BIN, HERE, TCK, free_port, start, stop, ticks, wait_for_quiet, wait_ready  # noqa: E402


def evalsha_calls(client):
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per run (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per key (default 3)")
    a = ap.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("redis-server not found: `make services` installs it")
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-bench-rl-"))
    db_url, admin = f"sqlite:///{tmp / 'ledger.db'}", "tg-admin-" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env["TALLYGATE_ADMIN_KEY"] = admin
    procs, rows = [], []
    try:
        mock_port, redis_port = free_port(), free_port()
        mock = start(procs, [sys.executable, HERE / "mock_upstream.py", "--host", "127.0.0.1", "--port", mock_port],
                     open(tmp / "mock.log", "w"))
        wait_ready(mock, f"http://127.0.0.1:{mock_port}/health", {}, tmp / "mock.log")
        rds = start(procs, [redis_bin, "--port", redis_port, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", tmp], open(tmp / "redis.log", "w"))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        (tmp / "tallygate.yaml").write_text(
            f'providers:\n  up: {{type: openai, base_url: "http://127.0.0.1:{mock_port}/v1", api_key: "sk-up"}}\n'
            "models:\n  mock-gpt: {provider: up, model: gpt-4o-mini}\n"
            "  mock-gpt-p: {provider: up, model: gpt-4o-mini}\n  mock-gpt-b: {provider: up, model: gpt-4o-mini}\n"
            "policies:\n  bench: {strategy: fallback, targets: [mock-gpt-p, mock-gpt-b]}\n")

        def cli(*args):
            out = subprocess.run([str(BIN / "tallygate"), *args, "--db", db_url], capture_output=True, text=True,
                                 timeout=60, env=env, check=True)
            return out.stdout.strip()

        budget_key = cli("keys", "create", "--name", "budget-only", "--limit", "100000").splitlines()[-1]
        rated_key = cli("keys", "create", "--name", "budget-and-rate", "--limit", "100000").splitlines()[-1]
        policy_key = cli("keys", "create", "--name", "policy", "--limit", "100000").splitlines()[-1]
        port = free_port()
        gw = start(procs, [BIN / "tallygate", "serve", "--config", tmp / "tallygate.yaml", "--db", db_url,
                           "--port", port, "--redis", redis_url], open(tmp / "gw.log", "w"), env=env)
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(gw, url + "/models", {"Authorization": "Bearer " + budget_key}, tmp / "gw.log")
        import urllib.request
        keys = json.loads(urllib.request.urlopen(urllib.request.Request(
            url + "/manage/apikey?limit=10", headers={"Authorization": "Bearer " + admin})).read())["data"]
        rated_id = next(k["id"] for k in keys if k["name"] == "budget-and-rate")
        body = json.dumps({"name": "bench", "scope": {"key": rated_id}, "requests_per_second": 10**9,
                           "requests_per_minute": 10**9,
                           "tokens_per_minute": 10**12, "max_concurrent": 10**6}).encode()
        urllib.request.urlopen(urllib.request.Request(url + "/manage/ratelimit", data=body, method="POST", headers={
            "Authorization": "Bearer " + admin, "Content-Type": "application/json"}))
        body = json.dumps({"name": "first-target", "scope": {"model": "mock-gpt-p"}, "requests_per_minute": 10**9,
                           "tokens_per_minute": 10**12, "max_concurrent": 10**6}).encode()
        urllib.request.urlopen(urllib.request.Request(url + "/manage/ratelimit", data=body, method="POST", headers={
            "Authorization": "Bearer " + admin, "Content-Type": "application/json"}))
        cases = (("budget only", budget_key, BODY), ("budget + rate limit", rated_key, BODY),
                 ("policy, first target's model limit", policy_key, {**BODY, "model": "policy/bench"}))
        time.sleep(1.5)
        client = redis.Redis.from_url(redis_url)
        for rnd in range(1, a.rounds + 1):
            for name, key, request in cases:
                wait_for_quiet(5.0)
                g0, r0, e0 = tree_ticks(gw.pid), ticks(rds.pid), evalsha_calls(client)
                rec = load(url + "/chat/completions", key, 1, a.requests, f"{name}/r{rnd}", request)
                sent = rec["ok"] + rec["errors"] + 50
                rec.update(target=name, round=rnd,
                           gw_cpu_ms_per_req=round((tree_ticks(gw.pid) - g0) * 1000 / TCK / sent, 3),
                           redis_cpu_ms_per_req=round((ticks(rds.pid) - r0) * 1000 / TCK / sent, 3),
                           evalsha_per_req=round((evalsha_calls(client) - e0) / sent, 2))
                rows.append(rec)
                print(f"{name} r{rnd}: p50={rec['p50_ms']} p99={rec['p99_ms']} cpu/req={rec['gw_cpu_ms_per_req']} "
                      f"evalsha/req={rec['evalsha_per_req']} errors={rec['errors']}", file=sys.stderr)

        def med(target, k):
            return round(statistics.median(r[k] for r in rows if r["target"] == target), 3)

        print(f"\n## One rate limit on a budgeted key, Redis, 1 client ({os.cpu_count()} cores, {a.requests} "
              f"requests per run, median of {a.rounds} rounds)\n")
        print("| key | p50 ms | p99 ms | gateway CPU-ms per request | Redis CPU-ms per request | EVALSHA per request |")
        print("|---|---|---|---|---|---|")
        for target, _, _ in cases:
            cells = [med(target, k) for k in ("p50_ms", "p99_ms", "gw_cpu_ms_per_req", "redis_cpu_ms_per_req",
                                              "evalsha_per_req")]
            print(f"| {target} | " + " | ".join(str(c) for c in cells) + " |")
        errors = sum(r["errors"] for r in rows)
        if errors:
            print(f"PROBLEMS: {errors} errors during runs")
        return 1 if errors else 0
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
