"""Answering analytics questions from the roll-ups, falling back to the raw ledger.

`collect(q)` plans the question (`analytics/plan.py`), reads every time segment from its table
and merges the rows into groups: a dict from group key (one value per dimension) to `Agg`.
Totals are always a separate `collect` without dimensions, so each request counts once in
them, however many rows it is in.

Label dimensions: the usage roll-ups keep a label-set id per row; `label.x` groups by that id
in SQL and maps each set to its value of x here. With `labels=current` they group by key and
map each key to its labels now. The dim roll-ups hold each label's values themselves; requests
without the label are their '' row (every request) less the label's rows.

Raw reads are bounded. The ragged ends of a roll-up answer are less than an hour each. A question
no roll-up holds (tags crossed with other dimensions) is read from the raw ledger only within a
budget: the hour roll-ups first give an upper bound of the records it may read
(`store/hours.py`), and above `raw_budget` (default `RAW_BUDGET`) it is refused with a 400 that
names the count, instead of scanning. Within one answer (`sharing`), a raw segment is read once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select, true

from tallygate.analytics.cover import cover
from tallygate.analytics.plan import Segment, attribute, levels_for, plan, segments_for
from tallygate.analytics.query import Dim, Query
from tallygate.analytics.sql import (
    raw_records,
    raw_summed,
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
from tallygate.errors import InvalidRequest
from tallygate.store.hours import Parts, all_counts, hour_counts
from tallygate.store.schema import api_keys, dim_rollups, label_sets, requests, tag_rollups, usage_rollups

RAW_BUDGET = 50_000  # records a question no roll-up holds may read from the raw ledger (about a second)
_SPARSE = 0.05  # a tag filter matching less than this share of the records is read by its index

PLAIN_COLUMN = {"key": "key_id", "model": "requested_model", "served_model": "served_model",
                "provider": "provider", "status": "status"}


@dataclass(slots=True)
class Collected:
    groups: dict[tuple[Any, ...], Agg]
    family: str
    segments: list[Segment] = field(default_factory=list)
    raw_estimate: int = 0  # upper bound of the raw records read (from the hour roll-ups)
    less: list[Segment] = field(default_factory=list)  # read and subtracted (`analytics/cover.py`)

    @property
    def exact(self) -> bool:
        return all(s.level == "raw" for s in self.segments) and not self.less


class AnalyticsStore:
    """Synchronous analytics queries (run them from a worker thread). With `raw_only` every
    question is answered from the raw ledger: slow, exact, and a check on the roll-ups."""

    def __init__(self, engine: Engine, *, raw_only: bool = False, raw_budget: int = RAW_BUDGET) -> None:
        self._engine = engine
        self._raw_only = raw_only
        self.raw_budget = raw_budget
        self._local = threading.local()  # .memo: raw segments read during one answer (`sharing`)
        self._sets: dict[str, dict[str, Any]] = {}

    @contextmanager
    def sharing(self) -> Iterator[None]:
        """Within this block (one answer, one thread), a raw segment read once is not read again:
        an answer's rows, its untagged rows and its totals often need the same ragged ends."""
        self._local.memo = {}
        try:
            yield
        finally:
            self._local.memo = None

    # ----------------------------------------------------------------- label sets and keys
    def _label_sets(self, conn: Connection) -> dict[str, dict[str, Any]]:
        count = conn.execute(select(func.count()).select_from(label_sets)).scalar_one()
        if count != len(self._sets):
            rows = conn.execute(select(label_sets.c.id, label_sets.c.labels))
            self._sets = {sid: labels or {} for sid, labels in rows}
        return self._sets

    @staticmethod
    def current_labels(conn: Connection) -> dict[str, dict[str, Any]]:
        return {kid: labels or {} for kid, labels in conn.execute(select(api_keys.c.id, api_keys.c.labels))}

    def key_names(self, ids: set[str]) -> dict[str, str]:
        if not ids:
            return {}
        with self._engine.connect() as conn:
            return dict(conn.execute(select(api_keys.c.id, api_keys.c.name).where(api_keys.c.id.in_(ids))).all())

    # ----------------------------------------------------------------------------- collect
    def collect(self, q: Query) -> Collected:
        """The groups of `q` (keys: one value per dimension, in order)."""
        memo = getattr(self._local, "memo", None)
        key = ("collect", repr(q))
        if memo is not None and key in memo:
            found: Collected = memo[key]
            return Collected({k: v.copy() for k, v in found.groups.items()}, found.family, found.segments,
                             found.raw_estimate, found.less)
        q = self.bounded(q)
        family, segments = plan(q)
        out = self._run(q, family, segments, _TagMode())
        if memo is not None:
            memo[key] = Collected({k: v.copy() for k, v in out.groups.items()}, out.family, out.segments,
                                  out.raw_estimate, out.less)
        return out

    def collect_tree(self, root: str | None, max_depth: int, q: Query) -> Collected:
        """Every tag prefix under `root` (all when None) down to `max_depth` levels: keys (prefix,)."""
        return self._run(q, "tags", segments_for(q, "tags"), _TagMode(tree=True, root=root, max_depth=max_depth))

    def tagged_by_time(self, q: Query) -> dict[tuple[Any, ...], Agg]:
        """Requests with at least one tag, grouped by `q`'s time dimension (if any)."""
        time = q.time_dim
        sub = self.bounded(q.span(q.from_ms, q.to_ms, (time,) if time else ()))
        return self._run(sub, "tags", segments_for(sub, "tags"), _TagMode(tagged=True)).groups

    def bounded(self, q: Query) -> Query:
        """`q` with an open end closed at the ledger's first or last record, when local time
        buckets need a bounded range to cut (UTC buckets do not)."""
        if q.tz == UTC or q.time_dim is None or (q.from_ms is not None and q.to_ms is not None):
            return q
        with self._engine.connect() as conn:
            first, last = conn.execute(select(func.min(requests.c.created_at),
                                              func.max(requests.c.created_at))).one()
        first, last = (0, 0) if first is None else (int(first), int(last) + 1)
        lo = first if q.from_ms is None else q.from_ms
        hi = max(lo, last if q.to_ms is None else q.to_ms)
        return Query(q.dims, q.tag, q.labels, q.key_id, q.model, lo, hi, q.current_labels, q.tz)

    def tag_groups_per_bucket(self, q: Query) -> dict[int, int] | None:
        """Tag groups per time bucket of a tag x time question whose plan reads only roll-up rows
        at its time level (tags by hour, by day): from the index alone, no metric column read.
        None for any other question."""
        family, segments = plan(q)
        time = q.time_dim
        if self._raw_only or family != "tags" or time is None or q.tag_dim is None \
                or any(s.level != time.arg for s in segments):
            return None
        out: dict[int, int] = {}
        with self._engine.connect() as conn:
            ctx = _Context(q, conn, {}, {}, _TagMode())
            for seg in segments:
                t = tag_rollups[seg.level]
                query = (select(t.c.bucket, func.count(t.c.prefix.distinct())).where(*ctx.tag_where(t, seg))
                         .group_by(t.c.bucket))
                for bucket, n in conn.execute(query):
                    out[int(bucket)] = out.get(int(bucket), 0) + int(n)
        return out

    def _run(self, q: Query, family: str, segments: list[Segment], mode: _TagMode) -> Collected:
        if self._raw_only:
            segments = [Segment("raw", q.from_ms, q.to_ms)]
        rolled = family != "raw" and not self._raw_only and any(s.level != "raw" for s in segments)
        # whole hours (days) less their outside parts: UTC only, where an hour row is in one time bucket
        if rolled and (q.tz == UTC or q.time_dim is None):
            pieces = cover(segments, levels_for(q, family))
        else:
            pieces = [(1, s) for s in segments]
        out: dict[tuple[Any, ...], Agg] = {}
        less: dict[tuple[Any, ...], Agg] = {}
        with self._engine.connect() as conn:
            ctx = _Context(q, conn, self._label_sets(conn), self.current_labels(conn) if q.current_labels else {},
                           mode, getattr(self._local, "memo", None))
            estimate = 0 if self._raw_only or family != "raw" else self._check_budget(conn, q, mode, segments, ctx)
            summed = rolled and (family in ("dims", "usage") or mode.tagged)
            if family != "raw" and not self._raw_only and q.tz != UTC:
                self._check_local_budget(conn, q, segments)
            for sign, seg in pieces:
                into = out if sign > 0 else less
                if seg.level == "raw" and summed:  # ragged ends of a roll-up answer: summed by SQL
                    ctx.raw_summed(seg, into)
                elif seg.level == "raw":
                    ctx.raw(seg, into)
                elif family == "usage":
                    ctx.usage(seg, into)
                elif family == "dims":
                    ctx.attrs(seg, into)
                else:
                    ctx.tags(seg, into)
        if less:  # the parts of whole hours (days) that were read but are outside the range
            for key, agg in less.items():
                if key in out:
                    out[key] = out[key].minus(agg)
            out = {key: agg for key, agg in out.items() if agg.v[REQUESTS] > 0}
        return Collected(out, family, [s for sign, s in pieces if sign > 0], estimate,
                         [s for sign, s in pieces if sign < 0])

    def _check_budget(self, conn: Connection, q: Query, mode: _TagMode, segments: list[Segment],
                      ctx: _Context) -> int:
        """An upper bound of the raw records a raw-only question reads; refused above the budget.
        Decides per raw segment whether a tag filter is read by its index (`ctx.sparse`)."""
        tag = mode.root if mode.tree else None if mode.tagged else q.tag
        parts = Parts.of(tag=tag, labels={} if q.current_labels else q.labels, key_id=q.key_id, model=q.model)
        estimate = 0
        for seg in segments:
            if seg.level != "raw":
                continue
            counts = hour_counts(conn, parts, seg.from_ms, seg.to_ms)
            n = sum(counts.values())
            if tag is not None:
                total = sum(all_counts(conn, seg.from_ms, seg.to_ms).values())
                ctx.sparse[seg] = n < _SPARSE * total
            estimate += n
        if estimate > self.raw_budget:
            span = sum(((s.to_ms or 0) - (s.from_ms or 0)) // HOUR_MS for s in segments if s.level == "raw")
            raise InvalidRequest(
                f"this question is answered from the raw ledger (no roll-up holds tags crossed with labels, keys "
                f"or models): its range holds up to {estimate:,} matching records (over about {span:,} hours), "
                f"more than the budget of {self.raw_budget:,}; narrow from/to, or group tags and the other "
                f"dimensions in separate questions", param="from")
        return estimate


    def _check_local_budget(self, conn: Connection, q: Query, segments: list[Segment]) -> None:
        """Local buckets that do not start on a UTC hour (30- and 45-minute offsets) read the raw ledger
        around each boundary, every hour of it for `time.hour`: refused above the raw budget."""
        parts = Parts.of(tag=None, labels={} if q.current_labels else q.labels, key_id=q.key_id, model=q.model)
        estimate = sum(sum(hour_counts(conn, parts, s.from_ms, s.to_ms).values()) for s in segments
                       if s.level == "raw")
        if estimate > self.raw_budget:
            unit = q.time_dim.arg if q.time_dim else "time"
            raise InvalidRequest(
                f"in {q.tz} the local {unit} buckets do not start on a UTC hour, so "
                f"the hour roll-ups cannot answer them: this question reads up to {estimate:,} raw records, more "
                f"than the budget of {self.raw_budget:,}; group by a coarser time unit or narrow from/to",
                param="tz")


@dataclass(frozen=True, slots=True)
class _TagMode:
    """What tag groups are wanted: the question's own dimensions, the tag tree, or one group of
    every tagged request (`tagged`)."""

    tree: bool = False
    root: str | None = None
    max_depth: int = 0
    tagged: bool = False


class _Context:
    """One question's reads: the filters resolved once, then one method per segment kind."""

    def __init__(self, q: Query, conn: Connection, sets: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]],
                 mode: _TagMode, memo: dict[tuple[Any, ...], Any] | None = None) -> None:
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
        if value is not None:  # the (dim, value, bucket) index of the hour table, or the key
            where = [*time_range(t.c.bucket, seg), t.c.dim == dim, t.c.value == value]
        else:  # a time range of the key (bucket, dim, value): `dim || ''` keeps planners off that index,
            # whose `dim = ?` part would read the attribute's rows of every hour ever
            where = [*time_range(t.c.bucket, seg), t.c.dim.op("||")("") == dim]
        grouped = next((d for d in q.dims if d.kind != "time"), None)
        time = q.time_dim
        cols = ["value", "bucket"] if time else ["value"]

        def key_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(time_value(d, row[1], q.tz) if d.kind == "time" else _attr_value(d, row[0]) for d in q.dims)

        part: dict[tuple[Any, ...], Agg] = {}
        summed_rows(self.conn, t, cols, where, part, key_of)
        if grouped is not None and grouped.kind == "label" and value is None:
            every: dict[tuple[Any, ...], Agg] = {}
            summed_rows(self.conn, t, cols, [*time_range(t.c.bucket, seg), t.c.dim.op("||")("") == ""], every,
                        lambda row: tuple(time_value(d, row[1], q.tz) if d.kind == "time" else None for d in q.dims))
            labelled: dict[tuple[Any, ...], Agg] = {}
            for key, agg in part.items():
                tkey = tuple(None if d.kind != "time" else v for d, v in zip(q.dims, key, strict=True))
                labelled.setdefault(tkey, Agg([0] * len(agg.v), None, None)).add_vector(agg.v)
            for tkey, agg in every.items():
                rest = agg.minus(labelled[tkey]) if tkey in labelled else agg
                if rest.v[REQUESTS] > 0:
                    part[tkey] = rest
        for key, agg in part.items():
            have = out.get(key)
            if have is None:
                out[key] = Agg(agg.v, None, None)
            else:
                have.add_vector(agg.v)

    # ------------------------------------------------------------------------- usage roll-ups
    def usage(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, t = self.q, usage_rollups[seg.level]
        where = time_range(t.c.bucket, seg)
        if self.key_ids is not None:
            where.append(t.c.key_id.in_(self.key_ids))
        if self.set_ids is not None:
            where.append(t.c.label_set.in_(self.set_ids))
        if q.model is not None:
            where.append(t.c.requested_model == q.model)
        cols: list[str] = []
        for d in q.dims:
            name = ("key_id" if q.current_labels else "label_set") if d.kind == "label" else \
                "bucket" if d.kind == "time" else PLAIN_COLUMN[d.kind]
            if name not in cols:
                cols.append(name)
        at = {name: i for i, name in enumerate(cols)}
        sets, current = self.sets, self.current

        def value(d: Dim, row: tuple[Any, ...]) -> object:
            if d.kind == "label":
                if q.current_labels:
                    return current.get(row[at["key_id"]], {}).get(str(d.arg))
                return sets.get(row[at["label_set"]], {}).get(str(d.arg))
            if d.kind == "time":
                return time_value(d, row[at["bucket"]], q.tz)
            v = row[at[PLAIN_COLUMN[d.kind]]]
            return None if v == "" else v

        summed_rows(self.conn, t, cols, where, out, lambda row: tuple(value(d, row) for d in q.dims))

    # --------------------------------------------------------------------------- tag roll-ups
    def tags(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, t, mode = self.q, tag_rollups[seg.level], self.mode
        where = self.tag_where(t, seg)
        tag_dim = None if mode.tree or mode.tagged else q.tag_dim
        group_prefix = mode.tree or tag_dim is not None
        cols = (["prefix"] if group_prefix else []) + (["bucket"] if q.time_dim else [])
        at = {name: i for i, name in enumerate(cols)}
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
        where = time_range(t.c.bucket, seg)
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
        sets, current = self.sets, self.current

        def value(d: Dim, row: tuple[Any, ...]) -> object:
            if d.kind == "label":
                if q.current_labels:
                    return current.get(row[at["key_id"]], {}).get(str(d.arg))
                return sets.get(row[at["label_set"]], {}).get(str(d.arg))
            if d.kind == "time":
                return time_value(d, int(row[at["hour"]]), q.tz)
            return row[at[PLAIN_COLUMN[d.kind]]]

        for row, vector in raw_summed(self.conn, seg, list(exprs.values()), key_ids=self.key_ids, model=q.model,
                                      set_ids=self.set_ids, tagged=self.mode.tagged).items():
            key = tuple(value(d, row) for d in q.dims)
            agg = out.get(key)
            if agg is None:
                out[key] = Agg(vector, None, None)
            else:
                agg.add_vector(vector)

    def raw(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, mode, dims = self.q, self.mode, self.dims
        want = mode.root if mode.tree else None if mode.tagged else q.tag
        sparse = self.sparse.get(seg, False)
        memo_key = (seg, want, sparse, q.model, *(None if ids is None else tuple(ids)
                                                  for ids in (self.key_ids, self.set_ids)))
        rows: Iterable[Any] | None = None if self.memo is None else self.memo.get(memo_key)
        if rows is None:
            rows = raw_records(self.conn, seg, tag=want, key_ids=self.key_ids, model=q.model, set_ids=self.set_ids,
                               sparse_tag=sparse)
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


def _attr_value(d: Dim, stored: str) -> object:
    """A dim roll-up value as the dimension's: status is a number, an absent key or model ''."""
    if d.kind == "status":
        return int(stored)
    if d.kind == "label":
        return stored
    return None if stored == "" else stored
