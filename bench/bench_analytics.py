#!/usr/bin/env python3
"""Analytics query benchmark over a ledger filled by bench/gen_ledger.py.

    .venv/bin/python bench/gen_ledger.py                       # once: 10M records (several minutes)
    .venv/bin/python bench/bench_analytics.py                  # about a minute

Starts `tallygate serve` on the database (a free loopback port, a random admin key), then times
each query through the HTTP API: one warm-up, then `--runs` runs; it reports the median, min
and max, and the same queries called in-process (`Analytics`, no HTTP). The four required
queries cover the generated month: group by a label, group by `tag_level.2`, the tag tree, and
the month's invoice export. The other rows show what other shapes cost (a day-aligned range
reads the day roll-ups; tag x label reads the raw ledger, so it is timed over one hour).
It prints a table and one JSON line, and exits 1 when a required median is 300 ms or more.
The server is stopped by PID (SIGTERM, then SIGKILL), also on errors; `--max-seconds` bounds
the whole run.
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
import urllib.request
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_MS = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queries(month: str) -> list[tuple[str, bool, str]]:
    """(name, required, path) for each timed question."""
    from tallygate.analytics.query import parse_month

    start, end = parse_month(month)
    first = time.strftime("%Y-%m-%d", time.gmtime(start / 1000))
    nxt = time.strftime("%Y-%m-%d", time.gmtime(end / 1000))
    second = time.strftime("%Y-%m-%d", time.gmtime(start / 1000 + 86400))
    rng = f"from={first}&to={nxt}"
    hour = f"from={start + 10 * 3_600_000}&to={start + 11 * 3_600_000}"
    return [
        ("group by label.team (month)", True, f"/v1/analytics/usage?group_by=label.team&{rng}"),
        ("group by tag_level.2 (month)", True, f"/v1/analytics/usage?group_by=tag_level.2&{rng}"),
        ("tag tree (month)", True, f"/v1/analytics/tags/tree?{rng}"),
        ("export by label.customer_id, csv", True,
         f"/v1/analytics/export?month={month}&group_by=label.customer_id&markup=0.20&format=csv"),
        ("group by label.team, labels=current", False,
         f"/v1/analytics/usage?group_by=label.team&labels=current&{rng}"),
        ("group by label.customer_id,model", False, f"/v1/analytics/usage?group_by=label.customer_id,model&{rng}"),
        ("group by time.day,label.env", False, f"/v1/analytics/usage?group_by=time.day,label.env&{rng}"),
        ("tag subtree tag=customer by tag_level.2", False,
         f"/v1/analytics/usage?group_by=tag_level.2&tag=customer&{rng}"),
        ("group by label.team, 29 days (day roll-ups)", False,
         f"/v1/analytics/usage?group_by=label.team&from={second}&to={nxt}"),
        ("tag_level.2, 29 days (day roll-ups)", False,
         f"/v1/analytics/usage?group_by=tag_level.2&from={second}&to={nxt}"),
        ("tag x label.team, one hour (raw ledger)", False,
         f"/v1/analytics/usage?group_by=label.team&tag=team&{hour}"),
    ]


def get(url: str, key: str, timeout: float) -> tuple[int, int]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, len(resp.read())


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


def direct_calls(db: str, month: str) -> dict:
    """The required questions called in-process, without HTTP."""
    from tallygate.analytics.query import Query, parse_group_by, parse_month
    from tallygate.analytics.reader import AnalyticsStore
    from tallygate.analytics.service import Analytics
    from tallygate.store.db import open_engine

    analytics = Analytics(AnalyticsStore(open_engine(db)))
    start, end = parse_month(month)
    return {
        "group by label.team (month)": lambda: analytics.usage(Query(parse_group_by("label.team"),
                                                                     from_ms=start, to_ms=end)),
        "group by tag_level.2 (month)": lambda: analytics.usage(Query(parse_group_by("tag_level.2"),
                                                                      from_ms=start, to_ms=end)),
        "tag tree (month)": lambda: analytics.tree(None, None, Query(from_ms=start, to_ms=end)),
        "export by label.customer_id, csv": lambda: analytics.export(month, start, end,
                                                                    parse_group_by("label.customer_id"),
                                                                    Decimal("0.20")),
    }


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
        for name, required, path in queries(args.month):
            sizes = []

            def call(path: str = path, sizes: list = sizes) -> None:
                status, size = get(base + path, key, 120)
                assert status == 200, (status, path)
                sizes.append(size)

            print(f"  {name} ...", file=sys.stderr, flush=True)
            ms = timed(call, args.runs, deadline)
            results[name] = {"required": required, "path": path, "runs": len(ms), "bytes": sizes[-1],
                             "http_median_ms": round(statistics.median(ms), 1), "http_min_ms": round(min(ms), 1),
                             "http_max_ms": round(max(ms), 1)}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    for name, fn in direct_calls(args.db, args.month).items():
        ms = timed(fn, args.runs, deadline + 120)
        results[name]["direct_median_ms"] = round(statistics.median(ms), 1)

    print(f"gateway start-up on this ledger: {startup_s:.1f} s")
    print(f"{'query':46} {'HTTP median':>11} {'min':>7} {'max':>7} {'direct':>7} {'bytes':>9}")
    failed = []
    for name, r in results.items():
        mark = " *" if r["required"] else "  "
        print(f"{name + mark:46} {r['http_median_ms']:>9.1f}ms {r['http_min_ms']:>7.1f} {r['http_max_ms']:>7.1f} "
              f"{r.get('direct_median_ms', float('nan')):>7.1f} {r['bytes']:>9,}")
        if r["required"] and r["http_median_ms"] >= LIMIT_MS:
            failed.append(name)
    print(f"* required: median under {LIMIT_MS:.0f} ms" + (f" -- FAILED: {', '.join(failed)}" if failed else " -- ok"))
    print(json.dumps({"db": args.db, "month": args.month, "startup_s": round(startup_s, 2), "results": results}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
