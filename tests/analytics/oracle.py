"""The analytics checker's reference (see `checker.py`): each question's records by plain SQL over
`requests`, `label_sets`, `api_keys` and `feedback`, grouped in Python with `zoneinfo` (local
hours, days and months, tags cut to levels, labels as recorded or current). It uses none of the
analytics code.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

PLAIN = {"key": "key_id", "model": "requested_model", "served_model": "served_model", "provider": "provider",
         "status": "status"}


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


def json_value(value: Any) -> Any:
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
                own = json_value(row[3]) if row[3] is not None else json_value(row[4])
                out.append(Rec(row[0], int(row[1]), row[2], own or {}, json_value(row[5]) or {},
                               list(dict.fromkeys(json_value(row[6]) or [])), row[7], row[8], row[9], int(row[10]),
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


def parse_when(value: str | None, tz: str) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    d = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=ZoneInfo(tz))
    return round(d.timestamp() * 1000)


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
