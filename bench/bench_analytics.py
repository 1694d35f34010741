#!/usr/bin/env python3
"""Analytics query benchmark over a ledger filled by bench/gen_ledger.py.

    .venv/bin/python bench/gen_ledger.py                       # once: 10M records (several minutes)
    .venv/bin/python bench/bench_analytics.py                  # about a minute

Starts `tallygate serve` on the database (a free loopback port, a random admin key), then times
each question through the HTTP API: one warm-up, then `--runs` runs; it reports the median, min,
max, the answer's size and its plan (the tables read: `dims`/`usage`/`tags`/`raw` and the time
levels, with the raw records it may read), or a log page's row count and whether it is partial.
The questions are the issue's table (any range: whole months, days, ragged ends; one or two
dimensions; tags crossed with labels; tags by hour) and the logs filters (nothing matches, rare,
common, combined, a time window, the 100th page). A question refused with a 400 (its raw part
over the budget) counts as answered. It prints a table and one JSON line, and exits 1 when an
analytics median is 300 ms or more or a logs median 100 ms or more. The server is stopped by
PID (SIGTERM, then SIGKILL), also on errors; `--max-seconds` bounds the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_MS = 300.0  # every analytics question
LOGS_LIMIT_MS = 100.0  # every logs page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queries(month: str) -> list[tuple[str, str]]:
    """(name, path) for each timed analytics question: the issue's table and the shapes around it."""
    from tallygate.analytics.query import parse_month

    start, end = parse_month(month)

    def day(n: int, hm: str = "") -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(start / 1000 + (n - 1) * 86400)) + (f"T{hm}:00Z" if hm else "")

    nxt = time.strftime("%Y-%m-%d", time.gmtime(end / 1000))
    rng = f"from={day(1)}&to={nxt}"
    ragged = f"from={day(3, '05:17')}&to={day(17, '11:42')}"
    hour = f"from={start + 10 * 3_600_000}&to={start + 11 * 3_600_000}"
    u = "/v1/analytics/usage?group_by="
    return [
        ("label.team, month", f"{u}label.team&{rng}"),
        ("tag_level.2, month", f"{u}tag_level.2&{rng}"),
        ("tag tree, month", f"/v1/analytics/tags/tree?{rng}"),
        ("export by label.customer_id, csv",
         f"/v1/analytics/export?month={month}&group_by=label.customer_id&markup=0.20&format=csv"),
        ("label.team, labels=current, month", f"{u}label.team&labels=current&{rng}"),
        ("label.customer_id,model, month", f"{u}label.customer_id,model&{rng}"),
        ("tag=customer, tag_level.2, month", f"{u}tag_level.2&tag=customer&{rng}"),
        ("label.team, days 3-17", f"{u}label.team&from={day(3)}&to={day(18)}"),
        ("label.team, 29 days", f"{u}label.team&from={day(2)}&to={nxt}"),
        ("tag_level.2, 29 days", f"{u}tag_level.2&from={day(2)}&to={nxt}"),
        ("model, 03T05:17-17T11:42", f"{u}model&{ragged}"),
        ("key, 03T05:17-17T11:42", f"{u}key&{ragged}"),
        ("tag_level.2, 03T05:17-17T11:42", f"{u}tag_level.2&{ragged}"),
        ("time.day,label.team, month", f"{u}time.day,label.team&{rng}"),
        ("time.day,label.env, month", f"{u}time.day,label.env&{rng}"),
        ("time.hour,tag_level.1, month (tags by hour)", f"{u}time.hour,tag_level.1&{rng}"),
        ("provider, label.team=search, 03T05:17-17T11:42", f"{u}provider&label.team=search&{ragged}"),
        ("label.team,model, 03T05:17-17T11:42", f"{u}label.team,model&{ragged}"),
        ("tag=team x label.team, one hour (raw)", f"{u}label.team&tag=team&{hour}"),
        ("tag=customer/cus_0007 x label.team,model, day 5", f"{u}label.team,model&tag=customer/cus_0007"
                                                            f"&from={day(5)}&to={day(6)}"),
        ("tag=customer/cus_0007 x label.team,model, month", f"{u}label.team,model&tag=customer/cus_0007&{rng}"),
    ]


def log_queries(month: str, key_id: str) -> list[tuple[str, str]]:
    """(name, path) for each timed logs page."""
    from tallygate.analytics.query import parse_month

    start, _ = parse_month(month)
    window = f"from={start + 200 * 3_600_000 + 600_000}&to={start + 200 * 3_600_000 + 1_500_000}"
    return [
        ("logs, no filter", "/v1/logs?limit=50"),
        ("logs, tag no record has", "/v1/logs?tag=no/such/tag&limit=50"),
        ("logs, label.team no key has", "/v1/logs?label.team=nobody&limit=50"),
        ("logs, tag=team (common)", "/v1/logs?tag=team&limit=50"),
        ("logs, tag=customer/cus_0100 (rare)", "/v1/logs?tag=customer/cus_0100&limit=50"),
        ("logs, tag=exp/exp-07/a", "/v1/logs?tag=exp/exp-07/a&limit=50"),
        ("logs, label.team=search", "/v1/logs?label.team=search&limit=50"),
        ("logs, label.customer_id=cus_0100", "/v1/logs?label.customer_id=cus_0100&limit=50"),
        ("logs, key", f"/v1/logs?key={key_id}&limit=50"),
        ("logs, model=embed-small", "/v1/logs?model=embed-small&limit=50"),
        ("logs, status=402 (rare)", "/v1/logs?status=402&limit=50"),
        ("logs, tag+label+model+status", "/v1/logs?tag=US&label.env=prod&model=gpt-4o&status=502&limit=50"),
        ("logs, tag+key+label", f"/v1/logs?tag=workflow&key={key_id}&label.env=prod&limit=50"),
        ("logs, 15 minutes", f"/v1/logs?{window}&limit=50"),
        ("logs, limit=500", "/v1/logs?limit=500"),
    ]


def get(url: str, key: str, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def describe(status: int, body: bytes) -> str:
    """The plan of an analytics answer, or a log page's size, in a few words."""
    if status != 200:
        return f"HTTP {status}: " + json.loads(body).get("error", {}).get("message", "")[:70]
    try:
        doc = json.loads(body)
    except ValueError:
        return "csv"
    if doc.get("object") == "list":
        return f"{len(doc['data'])} rows" + (" (partial)" if doc.get("partial") else "") + \
            (", more" if doc.get("has_more") else "")
    plan = doc.get("plan") or {}
    levels: list[str] = []
    for seg in plan.get("segments", []):  # read and added, then read and subtracted (`analytics/cover.py`)
        level = ("-" if seg.get("subtracted") else "+") + seg["level"]
        if not levels or levels[-1] != level:
            levels.append(level)
    raw = plan.get("raw_records")
    return f"{plan.get('source')}: {''.join(levels).lstrip('+')}" + (f" (raw <= {raw['at_most']:,})" if raw else "")


def timed(fn, runs: int, deadline: float) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm-up (caches, first compile of the statement)
    out = []
    for _ in range(runs):
        if time.monotonic() > deadline:
            break
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite:////tmp/tallygate-bench/ledger.db")
    ap.add_argument("--month", default="2026-11", help="the month gen_ledger.py filled")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--max-seconds", type=float, default=600, help="stop timing after this long")
    args = ap.parse_args()
    deadline = time.monotonic() + args.max_seconds
    key = "tg-bench-" + secrets.token_urlsafe(16)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env["TALLYGATE_ADMIN_KEY"] = key
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"tallygate-bench-analytics-{port}.log", "wb")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tallygate"), "serve", "--db", args.db,
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict] = {}
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the gateway exited early; see {log.name}")
            try:
                get(base + "/v1/models", key, 5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start in time") from None
                time.sleep(0.2)
        startup_s = time.perf_counter() - t0
        status, body = get(base + "/v1/manage/apikey?limit=1", key, 30)
        key_id = json.loads(body)["data"][0]["id"]
        timed_paths = [(n, p, LIMIT_MS) for n, p in queries(args.month)]
        timed_paths += [(n, p, LOGS_LIMIT_MS) for n, p in log_queries(args.month, key_id)]
        # the 100th page of an unfiltered and a filtered listing (the 99 before are not timed)
        for name, first in (("logs, page 100", "/v1/logs?limit=50"), ("logs, tag=US, page 100",
                                                                        "/v1/logs?tag=US&limit=50")):
            path = first
            for _ in range(99):
                _, body = get(base + path, key, 60)
                path = f"{first}&cursor={json.loads(body)['next_cursor']}"
            timed_paths.append((name, path, LOGS_LIMIT_MS))
        for name, path, limit in timed_paths:
            seen: list[tuple[int, bytes]] = []

            def call(path: str = path, seen: list = seen) -> None:
                seen.append(get(base + path, key, 120))

            print(f"  {name} ...", file=sys.stderr, flush=True)
            ms = timed(call, args.runs, deadline)
            status, body = seen[-1]
            results[name] = {"path": path, "limit_ms": limit, "runs": len(ms), "status": status, "bytes": len(body),
                             "plan": describe(status, body), "http_median_ms": round(statistics.median(ms), 1),
                             "http_min_ms": round(min(ms), 1), "http_max_ms": round(max(ms), 1)}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    print(f"gateway start-up on this ledger: {startup_s:.1f} s")
    print(f"{'question':50} {'median':>9} {'min':>7} {'max':>7} {'bytes':>9}  plan")
    failed = []
    for name, r in results.items():
        ok = r["http_median_ms"] < r["limit_ms"] and r["status"] in (200, 400)
        print(f"{name:50} {r['http_median_ms']:>7.1f}ms {r['http_min_ms']:>7.1f} {r['http_max_ms']:>7.1f} "
              f"{r['bytes']:>9,}  {r['plan']}{'' if ok else '  <-- over ' + str(int(r['limit_ms'])) + ' ms'}")
        if not ok:
            failed.append(name)
    print(f"analytics under {LIMIT_MS:.0f} ms, logs under {LOGS_LIMIT_MS:.0f} ms (median over HTTP)"
          + (f" -- FAILED: {', '.join(failed)}" if failed else " -- ok"))
    print(json.dumps({"db": args.db, "month": args.month, "startup_s": round(startup_s, 2), "results": results}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
