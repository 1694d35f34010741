#!/usr/bin/env python3
"""Dashboard pages in headless Chromium: time from navigation to the data rendered, and API calls.

    .venv/bin/python bench/gen_ledger.py --records 10000000         # the ledger (once; ~8 min)
    .venv/bin/python bench/bench_dashboard.py --db sqlite:////tmp/tallygate-bench/ledger.db

Starts `tallygate serve` on the ledger (or uses `--url` of a running gateway with `--key`), signs
in once, then loads every page `--runs` times as a fresh navigation. A page marks
`performance.mark("tg:data-rendered")` when its data is on screen; the figure is that mark's
time since navigation start. Prints one JSON line per page (median, max, API calls per view)
and a summary; `--shots DIR` also writes a screenshot of each page.

The On call pages read the last hours before the browser's clock: on a ledger of a past month they
show empty windows. `--now 2026-11-28T15:25Z` moves their tab's `Date.now()` there (an init script;
`performance.now()`, which times the page, is untouched), so they read the ledger's busy hours; the
other pages keep the real clock. The server's clock is not moved: its columnar copy holds the whole
window, where at the real now the last minutes come from the ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.dashboard.browser import launch  # noqa: E402

PAGES = [
    ("overview", "/dashboard/overview?range=last-month"),
    ("overview-30d", "/dashboard/overview?range=30d"),
    # On call: minutes of the last hours and the movers, against the same hours of previous days
    # (needs a ledger that runs up to now: gen_ledger.py --month <this month> --days <days so far>).
    ("oncall", "/dashboard/oncall"),
    ("oncall-3d", "/dashboard/oncall?days=3"),
    ("oncall-6h-7d", "/dashboard/oncall?hours=6&days=7"),
    ("oncall-24h", "/dashboard/oncall?hours=24"),
    ("explore-label", "/dashboard/explore?range=last-month&group=label.team"),
    ("explore-tags", "/dashboard/explore?range=last-month&group=tag_level.2&metric=requests"),
    ("explore-stacked", "/dashboard/explore?range=last-month&group=time.day&group2=model"),
    # Tags crossed with models: no roll-up holds it, so the API scans the raw ledger (slow at 10M).
    ("explore-tag-by-model", "/dashboard/explore?range=last-month&group=model&tag=team"),
    ("tree", "/dashboard/tree?range=last-month"),
    ("tree-root", "/dashboard/tree?range=last-month&root=team"),
    ("keys", "/dashboard/keys"),
    ("logs", "/dashboard/logs?range=last-month"),
    ("logs-tag", "/dashboard/logs?range=last-month&tag=team/search"),
    ("invoices", "/dashboard/invoices?group=label.customer_id&markup=0.2"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(db: str, key: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "TALLYGATE_ADMIN_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "tallygate", "serve", "--db", db, "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/dashboard/", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the gateway did not start")


def measure(url: str, key: str, runs: int, shots: Path | None, month: str | None,
            page_timeout_s: float, now_ms: int | None = None) -> list[dict]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.goto(url + "/dashboard/")
        page.fill("#signin-key", key)
        page.click("button[type=submit]")
        page.wait_for_selector("nav.sidebar")
        calls: list[str] = []
        page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
        main = page
        oncall = page
        if now_ms is not None:  # On call in a tab (same session) whose clock runs on from --now
            oncall = context.new_page()
            oncall.add_init_script(f"(() => {{ const off = {now_ms} - Date.now(); const real = Date.now; "
                                   "Date.now = () => real() + off; })()")
            oncall.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
        for name, path in PAGES:
            page = oncall if path.startswith("/dashboard/oncall") else main
            if month and "invoices" in path:
                path += f"&month={month}"
            times, counts = [], []
            for _ in range(runs):
                calls.clear()
                page.goto(url + path)
                try:
                    page.wait_for_selector("body[data-rendered]:not([data-rendered=signin])", state="attached",
                                           timeout=page_timeout_s * 1000)
                except PlaywrightTimeout:
                    slow = page.query_selector(".loading.slow") is not None
                    row = {"page": name, "path": path, "timed_out_s": page_timeout_s, "slow_notice_shown": slow}
                    print(json.dumps(row), flush=True)
                    results.append(row)
                    break
                t = page.evaluate("performance.getEntriesByName('tg:data-rendered')[0].startTime")
                times.append(t)
                counts.append(len([c for c in calls if "/v1/dashboard/session" not in c]))
            if not times:
                continue
            if shots is not None:
                page.screenshot(path=str(shots / f"bench-{name}.png"), full_page=False)
            row = {"page": name, "path": path, "median_ms": round(statistics.median(times), 1),
                   "max_ms": round(max(times), 1), "api_calls": max(counts), "runs": runs}
            print(json.dumps(row), flush=True)
            results.append(row)
        browser.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="sqlite:////tmp/tallygate-bench/ledger.db")
    ap.add_argument("--url", help="a running gateway instead of starting one on --db")
    ap.add_argument("--key", default="tg-bench-admin", help="a manage: read key (the admin key when starting one)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--month", default="2026-11", help="the invoice month (the month gen_ledger.py filled)")
    ap.add_argument("--shots", type=Path, help="write a screenshot of each page here")
    ap.add_argument("--page-timeout", type=float, default=20, help="seconds before a page counts as timed out")
    ap.add_argument("--now", help="the browser's clock for the pages (ISO 8601, e.g. 2026-11-28T15:25Z): "
                                  "the On call pages then read the ledger's month")
    args = ap.parse_args()
    now_ms = None
    if args.now:
        from datetime import datetime
        now_ms = int(datetime.fromisoformat(args.now.replace("Z", "+00:00")).timestamp() * 1000)
    proc = None
    url = args.url
    if url is None:
        proc, url = start_gateway(args.db, args.key)
    try:
        if args.shots:
            args.shots.mkdir(parents=True, exist_ok=True)
        rows = measure(url, args.key, args.runs, args.shots, args.month, args.page_timeout, now_ms)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    timed = [r for r in rows if "median_ms" in r]
    worst = max(timed, key=lambda r: r["median_ms"])
    print(json.dumps({"pages": len(rows), "slowest_page": worst["page"], "slowest_median_ms": worst["median_ms"],
                      "medians_under_1s": sum(r["median_ms"] < 1000 for r in timed),
                      "timed_out": [r["page"] for r in rows if "timed_out_s" in r],
                      "max_api_calls_per_view": max(r["api_calls"] for r in timed)}))


if __name__ == "__main__":
    main()
