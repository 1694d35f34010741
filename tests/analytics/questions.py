"""The analytics checker's questions (see `checker.py`): random parameters across the whole grammar
of the usage, tag tree, logs, export and minutes endpoints, drawn from what the ledger holds (its
time span, keys, models, labels, tags), in every kind of time zone and instant notation.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

from tests.analytics.oracle import cut, json_value, prefixes

# every kind of zone: UTC, whole hours with DST, half and quarter hours (with and without DST),
# a 30-minute DST shift, +12:45/+13:45, a southern-hemisphere DST
ZONES = ["UTC", "America/New_York", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Chatham",
         "America/St_Johns", "Australia/Lord_Howe", "Europe/Berlin", "Australia/Adelaide"]


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
                for k, v in (json_value(raw) or {}).items():
                    labels.setdefault(k, set()).add(str(v))
            tags: set[str] = set()
            for (raw,) in conn.execute(text("SELECT tags FROM requests WHERE created_at % 89 = 0 LIMIT 4000")):
                for t in json_value(raw) or []:
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


def minutes_question(rng: random.Random, w: World) -> dict[str, str]:
    tz = rng.choice(ZONES)
    lo = rng.randrange(w.lo - 3_600_000, w.hi)
    hi = lo + rng.randrange(0, 25 * 3_600_000 + 1)
    return {"from": _when(rng, lo, tz), "to": _when(rng, hi, tz), "tz": tz}
