"""Roll-ups kept by the ledger writer: aggregate a batch in memory, then one upsert per table.

For each batch the writer calls `aggregate()` (pure Python: each record joins a few groups,
then every group is summed once) and then `write()` inside the transaction that inserts the
raw records, so a record and its roll-ups are committed together or not at all. Each roll-up row
is upserted by *adding* the batch's sums to it (`col = col + excluded.col`), which SQLite and PostgreSQL both do.

* usage roll-ups: one row per (hour, key, label set, requested model, served model, provider,
  status); day and month rows are merged from the batch's hour rows.
* tag roll-ups: one row per (hour, prefix, is_tag), each request once per distinct prefix of
  its tags; day and month rows merged from the hour rows. The prefix '' counts requests with any tag.
* dim roll-ups: one row per (hour, attribute, value) for each of key, model, served_model,
  provider, status and every label, plus ('', '') for all requests; built from the batch's
  usage hour cells (each cell is in one row per attribute), then merged into days and months.

Label sets are stored once in `label_sets`, keyed by the first 16 hex digits of the SHA-256
of their canonical JSON (sorted keys): `label_set_id()`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import add, attrgetter, itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine

from tallygate.core.histogram import EDGES_US
from tallygate.core.metrics import FEEDBACK_COUNT, LATENCY_START, METRICS, TTFT_START, WIDTH
from tallygate.core.record import LedgerRecord
from tallygate.core.tagpath import prefixes
from tallygate.core.timebuckets import DAY_MS, HOUR_MS, month_floor
from tallygate.store.schema import dim_rollups, tag_rollups, usage_rollups

USAGE_DIMS = ("bucket", "key_id", "label_set", "requested_model", "served_model", "provider", "status")
TAG_DIMS = ("bucket", "prefix", "is_tag")
DIM_DIMS = ("bucket", "dim", "value")
ALL = ("", "")  # the dim roll-up row of every request


def canonical_labels(labels: dict[str, Any]) -> str:
    return orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode()


def label_set_id(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def placeholder(engine: Engine | Connection) -> str:
    return "?" if engine.dialect.name == "sqlite" else "%s"


def upsert_adding_sql(engine: Engine | Connection, table: str, dims: tuple[str, ...],
                      extra: tuple[str, ...] = ()) -> str:
    """INSERT of dims + extra + METRICS that, on a primary-key conflict, adds the metrics."""
    cols = dims + extra + METRICS
    mark = placeholder(engine)
    sets = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in METRICS)
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))}) "
            f"ON CONFLICT ({', '.join(dims)}) DO UPDATE SET {sets}")


class Cell:
    """One group's metrics within a batch, sparse: the record sums and a histogram dict
    (index in the metric vector -> count) holding the latency and TTFT buckets in use."""

    __slots__ = ("hist", "sums")

    def __init__(self, sums: list[int], hist: dict[int, int]) -> None:
        self.sums = sums
        self.hist = hist

    def copy(self) -> Cell:
        return Cell(list(self.sums), dict(self.hist))

    def add(self, other: Cell) -> None:
        self.sums[:] = map(add, self.sums, other.sums)
        hist = self.hist
        for b, c in other.hist.items():
            hist[b] = hist.get(b, 0) + c

    def dense(self) -> list[int]:
        """The full metric vector (the roll-up tables' column order)."""
        v = [0] * WIDTH
        v[:FEEDBACK_COUNT] = self.sums
        for b, c in self.hist.items():
            v[b] += c
        return v


@dataclass(slots=True)
class Aggregate:
    """One batch's roll-up cells by level, and the label sets it introduced."""

    usage: dict[str, dict[tuple[Any, ...], Cell]] = field(default_factory=dict)
    tags: dict[str, dict[tuple[Any, ...], Cell]] = field(default_factory=dict)
    dims: dict[str, dict[tuple[Any, ...], Cell]] = field(default_factory=dict)
    new_sets: dict[str, str] = field(default_factory=dict)


_NO_TTFT = WIDTH  # the TTFT index of a record without one; never stored
_FIELDS = attrgetter("created_at", "status", "key_id", "requested_model", "served_model", "provider",
                     "latency_us", "ttft_us", "tags")
_COUNTS = attrgetter("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
                     "cost_pico")


def _cells(groups: dict[tuple[Any, ...], list[int]], sums: list[tuple[int, ...]], lat: list[int],
           ttft: list[int]) -> dict[tuple[Any, ...], Cell]:
    """Cells of groups given as lists of record indexes (summed column by column, in C)."""
    out: dict[tuple[Any, ...], Cell] = {}
    for key, members in groups.items():
        if len(members) == 1:
            i = members[0]
            hist = {lat[i]: 1}
            if ttft[i] != _NO_TTFT:
                hist[ttft[i]] = 1
            out[key] = Cell(list(sums[i]), hist)
        else:
            pick = itemgetter(*members)
            counts = Counter(pick(lat))
            counts.update(pick(ttft))
            counts.pop(_NO_TTFT, None)
            out[key] = Cell(list(map(sum, zip(*pick(sums), strict=True))), counts)
    return out


def _coarser(cells: dict[tuple[Any, ...], Cell], bucket_of) -> dict[tuple[Any, ...], Cell]:  # type: ignore[no-untyped-def]
    """The same cells in coarser time buckets (the key's first field)."""
    out: dict[tuple[Any, ...], Cell] = {}
    for key, cell in cells.items():
        k = (bucket_of(key[0]), *key[1:])
        acc = out.get(k)
        if acc is None:
            out[k] = cell.copy()
        else:
            acc.add(cell)
    return out


class Rollups:
    """Aggregates batches of ledger records and upserts them into the roll-up tables."""

    def __init__(self, engine: Engine | Connection) -> None:
        self._usage_sql = {lv: upsert_adding_sql(engine, t.name, USAGE_DIMS) for lv, t in usage_rollups.items()}
        self._tag_sql = {lv: upsert_adding_sql(engine, t.name, TAG_DIMS, ("depth",))
                         for lv, t in tag_rollups.items()}
        self._dim_sql = {lv: upsert_adding_sql(engine, t.name, DIM_DIMS) for lv, t in dim_rollups.items()}
        mark = placeholder(engine)
        self._set_sql = f"INSERT INTO label_sets (id, labels) VALUES ({mark}, {mark}) ON CONFLICT DO NOTHING"
        self._set_ids: dict[str, str] = {}  # canonical JSON -> id
        self._stored_sets: set[str] = set()  # ids known to be in label_sets
        self._set_pairs: dict[str, tuple[tuple[str, str], ...]] = {}  # id -> (('label.team', 'a'), ...)
        self._prefixes: dict[str, tuple[str, ...]] = {}
        self._months: dict[int, int] = {}

    def _tag_prefixes(self, tag: str) -> tuple[str, ...]:
        found = self._prefixes.get(tag)
        if found is None:
            if len(self._prefixes) > 100_000:
                self._prefixes.clear()
            found = self._prefixes[tag] = tuple(prefixes((tag,)))
        return found

    def _month(self, day_ms: int) -> int:
        m = self._months.get(day_ms)
        if m is None:
            m = self._months[day_ms] = month_floor(day_ms)
        return m

    def aggregate(self, records: Iterable[LedgerRecord], canonical: Iterable[str]) -> Aggregate:
        """Roll-up cells for `records`; `canonical[i]` is record i's labels as canonical JSON.

        Each record becomes one tuple of sums and two histogram indexes; groups collect the
        indexes of their records. A record whose tags have distinct roots (the common case)
        joins one group per tag; each tag's cell is then added to every prefix of the tag, once
        per batch. A record with several tags under one root joins each distinct prefix itself,
        so it still counts once under their common ancestors."""
        sums: list[tuple[int, ...]] = []
        lat: list[int] = []
        ttft: list[int] = []
        usage: dict[tuple[Any, ...], list[int]] = {}
        by_tag: dict[tuple[Any, ...], list[int]] = {}  # (day, tag) -> records whose tags have distinct roots
        by_prefix: dict[tuple[Any, ...], list[int]] = {}  # (day, prefix, is_tag) -> the other tagged records
        tagged: dict[tuple[Any, ...], list[int]] = {}  # (day, '', False) -> records with at least one tag
        set_ids, stored, new_sets = self._set_ids, self._stored_sets, {}
        edges, fields, counts = EDGES_US, _FIELDS, _COUNTS
        for i, (rec, labels) in enumerate(zip(records, canonical, strict=True)):
            ls = set_ids.get(labels)
            if ls is None:
                ls = set_ids[labels] = label_set_id(labels)
                self._set_pairs[ls] = tuple((f"label.{n}", str(v)) for n, v in orjson.loads(labels).items())
            if ls not in stored:
                new_sets[ls] = labels
            ca, status, key_id, model, served, provider, latency_us, ttft_us, given = fields(rec)
            sums.append((1, 1 if status >= 400 else 0, *counts(rec)))
            lat.append(LATENCY_START + bisect_right(edges, latency_us))
            ttft.append(_NO_TTFT if ttft_us is None else TTFT_START + bisect_right(edges, ttft_us))
            key = (ca - ca % HOUR_MS, key_id or "", ls, model or "", served or "", provider or "", status)
            members = usage.get(key)
            if members is None:
                usage[key] = [i]
            else:
                members.append(i)
            if not given:
                continue
            day = ca - ca % HOUR_MS  # (the tag cells are by hour, then merged into days)
            members = tagged.get((day, "", False))
            if members is None:
                tagged[(day, "", False)] = [i]
            else:
                members.append(i)
            if len(given) == 1 or len({t.partition("/")[0] for t in given}) == len(given):
                for tag in given:
                    members = by_tag.get((day, tag))
                    if members is None:
                        by_tag[(day, tag)] = [i]
                    else:
                        members.append(i)
                continue
            seen: dict[str, bool] = {}
            for tag in given:
                for p in self._tag_prefixes(tag):
                    seen[p] = seen.get(p, False) or p == tag
            for p, is_tag in seen.items():
                members = by_prefix.get((day, p, is_tag))
                if members is None:
                    by_prefix[(day, p, is_tag)] = [i]
                else:
                    members.append(i)
        tags_day = _cells(by_prefix, sums, lat, ttft)
        tags_day.update(_cells(tagged, sums, lat, ttft))
        for (day, tag), cell in _cells(by_tag, sums, lat, ttft).items():
            for p in self._tag_prefixes(tag):
                tag_key = (day, p, p == tag)
                acc = tags_day.get(tag_key)
                if acc is None:
                    tags_day[tag_key] = cell if p == tag else cell.copy()
                else:
                    acc.add(cell)
        usage_hour = _cells(usage, sums, lat, ttft)
        to_day = lambda ms: ms - ms % DAY_MS  # noqa: E731
        usage_day = _coarser(usage_hour, to_day)
        tags_by_day = _coarser(tags_day, to_day)
        dims_hour = self._dim_cells(usage_hour)
        dims_day = _coarser(dims_hour, to_day)
        return Aggregate(
            usage={"hour": usage_hour, "day": usage_day, "month": _coarser(usage_day, self._month)},
            tags={"hour": tags_day, "day": tags_by_day, "month": _coarser(tags_by_day, self._month)},
            dims={"hour": dims_hour, "day": dims_day, "month": _coarser(dims_day, self._month)},
            new_sets=new_sets,
        )

    def _dim_cells(self, usage_hour: dict[tuple[Any, ...], Cell]) -> dict[tuple[Any, ...], Cell]:
        """The dim roll-up cells of a batch: each usage cell added to one row per attribute."""
        out: dict[tuple[Any, ...], Cell] = {}
        pairs_of = self._set_pairs
        for (hour, key_id, ls, model, served, provider, status), cell in usage_hour.items():
            for dim, value in (ALL, ("key", key_id), ("model", model), ("served_model", served),
                               ("provider", provider), ("status", str(status)), *pairs_of[ls]):
                k = (hour, dim, value)
                acc = out.get(k)
                if acc is None:
                    out[k] = cell.copy()
                else:
                    acc.add(cell)
        return out

    def write(self, conn: Connection, agg: Aggregate) -> None:
        """Upsert one batch's roll-ups (inside the caller's transaction).

        Rows go in primary-key order, so concurrent writers (several processes on PostgreSQL)
        lock shared rows in the same order and cannot deadlock."""
        if agg.new_sets:
            conn.exec_driver_sql(self._set_sql, sorted(agg.new_sets.items()))
        # (in key order also means each upsert lands next to the previous one in the B-tree)
        for level, rows in agg.usage.items():
            if rows:
                conn.exec_driver_sql(self._usage_sql[level], [(*k, *rows[k].dense()) for k in sorted(rows)])
        for level, rows in agg.tags.items():
            if rows:
                conn.exec_driver_sql(self._tag_sql[level], [(*k, k[1].count("/") + 1 if k[1] else 0,
                                                             *rows[k].dense()) for k in sorted(rows)])
        for level, rows in agg.dims.items():
            if rows:
                conn.exec_driver_sql(self._dim_sql[level], [(*k, *rows[k].dense()) for k in sorted(rows)])

    def committed(self, agg: Aggregate) -> None:
        """The batch's transaction committed: its label sets are stored."""
        self._stored_sets.update(agg.new_sets)


@dataclass(frozen=True, slots=True)
class RecordKeys:
    """The roll-up rows one record counts in, by level (primary-key tuples of each table)."""

    usage: dict[str, tuple[Any, ...]]
    tags: dict[str, list[tuple[Any, ...]]]
    dims: dict[str, list[tuple[Any, ...]]]


def record_keys(rec: Mapping[str, Any], labels: dict[str, Any]) -> RecordKeys:
    """The roll-up rows of `rec`, a `requests` row as read back, whose labels are `labels`.

    Used to adjust a record's rows later (feedback)."""
    ls = rec.get("label_set") or label_set_id(canonical_labels(labels))
    ca = rec["created_at"]
    buckets = {"hour": ca - ca % HOUR_MS, "day": ca - ca % DAY_MS, "month": month_floor(ca)}
    rest = (rec["key_id"] or "", ls, rec["requested_model"] or "", rec["served_model"] or "",
            rec["provider"] or "", rec["status"])
    usage = {level: (b, *rest) for level, b in buckets.items()}
    pairs = [ALL, ("key", rest[0]), ("model", rest[2]), ("served_model", rest[3]), ("provider", rest[4]),
             ("status", str(rec["status"]))] + [(f"label.{n}", str(v)) for n, v in labels.items()]
    dims = {level: [(b, d, v) for d, v in pairs] for level, b in buckets.items()}
    given = list(rec["tags"] or ())
    tags: dict[str, list[tuple[Any, ...]]] = {level: [] for level in buckets}
    if given:
        tag_pairs = [(p, p in given) for p in prefixes(tuple(given))] + [("", False)]
        tags = {level: [(b, p, is_tag) for p, is_tag in tag_pairs] for level, b in buckets.items()}
    return RecordKeys(usage, tags, dims)
