"""Answering analytics questions from the roll-ups, falling back to the raw ledger.

`collect(q)` plans the question (`analytics/plan.py`), reads every time segment from its table
and merges the rows into groups: a dict from group key (one value per dimension) to `Agg`.
Totals are always a separate `collect` without dimensions, so each request counts once in
them, however many rows it is in.

Label dimensions: the usage roll-ups keep a label-set id per row; `label.x` groups by that id
in SQL and maps each set to its value of x here. With `labels=current` they group by key and
map each key to its labels now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select, true

from tallygate.analytics.plan import Segment, levels_for, plan, split
from tallygate.analytics.query import Dim, Query
from tallygate.analytics.sql import (
    raw_records,
    summed_rows,
    tag_groups,
    time_range,
    time_value,
    under,
)
from tallygate.core.metrics import Agg
from tallygate.store.schema import api_keys, label_sets, tag_rollups, usage_rollups

PLAIN_COLUMN = {"key": "key_id", "model": "requested_model", "served_model": "served_model",
                "provider": "provider", "status": "status"}


@dataclass(slots=True)
class Collected:
    groups: dict[tuple[Any, ...], Agg]
    family: str
    segments: list[Segment] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(s.level == "raw" for s in self.segments)


class AnalyticsStore:
    """Synchronous analytics queries (run them from a worker thread). With `raw_only` every
    question is answered from the raw ledger: slow, exact, and a check on the roll-ups."""

    def __init__(self, engine: Engine, *, raw_only: bool = False) -> None:
        self._engine = engine
        self._raw_only = raw_only
        self._sets: dict[str, dict[str, Any]] = {}

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
        family, segments = plan(q)
        return self._run(q, family, segments, _TagMode())

    def collect_tree(self, root: str | None, max_depth: int, q: Query) -> Collected:
        """Every tag prefix under `root` (all when None) down to `max_depth` levels: keys (prefix,)."""
        return self._run(q, "tags", split(q.from_ms, q.to_ms, levels_for(q, "tags")),
                         _TagMode(tree=True, root=root, max_depth=max_depth))

    def tagged_by_time(self, q: Query) -> dict[tuple[Any, ...], Agg]:
        """Requests with at least one tag, grouped by `q`'s time dimension (if any)."""
        time = q.time_dim
        sub = Query((time,) if time else (), from_ms=q.from_ms, to_ms=q.to_ms)
        return self._run(sub, "tags", split(q.from_ms, q.to_ms, levels_for(sub, "tags")),
                         _TagMode(tagged=True)).groups

    def _run(self, q: Query, family: str, segments: list[Segment], mode: _TagMode) -> Collected:
        if self._raw_only:
            segments = [Segment("raw", q.from_ms, q.to_ms)]
        out: dict[tuple[Any, ...], Agg] = {}
        with self._engine.connect() as conn:
            ctx = _Context(q, conn, self._label_sets(conn), self.current_labels(conn) if q.current_labels else {},
                           mode)
            for seg in segments:
                if seg.level == "raw":
                    ctx.raw(seg, out)
                elif family == "usage":
                    ctx.usage(seg, out)
                else:
                    ctx.tags(seg, out)
        return Collected(out, family, segments)


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
                 mode: _TagMode) -> None:
        self.q, self.conn, self.sets, self.current, self.mode = q, conn, sets, current, mode
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
                return time_value(d, row[at["bucket"]])
            v = row[at[PLAIN_COLUMN[d.kind]]]
            return None if v == "" else v

        summed_rows(self.conn, t, cols, where, out, lambda row: tuple(value(d, row) for d in q.dims))

    # --------------------------------------------------------------------------- tag roll-ups
    def tags(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, t, mode = self.q, tag_rollups[seg.level], self.mode
        where = time_range(t.c.bucket, seg)
        tag_dim = None if mode.tree or mode.tagged else q.tag_dim
        group_prefix = mode.tree or tag_dim is not None
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
                where.append((t.c.depth == n) | ((t.c.is_tag == true()) & (t.c.depth < n) & (t.c.depth >= 1)))
        cols = (["prefix"] if group_prefix else []) + (["bucket"] if q.time_dim else [])
        at = {name: i for i, name in enumerate(cols)}
        dims = self.dims

        def key_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
            values = tuple(row[at["prefix"]] if d.is_tag else time_value(d, row[at["bucket"]]) for d in dims)
            return (row[at["prefix"]], *values) if mode.tree else values

        # a month bucket holds one or two rows per prefix; a range of days holds many
        summed_rows(self.conn, t, cols, where, out, key_of, few_per_group=group_prefix and seg.level == "month")

    # ------------------------------------------------------------------------------ raw ledger
    def raw(self, seg: Segment, out: dict[tuple[Any, ...], Agg]) -> None:
        q, mode, dims = self.q, self.mode, self.dims
        rows = raw_records(self.conn, seg, tag=mode.root if mode.tree else None if mode.tagged else q.tag,
                           key_ids=self.key_ids, model=q.model, labels={} if q.current_labels else q.labels)
        tag_dim = next((d for d in dims if d.is_tag), None)
        current = self.current
        for (created_at, key_id, labels, tags, model, served, provider, status, inp, outp, cached, cw,
             reasoning, cost, latency_us, ttft_us, score) in rows:
            tags = tags or []
            if mode.tagged and not tags:
                continue
            if q.current_labels:
                labels = current.get(key_id, {}) if key_id else {}
            fixed: list[Any] = []
            for d in dims:
                if d.is_tag:
                    fixed.append(None)
                elif d.kind == "label":
                    fixed.append((labels or {}).get(str(d.arg)))
                elif d.kind == "time":
                    fixed.append(time_value(d, created_at))
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
