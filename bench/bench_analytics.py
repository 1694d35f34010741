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
common, combined, a time window, the 100th page), then `--random` questions drawn with `--seed`
(random dimensions, filters, ragged millisecond ranges and zones). A refusal (any status but 200)
is a failure. Each logs filter is then walked page by page to its end (`--walk-pages`) and the
whole walk timed. It prints per question the median, min and max, a speed reference (a 10M-step
Python loop) and one JSON line, and exits 1 when an analytics median is over 300 ms, a logs
median over 100 ms, or any run over 1 s. `--columnar off` times the roll-ups and raw ledger alone
(the answers of questions no roll-up holds then take seconds). The server is stopped by
PID (SIGTERM, then SIGKILL), also on errors; `--max-seconds` bounds the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
MAX_MS = 1000.0  # no run of any question


def speed_reference() -> float:
    """Seconds for a 10M-step Python loop: how fast this (shared) machine was during the run."""
    t = time.perf_counter()
    n = 0
    for i in range(10_000_000):
        n += i
    return time.perf_counter() - t


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
        # the questions issue 25 found refused or slow
        ("tag_level.2 x label.team, day 5", f"{u}tag_level.2,label.team&from={day(5)}&to={day(6)}"),
        ("tag x label.customer_id, month", f"{u}tag,label.customer_id&{rng}"),
        ("status of tag+labels+model slice, month", f"{u}status&tag=US&label.env=prod&label.team=search"
                                                     f"&model=gpt-4o-mini&{rng}"),
        ("tag_level.2, label.env=prod, month", f"{u}tag_level.2&label.env=prod&{rng}"),
        ("model of tag=US/California, day 5", f"{u}model&tag=US/California&from={day(5)}&to={day(6)}"),
        ("time.day, week, Asia/Kolkata", f"{u}time.day&from={day(8)}&to={day(15)}&tz=Asia/Kolkata"),
        ("time.hour, week, Asia/Kolkata", f"{u}time.hour&from={day(8)}&to={day(15)}&tz=Asia/Kolkata"),
        ("time.hour, day 9, Asia/Kolkata", f"{u}time.hour&from={day(9)}&to={day(10)}&tz=Asia/Kolkata"),
        ("time.day,tag_level.1, month, New York", f"{u}time.day,tag_level.1&{rng}&tz=America/New_York"),
        ("time.day,label.team, month, New York", f"{u}time.day,label.team&{rng}&tz=America/New_York"),
        ("time.day,label.team, month, Kolkata", f"{u}time.day,label.team&{rng}&tz=Asia/Kolkata"),
        ("label.team,model, 03T05:17-17T11:42, Kathmandu", f"{u}label.team,model&{ragged}&tz=Asia/Kathmandu"),
        ("status=502 by provider, month", f"{u}provider&status=502&{rng}"),
        ("error_code by served_model, month", f"{u}served_model&error_code=upstream_timeout&{rng}"),
        ("tag tree, label.team=search, month", f"/v1/analytics/tags/tree?label.team=search&{rng}"),
        ("raw slice: key x tag x model, day 5", f"{u}key,tag_level.1,model&from={day(5)}&to={day(6)}"),
    ]


# What the random questions are made of: gen_ledger.py's dimensions and values.
RANDOM_DIMS = ["key", "model", "served_model", "provider", "status", "label.team", "label.env", "label.feature",
               "label.tier", "label.customer_id", "tag", "tag_level.1", "tag_level.2", "tag_level.3"]
RANDOM_FILTERS = {"tag": ["US", "US/California", "customer", "customer/cus_0003", "exp/exp-05", "team/search",
                          "workflow", "production"],
                  "label.team": ["search", "growth", "ads"], "label.env": ["prod", "dev"],
                  "label.customer_id": ["cus_0001", "cus_0042"], "model": ["gpt-4o-mini", "claude-sonnet-4"],
                  "status": ["200", "429", "502"], "provider": ["openai", "anthropic"],
                  "served_model": ["gpt-4o"], "error_code": ["upstream_rate_limited"]}
ZONES = ["UTC", "UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide"]


def random_queries(month: str, n: int, seed: int) -> list[tuple[str, str]]:
    """`n` questions drawn with `seed`: 0-2 dimensions (+ a time unit half the time), 0-2 filters,
    a ragged millisecond range inside the month (or the whole month) and a zone."""
    import random
    from urllib.parse import urlencode

    from tallygate.analytics.query import parse_month

    rng = random.Random(seed)
    start, end = parse_month(month)
    out = []
    while len(out) < n:
        dims = rng.sample(RANDOM_DIMS, rng.randrange(0, 3))
        if sum(d.startswith("tag") for d in dims) > 1:
            continue
        if rng.random() < 0.5:
            dims.append("time." + rng.choice(["hour", "day", "day", "month"]))
        params = {"group_by": ",".join(dims)} if dims else {}
        for name in rng.sample(sorted(RANDOM_FILTERS), rng.randrange(0, 3)):
            params[name] = rng.choice(RANDOM_FILTERS[name])
        if rng.random() < 0.3:
            params["from"], params["to"] = str(start), str(end)
        else:
            lo = start + rng.randrange(end - start - 3_600_000)
            params["from"], params["to"] = str(lo), str(lo + rng.randrange(1, end - lo))
        params["tz"] = rng.choice(ZONES)
        tag_dim = next((d for d in dims if d.startswith("tag_level.")), None)
        if tag_dim and "tag" in params and params["tag"].count("/") + 1 > int(tag_dim.split(".")[1]):
            continue  # the grammar refuses a tag level above the tag filter
        out.append((f"random {len(out) + 1:02d}: {urlencode(params)[:80]}",
                    "/v1/analytics/usage?" + urlencode(params)))
    return out


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
        # budget refusals have no provider: nothing matches, and no roll-up holds error codes
        ("logs, provider+error_code (nothing)", "/v1/logs?provider=local&error_code=budget_exceeded&limit=50"),
        ("logs, error_code=upstream_timeout", "/v1/logs?error_code=upstream_timeout&limit=50"),
        ("logs, served_model+status (rare)", "/v1/logs?served_model=llama-3.1-8b&status=504&tag=US&limit=50"),
        ("logs, 15 minutes", f"/v1/logs?{window}&limit=50"),
        ("logs, limit=500", "/v1/logs?limit=500"),
    ]


WALK_LIMIT_MS = 1000.0  # a logs filter walked from its first page to its last


def walk_logs(base: str, key: str, logs: list[tuple[str, str]], max_pages: int, deadline: float) -> dict[str, dict]:
    """Each logs filter followed from its first page by `next_cursor` to its end (or `max_pages`):
    pages, rows and the wall time of the whole walk."""
    out = {}
    for name, first in logs:
        if "cursor=" in first or time.monotonic() > deadline:
            continue
        path, pages, rows, t = first, 0, 0, time.perf_counter()
        complete = False
        while pages < max_pages:
            status, body = get(base + path, key, 60)
            if status != 200:
                break
            doc = json.loads(body)
            pages, rows = pages + 1, rows + len(doc["data"])
            if not doc.get("next_cursor"):
                complete = True
                break
            path = f"{first}&cursor={doc['next_cursor']}"
        out[name] = {"pages": pages, "rows": rows, "complete": complete,
                     "total_ms": round((time.perf_counter() - t) * 1000, 1)}
    return out


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
    ap.add_argument("--columnar", default="/tmp/tallygate-bench/analytics.duckdb",
                    help="the DuckDB copy the gateway answers from (brought up to date before timing), "
                         "or 'off': roll-ups and the raw ledger only")
    ap.add_argument("--random", type=int, default=30, help="random questions to time as well")
    ap.add_argument("--seed", type=int, default=25)
    ap.add_argument("--no-logs", action="store_true", help="time the analytics questions only")
    ap.add_argument("--only", help="time only the questions whose name matches this regular expression")
    ap.add_argument("--walk-pages", type=int, default=40, help="walk each logs filter to its end, at most "
                    "this many pages (a filter with more matches is reported as not at the end)")
    args = ap.parse_args()
    copy_s = copied = None
    if args.columnar != "off":  # the copy the server reads, made complete first (its time is reported)
        from tallygate.analytics.columnar import DuckDBColumnar
        from tallygate.analytics.reader import AnalyticsStore
        from tallygate.store.db import open_engine

        t = time.perf_counter()
        engine, columnar = open_engine(args.db), DuckDBColumnar(args.columnar)
        copied = AnalyticsStore(engine, columnar=columnar).sync()
        rolled = columnar.settle(columnar.get_meta("watermark") or 0, budget_s=None)  # every whole day, now
        copy_s = time.perf_counter() - t
        columnar.close()
        engine.dispose()
        print(f"columnar copy: {copied:,} records copied, {rolled} more days rolled up, in {copy_s:.1f} s",
              file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.max_seconds
    key = "tg-bench-" + secrets.token_urlsafe(16)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    env["TALLYGATE_ADMIN_KEY"] = key
    env["TALLYGATE_ANALYTICS_COLUMNAR"] = args.columnar
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"tallygate-bench-analytics-{port}.log", "wb")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tallygate"), "serve", "--db", args.db,
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict] = {}
    untimed: list[str] = []  # questions --max-seconds left without a timed run
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
        ready_s = None
        if args.columnar != "off":  # the server brings the copy up to date in the background from start-up:
            while True:  # until then the roll-ups and the raw ledger answer (not what is timed here)
                _, body = get(base + "/v1/analytics/usage?group_by=tag,label.team&limit=1", key, 120)
                if json.loads(body)["plan"]["source"] == "columnar":
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("the columnar copy was not ready in time")
                time.sleep(0.2)
            ready_s = time.perf_counter() - t0
        status, body = get(base + "/v1/manage/apikey?limit=1", key, 30)
        key_id = json.loads(body)["data"][0]["id"]
        timed_paths = [(n, p, LIMIT_MS) for n, p in queries(args.month)]
        timed_paths += [(n, p, LIMIT_MS) for n, p in random_queries(args.month, args.random, args.seed)]
        logs = [] if args.no_logs else log_queries(args.month, key_id)
        timed_paths += [(n, p, LOGS_LIMIT_MS) for n, p in logs]
        if args.only:
            timed_paths = [t for t in timed_paths if re.search(args.only, t[0])]
            logs = [(n, p) for n, p in logs if re.search(args.only, n)]
        # the 100th page of an unfiltered and a filtered listing (the 99 before are not timed)
        for name, first in () if args.no_logs else (("logs, page 100", "/v1/logs?limit=50"),
                                                    ("logs, tag=US, page 100", "/v1/logs?tag=US&limit=50")):
            if args.only and not re.search(args.only, name):
                continue
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
            if not ms:  # --max-seconds is over: this one and the rest are not timed (a failure)
                untimed = [n for n, _, _ in timed_paths[[n for n, _, _ in timed_paths].index(name):]]
                break
            status, body = seen[-1]
            results[name] = {"path": path, "limit_ms": limit, "runs": len(ms), "status": status, "bytes": len(body),
                             "plan": describe(status, body), "http_median_ms": round(statistics.median(ms), 1),
                             "http_min_ms": round(min(ms), 1), "http_max_ms": round(max(ms), 1)}
        walks = {} if args.no_logs else walk_logs(base, key, logs, args.walk_pages, deadline)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    print(f"gateway start-up on this ledger: {startup_s:.1f} s"
          + ("" if ready_s is None else f"; its columnar copy answered {ready_s:.1f} s after the start"))
    print(f"{'question':50} {'median':>9} {'min':>7} {'max':>7} {'bytes':>9}  plan")
    failed = []
    for name, r in results.items():
        ok = r["http_median_ms"] <= r["limit_ms"] and r["http_max_ms"] <= MAX_MS and r["status"] == 200
        print(f"{name:50} {r['http_median_ms']:>7.1f}ms {r['http_min_ms']:>7.1f} {r['http_max_ms']:>7.1f} "
              f"{r['bytes']:>9,}  {r['plan']}{'' if ok else '  <-- over ' + str(int(r['limit_ms'])) + ' ms'}")
        if not ok:
            failed.append(name)
    if untimed:
        print(f"not timed (--max-seconds {args.max_seconds:.0f} s over): {len(untimed)}: {', '.join(untimed)}")
        failed.append(f"{len(untimed)} not timed")
    asked = [r for r in results.values() if r["limit_ms"] == LIMIT_MS]
    print(f"analytics questions: {len(asked)}; median over {LIMIT_MS:.0f} ms: "
          f"{sum(r['http_median_ms'] > LIMIT_MS for r in asked)}; median over {MAX_MS:.0f} ms: "
          f"{sum(r['http_median_ms'] > MAX_MS for r in asked)}; any run over {MAX_MS:.0f} ms: "
          f"{sum(r['http_max_ms'] > MAX_MS for r in asked)}; not a 200: {sum(r['status'] != 200 for r in asked)}")
    if walks:
        print(f"\nlogs walks to the end (at most {args.walk_pages} pages; the whole walk <= {WALK_LIMIT_MS:.0f} ms):")
        for name, w in walks.items():
            ok = w["complete"] and w["total_ms"] <= WALK_LIMIT_MS
            print(f"{name:50} {w['pages']:>5} pages {w['rows']:>6} rows {w['total_ms']:>9.1f} ms"
                  f"{'  (not at the end)' if not w['complete'] else '' if ok else '  <-- over'}")
            if w["complete"] and not ok:
                failed.append(f"walk: {name}")
    print(f"analytics median <= {LIMIT_MS:.0f} ms, logs <= {LOGS_LIMIT_MS:.0f} ms, none over {MAX_MS:.0f} ms, "
          "every answer a 200 (a refusal fails)"
          + (f" -- FAILED: {', '.join(failed)}" if failed else " -- ok"))
    print(f"speed reference: a 10M-step Python loop took {speed_reference():.2f} s on this machine just now")
    print(json.dumps({"db": args.db, "month": args.month, "columnar": args.columnar, "copy_s": copy_s,
                      "copied": copied, "startup_s": round(startup_s, 2),
                      "columnar_ready_s": None if ready_s is None else round(ready_s, 2), "results": results,
                      "walks": walks, "untimed": untimed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
