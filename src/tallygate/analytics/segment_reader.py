"""Reading one time segment of one question from its table: the dim, usage and tag roll-ups, or
the raw ledger (summed by SQL, or record by record when tags are crossed with other dimensions).

`SegmentReader` resolves the question's filters once (label sets, keys) and adds each segment's
groups into a dict of `Agg`; `AnalyticsStore` (`analytics/reader.py`) plans the segments and
merges them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, true

from tallygate.analytics.plan import Segment, attribute
from tallygate.analytics.query import Dim, Query
from tallygate.analytics.sql import (
    listed_buckets,
    local_bucket,
    raw_records,
    raw_summed,
    record_filters,
    summed_rows,
    tag_groups,
    time_range,
    time_value,
    under,
)
from tallygate.core.metrics import REQUESTS, Agg
from tallygate.core.tagpath import carries
from tallygate.core.timebuckets import HOUR_MS
from tallygate.core.zones import QUARTER_MS, UTC
from tallygate.store.schema import dim_rollups, requests, tag_rollups, usage_rollups

PLAIN_COLUMN = {"key": "key_id", "model": "requested_model", "served_model": "served_model",
                "provider": "provider", "status": "status"}


@dataclass(frozen=True, slots=True)
class TagMode:
    """What tag groups are wanted: the question's own dimensions, the tag tree, or one group of
    every tagged request (`tagged`)."""

    tree: bool = False
    root: str | None = None
    max_depth: int = 0
    tagged: bool = False


class SegmentReader:
    """One question's reads: the filters resolved once, then one method per segment kind."""

    def __init__(self, q: Query, conn: Connection, sets: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]],
                 mode: TagMode, memo: dict[tuple[Any, ...], Any] | None = None) -> None:
        self.q, self.conn, self.sets, self.current, self.mode, self.memo = q, conn, sets, current, mode, memo
        self.key_ids: list[str] | None = None  # the keys a filter allows (None: any)
        self.set_ids: list[str] | None = None  # the label sets a filter allows (None: any)
        if q.labels and q.current_labels:
            self.key_ids = [k for k, labels in current.items()
                            if all(labels.get(n) == v for n, v in q.labels.items())]
        elif q.labels:
            self.set_ids = [s for s, labels in sets.items() if all(labels.get(n) == v for n, v in q.labels.items())]
        if q.key_id is not None:
            self.key_ids = [q.key_id] if self.key_ids is None or q.key_id in self.key_ids else []
        # the dimensions the groups are keyed by (the tree and `tagged` keep only time)
        self.dims = q.dims if not (mode.tree or mode.tagged) else tuple(d for d in q.dims if d.kind == "time")
        self.sparse: dict[Segment, bool] = {}  # raw segments whose tag filter is read by its index

    # --------------------------------------------------------------------------- dim roll-ups
    def attrs(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        """One attribute (or none) from the dim roll-ups; a label's missing values are the '' row
        (every request) less the label's rows, per time bucket."""
        q, t = self.q, dim_rollups[seg.level]
        found = attribute(q)
        assert found is not None
        dim, value = found
        span = self.span(t, seg)
        if value is not None:  # the (dim, value, bucket) index of the hour table, or the key
            where = [*time_range(t.c.bucket, seg), t.c.dim == dim, t.c.value == value]
        else:  # the segment's buckets of the key (bucket, dim, value), or the (dim, value, bucket) index
            # where the planner weighs it (`_dim_is`)
            where = [*span, self._dim_is(t, dim)]
        grouped = next((d for d in q.dims if d.kind != "time"), None)
        time = q.time_dim
        cols = ["value", local_bucket(t, seg, time, q.tz)] if time else ["value"]

        def key_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(time_value(d, row[1], q.tz) if d.kind == "time" else _attr_value(d, row[0]) for d in q.dims)

        part: dict[tuple[Any, ...], Agg] = {}
        if grouped is not None and grouped.kind == "label" and value is None:
            # the label's rows and the '' rows in one statement: one read of the segment's buckets, where
            # two read them twice (team by Kolkata day over a month at 10M records: 425 ms as two)
            every: dict[tuple[Any, ...], Agg] = {}
            both: dict[tuple[Any, ...], Agg] = {}
            summed_rows(self.conn, t, ["dim", *cols], [*span, self._dim_in(t, (dim, ""))], both, lambda row: row)
            for (row_dim, *row), agg in both.items():
                if row_dim == dim:
                    _add(part, key_of(tuple(row)), agg)
                else:
                    _add(every, tuple(time_value(d, row[1], q.tz) if d.kind == "time" else None for d in q.dims), agg)
        else:
            summed_rows(self.conn, t, cols, where, part, key_of)
        if grouped is not None and grouped.kind == "label" and value is None:
            labelled: dict[tuple[Any, ...], Agg] = {}
            for key, agg in part.items():
                tkey = tuple(None if d.kind != "time" else v for d, v in zip(q.dims, key, strict=True))
                labelled.setdefault(tkey, Agg([0] * len(agg.v), None, None)).add_vector(agg.v)
            for tkey, agg in every.items():
                rest = agg.minus(labelled[tkey]) if tkey in labelled else agg
                if rest.v[REQUESTS] > 0:
                    part[tkey] = rest
        for key, agg in part.items():
            _add(out, key, agg)

    def _dim_in(self, t: Any, dims: tuple[str, ...]) -> Any:
        """The rows of the attributes `dims` over a time range (as `_dim_is`)."""
        if self.conn.dialect.name == "postgresql":
            return t.c.dim.in_(dims)
        return t.c.dim.op("||")("").in_(dims)

    def _dim_is(self, t: Any, dim: str) -> Any:
        """The rows of attribute `dim` over a time range. SQLite: `dim || ''` keeps its planner off the
        (dim, value, bucket) index, whose `dim = ?` part would read the attribute's rows of every hour
        ever. PostgreSQL weighs that index against the time range itself (its bucket part is checked in
        the index) and, without it, read the whole hour table for a local month (label.team by New York
        day at 10M records: a 376 MB scan, 640 ms; with it 80 ms)."""
        if self.conn.dialect.name == "postgresql":
            return t.c.dim == dim
        return t.c.dim.op("||")("") == dim

    def span(self, t: Any, seg: Segment) -> list[Any]:
        """A roll-up segment's buckets: listed where SQLite seeks them (`sql.listed_buckets`; a ragged
        fortnight's hours are two stretches around its whole days, whose rows a range read all of),
        else as a range less its holes."""
        listed = listed_buckets(self.conn, seg)
        return time_range(t.c.bucket, seg) if listed is None else [t.c.bucket.in_(listed)]

    # ------------------------------------------------------------------------- usage roll-ups
    def usage(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, t = self.q, usage_rollups[seg.level]
        where = self.span(t, seg)
        if self.key_ids is not None:
            where.append(t.c.key_id.in_(self.key_ids))
        if self.set_ids is not None:
            where.append(t.c.label_set.in_(self.set_ids))
        if q.model is not None:
            where.append(t.c.requested_model == q.model)
        names: list[str] = []
        for d in q.dims:
            name = ("key_id" if q.current_labels else "label_set") if d.kind == "label" else \
                "bucket" if d.kind == "time" else PLAIN_COLUMN[d.kind]
            if name not in names:
                names.append(name)
        at = {name: i for i, name in enumerate(names)}
        cols = [local_bucket(t, seg, q.time_dim, q.tz) if name == "bucket" else name for name in names]
        summed_rows(self.conn, t, cols, where, out,
                    lambda row: tuple(self._value(d, row, at, "bucket", blank_is_none=True) for d in q.dims))

    def _value(self, d: Dim, row: tuple[Any, ...], at: dict[str, int], time_col: str, *,
               blank_is_none: bool = False) -> object:
        """Dimension `d`'s value in a summed row whose columns are named by `at`: a label from the
        row's label set (or its key's current labels), a time bucket, or a plain column."""
        if d.kind == "label":
            if self.q.current_labels:
                return self.current.get(row[at["key_id"]], {}).get(str(d.arg))
            return self.sets.get(row[at["label_set"]], {}).get(str(d.arg))
        if d.kind == "time":
            return time_value(d, int(row[at[time_col]]), self.q.tz)
        v = row[at[PLAIN_COLUMN[d.kind]]]
        return None if blank_is_none and v == "" else v

    # --------------------------------------------------------------------------- tag roll-ups
    def tags(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, t, mode = self.q, tag_rollups[seg.level], self.mode
        where = self.tag_where(t, seg)
        tag_dim = None if mode.tree or mode.tagged else q.tag_dim
        group_prefix = mode.tree or tag_dim is not None
        names = (["prefix"] if group_prefix else []) + (["bucket"] if q.time_dim else [])
        at = {name: i for i, name in enumerate(names)}
        cols = [local_bucket(t, seg, q.time_dim, q.tz) if name == "bucket" else name for name in names]
        dims = self.dims

        def key_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
            values = tuple(row[at["prefix"]] if d.is_tag else time_value(d, row[at["bucket"]], q.tz) for d in dims)
            return (row[at["prefix"]], *values) if mode.tree else values

        # a month bucket holds one or two rows per prefix (is_tag or not), and so does each bucket when
        # grouped by time at the segment's own level; a range of days grouped by prefix holds many
        few = group_prefix and (seg.level == "month" or (q.time_dim is not None and q.time_dim.arg == seg.level))
        summed_rows(self.conn, t, cols, where, out, key_of, few_per_group=few)

    def tag_where(self, t: Any, seg: Segment) -> list[Any]:
        """The tag roll-up rows of one segment that the question's groups are made of."""
        q, mode = self.q, self.mode
        where = self.span(t, seg)
        tag_dim = None if mode.tree or mode.tagged else q.tag_dim
        if mode.tagged:
            where.append(t.c.prefix == "")  # every request with a tag, once
        elif mode.tree:
            if mode.root is not None:
                where.append(under(t.c.prefix, mode.root))
            where += [t.c.depth >= 1, t.c.depth <= mode.max_depth]
        elif tag_dim is None:
            where.append(t.c.prefix == q.tag)  # the filter's subtree total
        else:
            if q.tag is not None:
                where.append(under(t.c.prefix, q.tag))
            if tag_dim.kind == "tag":
                where.append(t.c.is_tag == true())
            else:
                n = int(tag_dim.arg or 0)
                # depth IN (1..n) first: an index range per depth (and bucket) on the hour table
                where += [t.c.depth.in_(range(1, n + 1)), (t.c.depth == n) | (t.c.is_tag == true())]
        return where

    # ------------------------------------------------------------------------------ raw ledger
    def raw_summed(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        """A raw segment of a question without tags, summed by SQL per group and histogram bucket."""
        q, c = self.q, requests.c
        exprs: dict[str, Any] = {}
        for d in q.dims:
            if d.kind == "label":
                name = "key_id" if q.current_labels else "label_set"
                exprs[name] = c[name]
            elif d.kind == "time":  # local buckets start on a UTC quarter-hour (core/zones.py)
                step = HOUR_MS if q.tz == UTC else QUARTER_MS
                exprs["hour"] = c.created_at - c.created_at % step
            else:
                exprs[PLAIN_COLUMN[d.kind]] = c[PLAIN_COLUMN[d.kind]]
        at = {name: i for i, name in enumerate(exprs)}
        for row, vector in raw_summed(self.conn, seg, list(exprs.values()), key_ids=self.key_ids, model=q.model,
                                      set_ids=self.set_ids, tagged=self.mode.tagged).items():
            key = tuple(self._value(d, row, at, "hour") for d in q.dims)
            agg = out.get(key)
            if agg is None:
                out[key] = Agg(vector, None, None)
            else:
                agg.add_vector(vector)

    def raw(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, mode, dims = self.q, self.mode, self.dims
        want = mode.root if mode.tree else None if mode.tagged else q.tag
        sparse = self.sparse.get(seg, False)
        memo_key = (seg, want, sparse, q.model, q.status, q.error_code, q.provider, q.served_model,
                    *(None if ids is None else tuple(ids) for ids in (self.key_ids, self.set_ids)))
        rows: Iterable[Any] | None = None if self.memo is None else self.memo.get(memo_key)
        if rows is None:
            rows = raw_records(self.conn, seg, tag=want, key_ids=self.key_ids, model=q.model, set_ids=self.set_ids,
                               sparse_tag=sparse, extra=record_filters(q))
            if self.memo is not None:
                rows = self.memo[memo_key] = list(rows)
        tag_dim = next((d for d in dims if d.is_tag), None)
        current, sets = self.current, self.sets
        parsed: dict[str | None, list[str]] = {None: []}
        for (created_at, key_id, label_set, text, model, served, provider, status, inp, outp, cached, cw,
             reasoning, cost, latency_us, ttft_us, score) in rows:
            tags = parsed.get(text)
            if tags is None:
                tags = parsed[text] = orjson.loads(text) or []
            if (mode.tagged and not tags) or (want is not None and not carries(tags, want)):
                continue
            if q.current_labels:
                labels = current.get(key_id, {}) if key_id else {}
            else:
                labels = sets.get(label_set, {})
            fixed: list[Any] = []
            for d in dims:
                if d.is_tag:
                    fixed.append(None)
                elif d.kind == "label":
                    fixed.append((labels or {}).get(str(d.arg)))
                elif d.kind == "time":
                    fixed.append(time_value(d, created_at, q.tz))
                else:
                    fixed.append({"key": key_id, "model": model, "served_model": served, "provider": provider,
                                  "status": status}[d.kind])
            if mode.tree:
                keys = [(p, *fixed) for p in tag_groups(tags, None, mode.root, mode.max_depth)]
            elif tag_dim is not None:
                i = dims.index(tag_dim)
                keys = [(*fixed[:i], v, *fixed[i + 1:]) for v in tag_groups(tags, tag_dim, q.tag)]
            else:
                keys = [tuple(fixed)]
            tokens = (inp, outp, cached, cw, reasoning)
            for key in keys:
                agg = out.get(key)
                if agg is None:
                    agg = out[key] = Agg()
                agg.add_record(status, tokens, cost, latency_us, ttft_us, score)


def _add(out: dict[tuple[Any, ...], Agg], key: tuple[Any, ...], agg: Agg) -> None:
    """Add `agg`'s sums to out[key]."""
    have = out.get(key)
    if have is None:
        out[key] = Agg(agg.v, None, None)
    else:
        have.add_vector(agg.v)


def _attr_value(d: Dim, stored: str) -> object:
    """A dim roll-up value as the dimension's: status is a number, an absent key or model ''."""
    if d.kind == "status":
        return int(stored)
    if d.kind == "label":
        return stored
    return None if stored == "" else stored
