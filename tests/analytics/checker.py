"""An independent checker of the analytics API: random questions across its whole grammar, asked
over HTTP, each compared with a direct computation over the raw ledger.

The oracle (`Oracle`) uses none of the analytics code: plain SQL over `requests`, `label_sets`,
`api_keys` and `feedback` selects each question's records, and Python with `zoneinfo` groups
them (local hours, days and months, tags cut to levels, labels as recorded or current). Costs
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
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, text

PICO = Decimal(10) ** 12
# every kind of zone: UTC, whole hours with DST, half and quarter hours (with and without DST),
# a 30-minute DST shift, +12:45/+13:45, a southern-hemisphere DST
ZONES = ["UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Chatham",
         "America/St_Johns", "Australia/Lord_Howe", "Europe/Berlin", "Australia/Adelaide"]
PLAIN = {"key": "key_id", "model": "requested_model", "served_model": "served_model", "provider": "provider",
         "status": "status"}
EDGES_US = [round(1000 * 2 ** (i / 3)) for i in range(61)]  # the documented histogram (docs/analytics.md)


# ----------------------------------------------------------------------------------- records
@dataclass(slots=True)
class Rec:
    id: str
    created_at: int
    key_id: str | None
    labels: dict[str, Any]
    current: dict[str, Any]
    tags: list[str]
    model: str | None
    served_model: str | None
    provider: str | None
    status: int
    error_code: str | None
    tokens: tuple[int, int, int, int, int]
    cost: int
    latency_us: int
    ttft_us: int | None
    score: int | None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class Oracle:
    """Each question's records by plain SQL, grouped here. With `cache`, the whole ledger is read
    once (again whenever its count, feedback or keys change) and filtered here: much faster for
    hundreds of questions over hundreds of thousands of records."""

    _SQL = ("SELECT r.id, r.created_at, r.key_id, r.labels, s.labels, k.labels, r.tags, r.requested_model, "
            "r.served_model, r.provider, r.status, r.error_code, r.input_tokens, r.output_tokens, "
            "r.cached_tokens, r.cache_write_tokens, r.reasoning_tokens, r.cost_pico, r.latency_us, r.ttft_us, "
            "f.score_milli FROM requests r LEFT JOIN label_sets s ON s.id = r.label_set "
            "LEFT JOIN api_keys k ON k.id = r.key_id LEFT JOIN feedback f ON f.request_id = r.id")

    def __init__(self, engine: Engine, cache: bool = False) -> None:
        self.engine = engine
        self.cache = cache
        self._seen: tuple[Any, ...] | None = None
        self._all: list[Rec] = []
        self._times: list[int] = []

    def _read(self, sql: str, params: dict[str, Any]) -> list[Rec]:
        out = []
        with self.engine.connect() as conn:
            for row in conn.execute(text(sql), params):
                own = _json(row[3]) if row[3] is not None else _json(row[4])
                out.append(Rec(row[0], int(row[1]), row[2], own or {}, _json(row[5]) or {},
                               list(dict.fromkeys(_json(row[6]) or [])), row[7], row[8], row[9], int(row[10]),
                               row[11], tuple(int(x) for x in row[12:17]), int(row[17]),  # type: ignore[arg-type]
                               int(row[18]), None if row[19] is None else int(row[19]),
                               None if row[20] is None else int(row[20])))
        return out

    def records(self, lo: int | None, hi: int | None, where: dict[str, Any]) -> list[Rec]:
        if self.cache:
            return self._cached(lo, hi, where)
        conds, params = [], {}
        if lo is not None:
            conds.append("r.created_at >= :lo")
            params["lo"] = lo
        if hi is not None:
            conds.append("r.created_at < :hi")
            params["hi"] = hi
        for col, value in where.items():
            conds.append(f"r.{col} = :{col}")
            params[col] = value
        return self._read(self._SQL + (" WHERE " + " AND ".join(conds) if conds else ""), params)

    def _cached(self, lo: int | None, hi: int | None, where: dict[str, Any]) -> list[Rec]:
        with self.engine.connect() as conn:
            seen = (*conn.execute(text("SELECT count(*), max(created_at) FROM requests")).one(),
                    *conn.execute(text("SELECT count(*), max(updated_at) FROM feedback")).one(),
                    *conn.execute(text("SELECT count(*), max(updated_at) FROM api_keys")).one())
        if seen != self._seen:
            self._all = sorted(self._read(self._SQL, {}), key=lambda r: r.created_at)
            self._times = [r.created_at for r in self._all]
            self._seen = seen
        a = 0 if lo is None else bisect_left(self._times, lo)
        b = len(self._all) if hi is None else bisect_left(self._times, hi)
        attr = {"key_id": "key_id", "requested_model": "model", "served_model": "served_model",
                "provider": "provider", "status": "status", "error_code": "error_code"}
        tests = [(attr[col], value) for col, value in where.items()]
        return [r for r in self._all[a:b] if all(getattr(r, name) == value for name, value in tests)]


def under(tag: str, root: str) -> bool:
    return tag == root or tag.startswith(root + "/")


def cut(tag: str, n: int) -> str:
    return "/".join(tag.split("/")[:n])


def prefixes(tag: str) -> list[str]:
    parts = tag.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def time_label(ms: int, unit: str, tz: str) -> tuple[int, str]:
    """(bucket start ms, label as the API writes it) of the local hour, day or month holding `ms`.

    A local hour is the stretch of one wall-clock hour at one UTC offset: it starts at :00, or at a
    daylight-saving change that falls inside the wall-clock hour (30-minute shifts); a local day or
    month starts at local midnight (or, when a change skips it, where the clock jumps)."""
    z = ZoneInfo(tz)
    local = dt.datetime.fromtimestamp(ms / 1000, z)
    if unit == "hour":
        wall = local.replace(minute=0, second=0, microsecond=0)
        found = [int(w.timestamp() * 1000) for w in (wall.replace(fold=0), wall.replace(fold=1))
                 if w.utcoffset() == local.utcoffset()]
        start_ms = found[0] if found else ms + 1
        if start_ms > ms or dt.datetime.fromtimestamp(start_ms / 1000, z).utcoffset() != local.utcoffset():
            start_ms = ms - ms % 60_000  # the change: back minute by minute while the offset holds
            while dt.datetime.fromtimestamp((start_ms - 60_000) / 1000, z).utcoffset() == local.utcoffset():
                start_ms -= 60_000
        start = dt.datetime.fromtimestamp(start_ms / 1000, z)
        return start_ms, start.strftime("%Y-%m-%dT%H:00:00Z") if tz == "UTC" else start.isoformat()
    day = local.day if unit == "day" else 1
    start = dt.datetime(local.year, local.month, day, tzinfo=z)
    return int(start.timestamp() * 1000), start.strftime("%Y-%m-%d" if unit == "day" else "%Y-%m")


def hist_ms(us: int) -> float:
    """What a percentile read from the histogram reports for a true value of `us`."""
    i = next((j for j, edge in enumerate(EDGES_US) if us < edge), len(EDGES_US))
    if i == 0:
        return 0.5
    if i >= len(EDGES_US):
        return EDGES_US[-1] / 1000
    return round(math.sqrt(EDGES_US[i - 1] * EDGES_US[i]) / 1000, 3)


def nearest_rank(values: list[int], q: float) -> int | None:
    if not values:
        return None
    return sorted(values)[max(1, math.ceil(q * len(values) - 1e-9)) - 1]


class Group:
    def __init__(self) -> None:
        self.recs: list[Rec] = []

    def metrics(self) -> dict[str, Any]:
        rs = self.recs
        n = len(rs)
        errors = sum(r.status >= 400 for r in rs)
        fb = [r.score for r in rs if r.score is not None]
        return {"requests": n, "errors": errors, "error_rate": round(errors / n, 6) if n else 0.0,
                **{name: sum(r.tokens[i] for r in rs) for i, name in enumerate(
                    ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens"))},
                "cost_pico": sum(r.cost for r in rs),
                "latency_us": {p: nearest_rank([r.latency_us for r in rs], q)
                               for p, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
                "ttft_us": {"p50": nearest_rank([r.ttft_us for r in rs if r.ttft_us is not None], 0.5)},
                "feedback": {"count": len(fb), "mean_score": round(sum(fb) / len(fb) / 1000, 4) if fb else None}}


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


# ---------------------------------------------------------------------------------- questions
@dataclass(slots=True)
class World:
    """What the ledger holds, to draw questions from: its time span and some of its values."""

    lo: int  # the bulk of the records (1st to 99th percentile of their times)
    hi: int
    ends: list[int]  # the first and last records' times (outliers: late records, the last minutes)
    keys: list[str]
    models: list[str]
    served: list[str]
    providers: list[str]
    statuses: list[int]
    codes: list[str]
    labels: dict[str, list[str]]
    tags: list[str]

    @classmethod
    def of(cls, engine: Engine, rng: random.Random) -> World:
        with engine.connect() as conn:
            first, last, n = conn.execute(text("SELECT min(created_at), max(created_at), count(*) FROM requests")).one()

            def nth(i: int) -> int:
                return int(conn.execute(text("SELECT created_at FROM requests ORDER BY created_at "
                                             f"LIMIT 1 OFFSET {int(i)}")).scalar_one())
            lo, hi = nth(n // 100), nth(n * 99 // 100)

            def distinct(col: str) -> list[Any]:
                return sorted(v for (v,) in conn.execute(text(f"SELECT DISTINCT {col} FROM requests"))
                              if v is not None)
            labels: dict[str, set[str]] = {}
            for (raw,) in conn.execute(text("SELECT labels FROM label_sets")):
                for k, v in (_json(raw) or {}).items():
                    labels.setdefault(k, set()).add(str(v))
            tags: set[str] = set()
            for (raw,) in conn.execute(text("SELECT tags FROM requests WHERE created_at % 89 = 0 LIMIT 4000")):
                for t in _json(raw) or []:
                    tags.update(prefixes(t))
            return cls(lo, hi + 1, [int(first), int(last)], distinct("key_id"), distinct("requested_model"),
                       distinct("served_model"), distinct("provider"), distinct("status"), distinct("error_code"),
                       {k: sorted(v) for k, v in labels.items()}, sorted(tags))


DIMS = ["key", "model", "served_model", "provider", "status", "label.{label}", "tag", "tag_level.{n}"]


def _when(rng: random.Random, ms: int, tz: str) -> str:
    """An instant written as the API takes it: epoch ms, ISO with Z or an offset, or local (in tz)."""
    kind = rng.randrange(4)
    if kind == 0:
        return str(ms)
    if kind == 1:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    local = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
    if kind == 2:
        return local.isoformat(timespec="milliseconds")
    if local.fold or local.replace(fold=1).utcoffset() != local.utcoffset():  # ambiguous wall time: keep it exact
        return local.isoformat(timespec="milliseconds")
    return local.replace(tzinfo=None).isoformat(timespec="milliseconds")  # no offset: local to tz


def local_bound(rng: random.Random, w: World, tz: str) -> int:
    """A local midnight, a DST change or a month's start near the ledger, sometimes off by 1 ms."""
    z = ZoneInfo(tz)
    t = dt.datetime.fromtimestamp(rng.randrange(w.lo - 86_400_000 * 3, w.hi + 86_400_000 * 3) / 1000, z)
    edge = rng.choice([t.replace(hour=0, minute=0, second=0, microsecond=0),
                       t.replace(day=1, hour=0, minute=0, second=0, microsecond=0), t.replace(minute=0, second=0,
                                                                                               microsecond=0)])
    return int(edge.timestamp() * 1000) + rng.choice([0, 0, 0, -1, 1])


def draw_range(rng: random.Random, w: World, tz: str) -> tuple[int | None, int | None]:
    span = w.hi - w.lo
    kind = rng.random()
    if kind < 0.08:
        return None, None
    if kind < 0.14:  # a single millisecond (often a record's own)
        t = rng.randrange(w.lo, w.hi)
        return t, t + 1
    if kind < 0.18:  # empty
        t = rng.randrange(w.lo, w.hi)
        return t, t
    if kind < 0.22:  # the future
        t = w.hi + rng.randrange(86_400_000 * 400)
        return t, t + rng.randrange(1, 86_400_000 * 40)
    if kind < 0.3:  # around the first or last record
        t = rng.choice(w.ends)
        return t - rng.randrange(86_400_000), t + rng.randrange(1, 86_400_000)
    if kind < 0.5:  # local boundaries (days, months, DST days)
        a, b = sorted((local_bound(rng, w, tz), local_bound(rng, w, tz)))
        return a, b
    a = rng.randrange(w.lo - 86_400_000, w.hi)
    b = a + rng.choice([rng.randrange(1, 3_600_000), rng.randrange(1, 86_400_000 * 2), rng.randrange(1, span + 2)])
    return rng.choice([(a, b), (a, b), (None, b), (a, None)])


def usage_question(rng: random.Random, w: World) -> dict[str, str]:
    """Random `/v1/analytics/usage` parameters the grammar allows."""
    tz = rng.choice(ZONES)
    picks = rng.sample(DIMS, rng.randrange(0, 4))
    if "tag" in picks and "tag_level.{n}" in picks:
        picks.remove("tag")
    dims = [d.format(label=rng.choice(sorted(w.labels) + ["nothing"]), n=rng.choice([1, 2, 2, 3, 3, 4, 6, 8]))
            for d in picks]
    if len(dims) < 4 and rng.random() < 0.6:
        dims.append("time." + rng.choice(["hour", "day", "day", "month"]))
    rng.shuffle(dims)
    p: dict[str, str] = {}
    if dims:
        p["group_by"] = ",".join(dims)
    level = next((int(d.split(".")[1]) for d in dims if d.startswith("tag_level.")), 8)
    if rng.random() < 0.3:
        tag = rng.choice(w.tags + ["nothing/here"])
        tag = cut(tag, min(level, tag.count("/") + 1))
        p["tag"] = tag
    choices: list[tuple[str, Callable[[], Any]]] = [
        ("key", lambda: rng.choice(w.keys + ["no-such-key"])), ("model", lambda: rng.choice(w.models)),
        ("status", lambda: rng.choice(w.statuses)), ("error_code", lambda: rng.choice(w.codes)),
        ("provider", lambda: rng.choice(w.providers)), ("served_model", lambda: rng.choice(w.served))]
    for name, value in choices:
        if rng.random() < 0.12:
            p[name] = str(value())
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
        name = rng.choice(sorted(w.labels))
        p[f"label.{name}"] = rng.choice(w.labels[name])
    if rng.random() < 0.2:
        p["labels"] = "current"
    lo, hi = draw_range(rng, w, tz)
    if lo is not None:
        p["from"] = _when(rng, lo, tz)
    if hi is not None:
        p["to"] = _when(rng, hi, tz)
    if tz != "UTC" or rng.random() < 0.3:
        p["tz"] = tz
    if rng.random() < 0.3:
        p["limit"] = str(rng.choice([1, 3, 10, 50]))
    return p


def parse_when(value: str | None, tz: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=ZoneInfo(tz))
    return round(d.timestamp() * 1000)


# ------------------------------------------------------------------------------------ answers
def labels_of(r: Rec, current: bool) -> dict[str, Any]:
    return (r.current if r.key_id else {}) if current else r.labels


def select(oracle: Oracle, p: dict[str, str], tz: str) -> list[Rec]:
    """The records a question's filters keep."""
    where = {col: (int(p[name]) if name == "status" else p[name])
             for name, col in (("key", "key_id"), ("model", "requested_model"), ("status", "status"),
                               ("error_code", "error_code"), ("provider", "provider"),
                               ("served_model", "served_model")) if name in p}
    recs = oracle.records(parse_when(p.get("from"), tz), parse_when(p.get("to"), tz), where)
    current = p.get("labels") == "current"
    wanted = {k[6:]: v for k, v in p.items() if k.startswith("label.")}
    tag = p.get("tag")
    return [r for r in recs if all(str(labels_of(r, current).get(k)) == v and k in labels_of(r, current)
                                   for k, v in wanted.items())
            and (tag is None or any(under(t, tag) for t in r.tags))]


def usage_groups(recs: Iterable[Rec], p: dict[str, str], tz: str) -> dict[tuple[Any, ...], tuple[int, Group]]:
    """{group values: (time bucket start or 0, group)} as the API defines them."""
    dims = p.get("group_by", "").split(",") if p.get("group_by") else []
    current = p.get("labels") == "current"
    tag = p.get("tag")
    out: dict[tuple[Any, ...], tuple[int, Group]] = {}
    for r in recs:
        values: list[list[Any]] = []
        start = 0
        for d in dims:
            if d in PLAIN:
                values.append([{"key": r.key_id, "model": r.model, "served_model": r.served_model,
                                "provider": r.provider, "status": r.status}[d]])
            elif d.startswith("label."):
                values.append([labels_of(r, current).get(d[6:])])
            elif d.startswith("time."):
                start, label = time_label(r.created_at, d[5:], tz)
                values.append([label])
            else:
                mine = [t for t in r.tags if tag is None or under(t, tag)]
                n = int(d.split(".")[1]) if d.startswith("tag_level.") else None
                cuts = list(dict.fromkeys(mine if n is None else (cut(t, n) for t in mine)))
                values.append(cuts or [None])
        keys: list[tuple[Any, ...]] = [()]
        for vs in values:
            keys = [(*k, v) for k in keys for v in vs]
        for k in keys:
            out.setdefault(k, (start, Group()))[1].recs.append(r)
    return out


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


def tree_question(rng: random.Random, w: World) -> dict[str, str]:
    tz = rng.choice(ZONES)
    p: dict[str, str] = {}
    if rng.random() < 0.6:
        p["root"] = rng.choice(w.tags + ["nothing"])
    if rng.random() < 0.5:
        p["depth"] = str(rng.randrange(0, 4))
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        name = rng.choice(sorted(w.labels))
        p[f"label.{name}"] = rng.choice(w.labels[name])
    lo, hi = draw_range(rng, w, tz)
    if lo is not None:
        p["from"] = _when(rng, lo, tz)
    if hi is not None:
        p["to"] = _when(rng, hi, tz)
    p["tz"] = tz
    return p


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


def logs_question(rng: random.Random, w: World) -> dict[str, str]:
    tz = rng.choice(ZONES)
    p: dict[str, str] = {"tz": tz, "limit": str(rng.choice([1, 7, 50, 500]))}
    for name, values in (("tag", w.tags), ("key", w.keys), ("model", w.models), ("status", w.statuses),
                         ("error_code", w.codes), ("provider", w.providers), ("served_model", w.served)):
        if values and rng.random() < (0.35 if name in ("tag", "key", "model", "status") else 0.2):
            p[name] = str(rng.choice(values))
    for _ in range(rng.choice([0, 1, 1, 2])):
        name = rng.choice(sorted(w.labels))
        p[f"label.{name}"] = rng.choice(w.labels[name])
    if rng.random() < 0.2 and ("tag" in p or "key" in p):  # a rare filter walked over the whole ledger
        return p
    lo = rng.randrange(w.lo, w.hi)
    hi = lo + rng.choice([1, 60_000, 3_600_000, 86_400_000 // 4])
    p["from"], p["to"] = _when(rng, lo, tz), _when(rng, hi, tz)
    return p


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


def export_question(rng: random.Random, w: World) -> dict[str, str]:
    tz = rng.choice(ZONES)
    month = dt.datetime.fromtimestamp(rng.randrange(w.lo - 40 * 86_400_000, w.hi + 40 * 86_400_000) / 1000, dt.UTC)
    dims = rng.sample(["key", "model", "served_model", "provider", "status", f"label.{rng.choice(sorted(w.labels))}"],
                      rng.randrange(0, 3))
    p = {"month": month.strftime("%Y-%m"), "tz": tz, "markup": rng.choice(["0", "0.2", "0.175", "1.333333"])}
    if dims:
        p["group_by"] = ",".join(dims)
    if rng.random() < 0.3:
        p["labels"] = "current"
    return p


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


def minutes_question(rng: random.Random, w: World) -> dict[str, str]:
    tz = rng.choice(ZONES)
    lo = rng.randrange(w.lo - 3_600_000, w.hi)
    hi = lo + rng.randrange(0, 25 * 3_600_000 + 1)
    return {"from": _when(rng, lo, tz), "to": _when(rng, hi, tz), "tz": tz}


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


CHECKS: dict[str, tuple[Callable[[random.Random, World], dict[str, str]],
                        Callable[[Callable[[str], tuple[int, Any]], Oracle, dict[str, str]], list[str]]]] = {
    "usage": (usage_question, check_usage), "tree": (tree_question, check_tree),
    "logs": (logs_question, check_logs), "export": (export_question, check_export),
    "minutes": (minutes_question, check_minutes)}
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
    world = World.of(engine, rng)
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
