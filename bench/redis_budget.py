#!/usr/bin/env python3
"""Redis-budget benchmark (loopback only): what sharing budgets through Redis costs.

Starts bench/mock_upstream.py, a throw-away redis-server (no persistence) and gateways on a fresh
SQLite ledger, with one API key under a monthly limit (so every request reserves and settles):

* c1 (1 client, JSON): one process with the in-memory budget against one process with
  `--redis`, interleaved rounds; the added p50/p99 and gateway CPU per request (Redis's own CPU
  per request shown apart);
* c64 (64 clients, JSON): the same comparison under concurrency (one round);
* c8 (8 clients, JSON): requests/s of one `--redis` process against `--workers 2`;
* round trips: 200 requests at 1 client under Redis MONITOR, counting what each request sends
  to Redis on its path (must be 1: the reservation, which checks the budgets version too) and
  off it (settles, batched); for a key under a limit and for a key no limit binds;
* c1 unlimited: the in-memory and the Redis process serving a key no limit binds (its request
  still checks the budgets version in Redis: the trade-off of docs/deploy.md).

Prints a markdown table; raw JSON lines go to bench/results/<timestamp>-redis.jsonl. Bounded:
each run stops after --requests requests or 20 s.
"""
import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
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


def load(url, key, clients, n, label, body=BODY):
    cmd = [sys.executable, HERE / "loadgen.py", url, "-c", clients, "-n", n, "--warmup", 50,
           "--max-seconds", 20, "--label", label, "--auth", "Bearer " + key, "--body", json.dumps(body)]
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def trace(redis_port, url, key, n=200):
    """Run n requests at 1 client under MONITOR: (commands on the request's path, settles, other
    client commands) per request, and whether any client read the version outside the script."""
    from tallygate.pipeline.redis_lua import RESERVE, SETTLE

    reserve, settle = (hashlib.sha1(s.encode()).hexdigest().encode() for s in (RESERVE, SETTLE))
    lines = []
    with socket.create_connection(("127.0.0.1", redis_port), timeout=5) as mon:
        mon.sendall(b"MONITOR\r\n")
        cmd = [sys.executable, HERE / "loadgen.py", url, "-c", 1, "-n", n, "--warmup", 0, "--max-seconds", 20,
               "--auth", "Bearer " + key, "--body", json.dumps(BODY)]
        out = json.loads(subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                        timeout=120).stdout.strip().splitlines()[-1])
        time.sleep(0.3)  # the last settle
        mon.settimeout(0.5)
        buf = b""
        try:
            while chunk := mon.recv(1 << 20):
                buf += chunk
        except TimeoutError:
            pass
        lines = [ln for ln in buf.split(b"\r\n") if ln.startswith(b"+") and b" lua]" not in ln]
    done = out["ok"] + out["errors"]
    count = lambda pred: sum(1 for ln in lines if pred(ln))  # noqa: E731
    on_path = count(lambda ln: reserve in ln)
    settles = count(lambda ln: settle in ln)
    other = count(lambda ln: reserve not in ln and settle not in ln and b'"EVALSHA"' not in ln
                  and b'"MONITOR"' not in ln)
    return {"requests": done, "on_path_per_req": round(on_path / done, 3),
            "settles_per_req": round(settles / done, 3), "other_cmds_per_req": round(other / done, 3),
            "version_reads": count(lambda ln: b'"tg:ver"' in ln)}


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
        key, free_key = (subprocess.run([str(BIN / "tallygate"), "keys", "create", "--name", name, *limit,
                                         "--db", db_url], capture_output=True, text=True, timeout=60, env=env,
                                        check=True).stdout.strip().splitlines()[-1]
                         for name, limit in (("bench", ("--limit", "100000")), ("bench-free", ())))

        def gateway(name, *extra):
            port = free_port()
            gw = start(procs, [BIN / "tallygate", "serve", "--config", tmp / "tallygate.yaml", "--db", db_url,
                               "--port", port, *extra], open(tmp / f"{name}.log", "w"), env=env)
            url = f"http://127.0.0.1:{port}/v1"
            wait_ready(gw, url + "/models", {"Authorization": "Bearer " + key}, tmp / f"{name}.log")
            return gw, url + "/chat/completions"

        def run(name, gw, url, clients, rnd, key=key):
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
        for rnd in range(1, a.rounds + 1):
            run("memory unlimited", *memory, 1, rnd, key=free_key)
            run("redis unlimited", *shared, 1, rnd, key=free_key)
        trips = {kind: trace(redis_port, shared[1], k) for kind, k in (("limited", key), ("unlimited", free_key))}
        for kind, t in trips.items():
            emit({"kind": "round_trips", "key": kind, **t})
        run("redis", *shared, 8, 1)
        for gw, _ in (memory,):
            stop(gw)
        workers = gateway("workers2", "--redis", redis_url, "--workers", "2")
        time.sleep(1.0)
        run("redis --workers 2", *workers, 8, 1)
        run("redis", *shared, 8, 2)
        run("redis --workers 2", *workers, 8, 2)

        def med(target, clients, k):
            vals = [r[k] for r in rows if r.get("target") == target and r["clients"] == clients
                    and r.get(k) is not None]
            return round(statistics.median(vals), 3) if vals else None

        m50, m99, r50, r99 = med("memory", 1, "p50_ms"), med("memory", 1, "p99_ms"), \
            med("redis", 1, "p50_ms"), med("redis", 1, "p99_ms")
        print(f"\n## Redis budget, {stamp} ({os.cpu_count()} cores, {a.requests} requests per run, median of rounds)\n")
        print("| config | budget | req/s | p50 ms | p99 ms | gateway CPU-ms per request | Redis CPU-ms per request |")
        print("|---|---|---|---|---|---|---|")
        for target, clients in (("memory", 1), ("redis", 1), ("memory", 64), ("redis", 64), ("redis", 8),
                                ("redis --workers 2", 8), ("memory unlimited", 1), ("redis unlimited", 1)):
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
        print("\n| key | Redis round trips on the request's path, per request | settles per request (off the "
              "path, batched) | other client commands per request | reads of the version outside the script |")
        print("|---|---|---|---|---|")
        for kind, t in trips.items():
            print(f"| {kind} | {t['on_path_per_req']} | {t['settles_per_req']} | {t['other_cmds_per_req']} "
                  f"| {t['version_reads']} |")
        errors = sum(r.get("errors", 0) for r in rows)
        if trips["limited"]["on_path_per_req"] != 1 or any(t["version_reads"] for t in trips.values()):
            print("PROBLEMS: a limited request made more than one round trip to Redis, or the version was read")
            errors += 1
        if errors:
            print(f"PROBLEMS: {errors} errors during runs")
        return 1 if errors else 0
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
