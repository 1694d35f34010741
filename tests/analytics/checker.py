"""An independent checker of the analytics API: random questions across its whole grammar, asked
over HTTP, each compared with a direct computation over the raw ledger.

The questions are drawn in `questions.py`; the reference (`oracle.py`) uses none of the analytics
code: plain SQL selects each question's records, and Python groups them. Costs
are compared as exact decimals, percentiles as the exact nearest-rank value (or, from a
histogram, its bucket's reported value). A 400 for a question the grammar allows, a 500, or any
difference is a failure.

    .venv/bin/python -m tests.analytics.checker --url http://127.0.0.1:8400 --db sqlite:///... -n 300
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine

from tests.analytics import questions
from tests.analytics.oracle import Group, Oracle, prefixes, select, under, usage_groups

PICO = Decimal(10) ** 12


EDGES_US = [round(1000 * 2 ** (i / 3)) for i in range(61)]  # the documented histogram (docs/analytics.md)


def hist_ms(us: int) -> float:
    """What a percentile read from the histogram reports for a true value of `us`."""
    i = next((j for j, edge in enumerate(EDGES_US) if us < edge), len(EDGES_US))
    if i == 0:
        return 0.5
    if i >= len(EDGES_US):
        return EDGES_US[-1] / 1000
    return round(math.sqrt(EDGES_US[i - 1] * EDGES_US[i]) / 1000, 3)


def same_metrics(got: dict[str, Any], want: dict[str, Any], exact: bool) -> list[str]:
    """The differences between an answer's metrics and the oracle's."""
    bad = []
    for name in ("requests", "errors", "error_rate", "input_tokens", "output_tokens", "cached_tokens",
                 "cache_write_tokens", "reasoning_tokens", "feedback"):
        if got.get(name) != want[name]:
            bad.append(f"{name}: got {got.get(name)!r}, want {want[name]!r}")
    if Decimal(got["cost"]) * PICO != want["cost_pico"]:
        bad.append(f"cost: got {got['cost']}, want {Decimal(want['cost_pico']) / PICO}")
    for field, wanted in (("latency_ms", want["latency_us"]), ("ttft_ms", want["ttft_us"])):
        for p, us in wanted.items():
            value = got[field][p]
            if us is None:
                ok = value is None
            else:
                ok = value == us / 1000 or (not exact and value == hist_ms(us))
            if not ok:
                bad.append(f"{field}.{p}: got {value}, want {None if us is None else us / 1000} "
                           f"({'exact' if exact else f'histogram {hist_ms(us)}'})")
    return bad


def check_usage(get: Callable[[str], tuple[int, Any]], oracle: Oracle, p: dict[str, str]) -> list[str]:
    status, doc = get("/v1/analytics/usage?" + urlencode(p))
    if status != 200:
        return [f"HTTP {status}: {doc}"]
    tz = p.get("tz", "UTC")
    recs = select(oracle, p, tz)
    dims = p.get("group_by", "").split(",") if p.get("group_by") else []
    groups = usage_groups(recs, p, tz)
    total = Group()
    total.recs = recs
    exact = doc["plan"]["percentiles"] == "exact"
    bad = [f"totals {m}" for m in same_metrics(doc["totals"], total.metrics(), exact)]
    want = {k: (start, g.metrics()) for k, (start, g) in groups.items()}  # no row without a record

    def order(item: tuple[tuple[Any, ...], tuple[int, dict[str, Any]]]) -> tuple[Any, ...]:
        key, (start, m) = item
        rest = tuple("" if v is None else str(v) for d, v in zip(dims, key, strict=True) if not d.startswith("time."))
        return (start, -m["cost_pico"], -m["requests"], rest)

    ordered = sorted(want.items(), key=order)
    limit = int(p.get("limit", 1000))
    if doc["row_count"] != len(ordered):
        bad.append(f"row_count: got {doc['row_count']}, want {len(ordered)}")
    if doc["truncated"] != (len(ordered) > limit):
        bad.append(f"truncated: got {doc['truncated']}")
    if doc["overlapping"] != any(d == "tag" or d.startswith("tag_level.") for d in dims):
        bad.append("overlapping")
    got_keys = [tuple(row["group"].get(d) for d in dims) for row in doc["data"]]
    want_keys = [k for k, _ in ordered[:limit]]
    if got_keys != want_keys:
        missing = set(want_keys) - set(got_keys)
        extra = set(got_keys) - set(want_keys)
        bad.append(f"rows: {len(got_keys)} got, {len(want_keys)} wanted; missing {sorted(map(str, missing))[:4]}, "
                   f"extra {sorted(map(str, extra))[:4]}" if missing or extra else "rows in another order")
    for row, key in zip(doc["data"], got_keys, strict=True):
        if key in want:
            bad += [f"row {key} {m}" for m in same_metrics(row, want[key][1], exact)]
    return bad


def check_tree(get: Callable[[str], tuple[int, Any]], oracle: Oracle, p: dict[str, str]) -> list[str]:
    status, doc = get("/v1/analytics/tags/tree?" + urlencode(p))
    if status != 200:
        return [f"HTTP {status}: {doc}"]
    tz = p["tz"]
    root = p.get("root")
    recs = select(oracle, {k: v for k, v in p.items() if k not in ("root", "depth")}, tz)
    max_depth = 8 if "depth" not in p else (root.count("/") + 1 if root else 0) + int(p["depth"])
    nodes: dict[str, Group] = {}
    for r in recs:
        for pre in dict.fromkeys(x for t in r.tags for x in prefixes(t)):
            if (root is None or under(pre, root)) and pre.count("/") + 1 <= max_depth:
                nodes.setdefault(pre, Group()).recs.append(r)
    metrics = {t: g.metrics() for t, g in nodes.items()}
    children: dict[str | None, list[str]] = {}
    for t in sorted(nodes, key=lambda t: (-metrics[t]["cost_pico"], t)):
        parent = t.rpartition("/")[0]
        children.setdefault(parent if t != root and parent in nodes else None, []).append(t)
    exact = doc["plan"]["percentiles"] == "exact"
    bad: list[str] = []

    def walk(got: list[dict[str, Any]], want: list[str], path: str) -> None:
        if [n["tag"] for n in got] != want:
            bad.append(f"nodes under {path or '(top)'}: got {[n['tag'] for n in got][:6]}, want {want[:6]}")
            return
        for node in got:
            bad.extend(f"node {node['tag']} {m}" for m in same_metrics(node, metrics[node["tag"]], exact))
            walk(node["children"], children.get(node["tag"], []), node["tag"])

    walk(doc["data"], children.get(None, []), "")
    total = Group()
    total.recs = [r for r in recs if r.tags] if root is None else nodes.get(root, Group()).recs
    bad += [f"totals {m}" for m in same_metrics(doc["totals"], total.metrics(), exact)]
    return bad


def check_logs(get: Callable[[str], tuple[int, Any]], oracle: Oracle, p: dict[str, str],
               max_rows: int = 5000) -> list[str]:
    """The whole walk of a filter (cursor after cursor) against the oracle's records, newest first."""
    tz = p["tz"]
    recs = select(oracle, {k: v for k, v in p.items() if k != "limit"}, tz)
    if len(recs) > max_rows:
        return []  # a walk this long is the benchmark's job
    want = [r.id for r in sorted(recs, key=lambda r: (r.created_at, r.id), reverse=True)]
    got: list[str] = []
    cursor = None
    for _ in range(10_000):
        status, doc = get("/v1/logs?" + urlencode({**p, **({"cursor": cursor} if cursor else {})}))
        if status != 200:
            return [f"HTTP {status}: {doc}"]
        got += [row["id"] for row in doc["data"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        return [f"logs: {len(got)} ids, want {len(want)}; first difference at {at}"]
    return []


def check_export(get: Callable[[str], tuple[int, Any]], oracle: Oracle, p: dict[str, str]) -> list[str]:
    status, doc = get("/v1/analytics/export?" + urlencode(p))
    if status != 200:
        return [f"HTTP {status}: {doc}"]
    tz = p["tz"]
    year, month = int(p["month"][:4]), int(p["month"][5:])
    z = ZoneInfo(tz)
    lo = int(dt.datetime(year, month, 1, tzinfo=z).timestamp() * 1000)
    hi = int(dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=z).timestamp() * 1000)
    q = {"from": str(lo), "to": str(hi), "tz": tz, **({"group_by": p["group_by"]} if "group_by" in p else {}),
         **({"labels": p["labels"]} if "labels" in p else {})}
    groups = usage_groups(select(oracle, q, tz), q, tz)
    dims = p["group_by"].split(",") if "group_by" in p else []
    want = sorted(((k, g.metrics()) for k, (_, g) in groups.items()),
                  key=lambda kv: tuple((v is None, str(v)) for v in kv[0]))
    bad = []
    got = [(tuple(line["group"][d] for d in dims), line) for line in doc["lines"]]
    if [k for k, _ in got] != [k for k, _ in want]:
        return [f"invoice lines: got {[k for k, _ in got][:5]}, want {[k for k, _ in want][:5]}"]
    rate = Decimal(p["markup"])
    total_pico = sum(m["cost_pico"] for _, m in want)
    cents = int((Decimal(total_pico) * (1 + rate) / PICO * 100).to_integral_value(ROUND_HALF_EVEN))
    for (key, line), (_, m) in zip(got, want, strict=True):
        if line["requests"] != m["requests"] or Decimal(line["cost"]) * PICO != m["cost_pico"]:
            bad.append(f"line {key}: {line['requests']} requests ${line['cost']}, want {m['requests']} "
                       f"${Decimal(m['cost_pico']) / PICO}")
        exact = Decimal(m["cost_pico"]) * (1 + rate) / PICO
        due = Decimal(line["amount_due"])
        if not exact.quantize(Decimal("0.01"), ROUND_FLOOR) <= due <= exact.quantize(Decimal("0.01"), ROUND_FLOOR) \
                + Decimal("0.01"):
            bad.append(f"line {key}: amount_due {due} for {exact}")
    if Decimal(doc["totals"]["cost"]) * PICO != total_pico or Decimal(doc["totals"]["amount_due"]) * 100 != cents:
        bad.append(f"invoice totals {doc['totals']['cost']} {doc['totals']['amount_due']}, want "
                   f"{Decimal(total_pico) / PICO} {Decimal(cents) / 100}")
    if sum(Decimal(line["amount_due"]) for _, line in got) * 100 != cents:
        bad.append("invoice lines do not add up to the total due")
    return bad


def check_minutes(get: Callable[[str], tuple[int, Any]], oracle: Oracle, p: dict[str, str]) -> list[str]:
    status, doc = get("/v1/analytics/minutes?" + urlencode(p))
    if status != 200:
        return [f"HTTP {status}: {doc}"]
    recs = select(oracle, p, p["tz"])
    want: dict[int, list[int]] = {}
    for r in recs:
        m = want.setdefault(r.created_at - r.created_at % 60_000, [0, 0, 0])
        m[0] += 1
        m[1] += r.status >= 400
        m[2] += r.cost
    got = {row["minute"]: [row["requests"], row["errors"], int(Decimal(row["cost"]) * PICO)] for row in doc["data"]
           if row["requests"]}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()) if False else
                      [m for m in set(got) | set(want) if got.get(m) != want.get(m)])
        return [f"minutes differ at {diff[:3]}: got {[got.get(m) for m in diff[:3]]}, want "
                f"{[want.get(m) for m in diff[:3]]}"]
    return []


CHECKS: dict[str, tuple[Callable[[random.Random, questions.World], dict[str, str]],
                        Callable[[Callable[[str], tuple[int, Any]], Oracle, dict[str, str]], list[str]]]] = {
    "usage": (questions.usage_question, check_usage), "tree": (questions.tree_question, check_tree),
    "logs": (questions.logs_question, check_logs), "export": (questions.export_question, check_export),
    "minutes": (questions.minutes_question, check_minutes)}
WEIGHTS = {"usage": 12, "tree": 3, "logs": 2, "export": 1, "minutes": 1}


def http_get(base_url: str, key: str) -> Callable[[str], tuple[int, Any]]:
    def get(path: str) -> tuple[int, Any]:
        req = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")[:500]
    return get


def run(get: Callable[[str], tuple[int, Any]], engine: Engine, n: int, seed: int,
        kinds: dict[str, int] = WEIGHTS, report: Callable[[str], None] | None = None,
        cache: bool = True, skip: int = 0) -> list[str]:
    """Ask `n` random questions; the failures, each with its question."""
    rng = random.Random(seed)
    oracle = Oracle(engine, cache)
    world = questions.World.of(engine, rng)
    names = list(kinds)
    failures = []
    for i in range(n):
        kind = rng.choices(names, [kinds[k] for k in names])[0]
        make, check = CHECKS[kind]
        p = make(rng, world)
        if i < skip:
            continue
        t = time.perf_counter()
        try:
            bad = check(get, oracle, p)
        except (TimeoutError, OSError) as err:
            bad = [f"no answer: {err!r}"]
        if report is not None:
            report(f"{i:4d} {kind:7s} {time.perf_counter() - t:6.2f}s {'FAIL' if bad else 'ok  '} {urlencode(p)}")
        if bad:
            failures.append(f"{kind} {urlencode(p)}\n    " + "\n    ".join(bad[:6]))
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", default="tg-admin-demo")
    ap.add_argument("--db", required=True)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip", type=int, default=0, help="draw but do not ask the first N questions")
    ap.add_argument("--sql", action="store_true", help="filter each question in SQL instead of a cached ledger")
    ap.add_argument("--only", default=None, help="comma-separated kinds: " + ", ".join(CHECKS))
    args = ap.parse_args()
    kinds = {k: WEIGHTS[k] for k in args.only.split(",")} if args.only else WEIGHTS
    failures = run(http_get(args.url, args.key), create_engine(args.db), args.n, args.seed, kinds,
                   report=lambda line: print(line, file=sys.stderr, flush=True), cache=not args.sql,
                   skip=args.skip)
    for f in failures:
        print(f)
    print(f"{len(failures)} of {args.n} questions failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
