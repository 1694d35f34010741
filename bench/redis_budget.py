#!/usr/bin/env python3
"""Redis-budget benchmark (loopback only): what sharing budgets through Redis costs.

Starts bench/mock_upstream.py, a throw-away redis-server (no persistence) and gateways on a fresh
SQLite ledger, with one API key under a monthly limit (so every request reserves and settles):

* c1 (1 client, JSON): one process with the in-memory budget against one process with
  `--redis`, interleaved rounds; the added p50/p99 and gateway CPU per request (Redis's own CPU
  per request shown apart);
* c64 (64 clients, JSON): the same comparison under concurrency (one round);
* c8 (8 clients, JSON): requests/s of one `--redis` process against `--workers 2`.

Prints a markdown table; raw JSON lines go to bench/results/<timestamp>-redis.jsonl. Bounded:
each run stops after --requests requests or 20 s.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import BIN, BODY, HERE, TCK, free_port, start, stop, ticks, wait_for_quiet, wait_ready  # noqa: E402


def tree_ticks(pid):
    """CPU ticks of a process and its live children (the workers of `--workers N`)."""
    total = ticks(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return total + sum(tree_ticks(int(k)) for k in kids)


def load(url, key, clients, n, label):
    cmd = [sys.executable, HERE / "loadgen.py", url, "-c", clients, "-n", n, "--warmup", 50,
           "--max-seconds", 20, "--label", label, "--auth", "Bearer " + key, "--body", json.dumps(BODY)]
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per run (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per c1 target (default 3)")
    a = ap.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("redis-server not found: `make services` installs it")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = HERE / "results" / f"{stamp}-redis.jsonl"
    results.parent.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tallygate-bench-redis-"))
    db_url, admin = f"sqlite:///{tmp / 'ledger.db'}", "tg-admin-" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env["TALLYGATE_ADMIN_KEY"] = admin
    procs, rows = [], []

    def emit(rec):
        rows.append(rec)
        with open(results, "a") as f:
            f.write(json.dumps(rec) + "\n")

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
            "models:\n  mock-gpt: {provider: up, model: gpt-4o-mini}\n")
        key = subprocess.run([str(BIN / "tallygate"), "keys", "create", "--name", "bench", "--limit", "100000",
                              "--db", db_url], capture_output=True, text=True, timeout=60, env=env,
                             check=True).stdout.strip().splitlines()[-1]

        def gateway(name, *extra):
            port = free_port()
            gw = start(procs, [BIN / "tallygate", "serve", "--config", tmp / "tallygate.yaml", "--db", db_url,
                               "--port", port, *extra], open(tmp / f"{name}.log", "w"), env=env)
            url = f"http://127.0.0.1:{port}/v1"
            wait_ready(gw, url + "/models", {"Authorization": "Bearer " + key}, tmp / f"{name}.log")
            return gw, url + "/chat/completions"

        def run(name, gw, url, clients, rnd):
            waited, busy = wait_for_quiet(5.0)
            g0, r0 = tree_ticks(gw.pid), ticks(rds.pid)
            rec = load(url, key, clients, a.requests, f"{name}/c{clients}/r{rnd}")
            sent = rec["ok"] + rec["errors"] + 50
            rec.update(kind="run", target=name, clients=clients, round=rnd, waited_s=waited, busy_before=busy,
                       gw_cpu_ms_per_req=round((tree_ticks(gw.pid) - g0) * 1000 / TCK / sent, 3),
                       redis_cpu_ms_per_req=round((ticks(rds.pid) - r0) * 1000 / TCK / sent, 3))
            emit(rec)
            print(f"{name} c{clients} r{rnd}: rps={rec['rps']} p50={rec['p50_ms']} p99={rec['p99_ms']} "
                  f"cpu/req={rec['gw_cpu_ms_per_req']} redis cpu/req={rec['redis_cpu_ms_per_req']} "
                  f"errors={rec['errors']}", file=sys.stderr)

        memory = gateway("memory")
        shared = gateway("redis", "--redis", redis_url)
        for rnd in range(1, a.rounds + 1):
            run("memory", *memory, 1, rnd)
            run("redis", *shared, 1, rnd)
        run("memory", *memory, 64, 1)
        run("redis", *shared, 64, 1)
        run("redis", *shared, 8, 1)
        for gw, _ in (memory,):
            stop(gw)
        workers = gateway("workers2", "--redis", redis_url, "--workers", "2")
        time.sleep(1.0)
        run("redis --workers 2", *workers, 8, 1)
        run("redis", *shared, 8, 2)
        run("redis --workers 2", *workers, 8, 2)

        def med(target, clients, k):
            vals = [r[k] for r in rows if r["target"] == target and r["clients"] == clients and r.get(k) is not None]
            return round(statistics.median(vals), 3) if vals else None

        m50, m99, r50, r99 = med("memory", 1, "p50_ms"), med("memory", 1, "p99_ms"), \
            med("redis", 1, "p50_ms"), med("redis", 1, "p99_ms")
        print(f"\n## Redis budget, {stamp} ({os.cpu_count()} cores, {a.requests} requests per run, median of rounds)\n")
        print("| config | budget | req/s | p50 ms | p99 ms | gateway CPU-ms per request | Redis CPU-ms per request |")
        print("|---|---|---|---|---|---|---|")
        for target, clients in (("memory", 1), ("redis", 1), ("memory", 64), ("redis", 64), ("redis", 8),
                                ("redis --workers 2", 8)):
            print(f"| {clients} client{'s' if clients > 1 else ''} | {target} | {med(target, clients, 'rps')} "
                  f"| {med(target, clients, 'p50_ms')} | {med(target, clients, 'p99_ms')} "
                  f"| {med(target, clients, 'gw_cpu_ms_per_req')} | {med(target, clients, 'redis_cpu_ms_per_req')} |")
        print(f"\nRedis path adds {r50 - m50:+.3f} ms at p50 and {r99 - m99:+.3f} ms at p99 (1 client), "
              f"{(med('redis', 1, 'gw_cpu_ms_per_req') or 0) - (med('memory', 1, 'gw_cpu_ms_per_req') or 0):+.3f} "
              f"gateway CPU-ms per request; at 64 clients "
              f"{(med('redis', 64, 'p50_ms') or 0) - (med('memory', 64, 'p50_ms') or 0):+.3f} ms p50, "
              f"{(med('redis', 64, 'p99_ms') or 0) - (med('memory', 64, 'p99_ms') or 0):+.3f} ms p99, "
              f"{(med('redis', 64, 'gw_cpu_ms_per_req') or 0) - (med('memory', 64, 'gw_cpu_ms_per_req') or 0):+.3f} "
              f"gateway CPU-ms per request. --workers 2 against one process at 8 clients: "
              f"{med('redis --workers 2', 8, 'rps')} / {med('redis', 8, 'rps')} req/s.\nRaw lines: {results}")
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
