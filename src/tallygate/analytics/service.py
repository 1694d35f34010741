"""Analytics answers as the API and the CLI show them: rows, totals, the tag tree, invoices.

Totals are computed on their own (each request once), never by adding rows up: with a tag
dimension a request with two tags is in two rows, and the answer says so (`overlapping`).
Requests without a tag form the row whose tag value is null (untagged), so that without a tag
filter every request is in at least one row.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from typing import Any

from tallygate.analytics.invoice import TOKEN_FIELDS, invoice
from tallygate.analytics.metrics import render
from tallygate.analytics.query import Dim, Query
from tallygate.analytics.reader import AnalyticsStore, Collected
from tallygate.core.histogram import MAX_RELATIVE_ERROR
from tallygate.core.metrics import COST_PICO, REQUESTS, Agg
from tallygate.core.tagpath import MAX_DEPTH
from tallygate.core.timebuckets import ceil
from tallygate.core.zones import UTC, local_iso
from tallygate.errors import InvalidRequest

MAX_ROWS = 10_000
_TOTALS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tallygate-totals")
OVERLAP_NOTE = ("rows overlap: a request with several tags (or cut paths) is in several rows, so the rows "
                "add up to more than the totals; totals count each request once")


def render_value(dim: Dim, value: object, tz: str = UTC) -> object:
    if dim.kind != "time" or value is None:
        return value
    return local_iso(int(value), str(dim.arg), tz)  # type: ignore[call-overload]


def _sort_key(dims: tuple[Dim, ...], key: tuple[Any, ...], agg: Agg) -> tuple[Any, ...]:
    time_part = tuple(v for d, v in zip(dims, key, strict=True) if d.kind == "time")
    rest = tuple("" if v is None else str(v) for d, v in zip(dims, key, strict=True) if d.kind != "time")
    return (time_part, -agg.v[COST_PICO], -agg.v[REQUESTS], rest)


def _plan(c: Collected, tz: str, exact: bool | None = None) -> dict[str, Any]:
    """The plan of an answer; `exact`: whether all its percentiles are exact (default: `c`'s are)."""
    exact = c.exact if exact is None else exact
    segments = [{"level": s.level, "from": s.from_ms, "to": s.to_ms} for s in c.segments]
    segments += [{"level": s.level, "from": s.from_ms, "to": s.to_ms, "subtracted": True} for s in c.less]
    doc: dict[str, Any] = {"source": c.family, "timezone": tz, "segments": segments,
           "percentiles": "exact" if exact else "histogram",
           "percentile_max_relative_error": 0 if exact else round(MAX_RELATIVE_ERROR, 4)}
    if c.family == "raw":
        doc["raw_records"] = {"at_most": c.raw_estimate}
    if c.family == "columnar":  # 'catching up': the copy is being brought up to date (the ledger reads the rest)
        doc["copy"] = "catching up" if c.catching_up else "ready"
    return doc


class Analytics:
    """Builds the documents of `/v1/analytics/*` from an `AnalyticsStore`."""

    def __init__(self, store: AnalyticsStore, timezone: str = UTC) -> None:
        self.store = store
        self.timezone = timezone  # the configured reporting time zone: questions without `tz=`

    def _with_untagged(self, q: Query, c: Collected) -> None:
        """Add the untagged row(s) to a tag grouping answered from the tag roll-ups."""
        if c.family != "tags" or q.tag is not None or q.tag_dim is None or c.exact:
            return  # raw answers build the untagged rows themselves; a tag filter has none
        time = q.time_dim
        everything = self.store.collect(q.span(q.from_ms, q.to_ms, (time,) if time else ())).groups
        tagged = self.store.tagged_by_time(q)
        for tkey, all_agg in everything.items():
            rest = all_agg.minus(tagged[tkey]) if tkey in tagged else all_agg
            if rest.v[REQUESTS] <= 0:
                continue
            it = iter(tkey)
            key = tuple(None if d.is_tag else next(it) for d in q.dims)
            c.groups[key] = rest

    def usage(self, q: Query, limit: int = 1000) -> dict[str, Any]:
        with self.store.sharing():
            return self._usage(q, limit)

    def _page(self, q: Query, limit: int) -> tuple[Query, int]:
        """The question to read for the first `limit` rows, and the rows it leaves out.

        Rows are in time order first, so with many groups by time (tags by hour over a month:
        ~20,000) only the earliest buckets reach the page: their counts come from the index, and
        the metrics are read up to the bucket in which the page ends."""
        counts = self.store.tag_groups_per_bucket(q) if q.tz == UTC else None
        if not counts or sum(counts.values()) <= limit:
            return q, 0
        seen = 0
        for bucket in sorted(counts):
            seen += counts[bucket]
            if seen >= limit:
                end = ceil(bucket + 1, str(q.time_dim.arg)) if q.time_dim else None
                if end is None or (q.to_ms is not None and end >= q.to_ms):
                    break
                return replace(q, to_ms=end), sum(n for b, n in counts.items() if b >= end)
        return q, 0

    def _usage(self, q: Query, limit: int) -> dict[str, Any]:
        q = self.store.bounded(q)  # one range for the rows, the untagged rows and the totals
        read, left_out = self._page(q, limit)
        # rows that overlap need their own totals: read beside the rows (the columnar copy and the
        # databases release the GIL; tags x served model over a month: two scans of ~0.25 s each)
        early = _TOTALS.submit(self.store.collect, q.with_dims(())) if q.overlapping else None
        rows = self.store.collect(read, limit if read is q else None)
        self._with_untagged(q, rows)
        cut = rows.row_count is not None and rows.row_count > len(rows.groups)  # only the first rows read
        exact = rows.exact
        if q.overlapping or cut:
            totals = early.result() if early is not None else self.store.collect(q.with_dims(()))
            total = totals.groups.get((), Agg())
            exact = exact and totals.exact  # the plan's percentiles: exact only if the totals' are too
        else:  # each request is in exactly one row: the rows add up to the totals
            total = Agg()
            for agg in rows.groups.values():
                total.merge(agg)
        ordered = sorted(rows.groups.items(), key=lambda kv: _sort_key(q.dims, kv[0], kv[1]))
        count = len(ordered) if rows.row_count is None else rows.row_count
        names = self.store.key_names({k[i] for k, _ in ordered[:limit] for i, d in enumerate(q.dims)
                                      if d.kind == "key" and k[i]}) if any(d.kind == "key" for d in q.dims) else {}
        data = []
        for key, agg in ordered[:limit]:
            row = {"group": {d.name: render_value(d, v, q.tz) for d, v in zip(q.dims, key, strict=True)},
                   **render(agg)}
            if names:
                row["key_name"] = names.get(next(v for d, v in zip(q.dims, key, strict=True) if d.kind == "key"))
            data.append(row)
        return {
            "object": "analytics.usage", "group_by": [d.name for d in q.dims],
            "filters": {"tag": q.tag, "labels": q.labels, "key": q.key_id, "model": q.model, "status": q.status,
                        "error_code": q.error_code, "provider": q.provider, "served_model": q.served_model},
            "from": q.from_ms, "to": q.to_ms, "timezone": q.tz,
            "labels": "current" if q.current_labels else "recorded",
            "overlapping": q.overlapping, **({"note": OVERLAP_NOTE} if q.overlapping else {}),
            "data": data, "truncated": count + left_out > limit, "row_count": count + left_out,
            "totals": render(total), "plan": {**_plan(rows, q.tz, exact), **(
                {"page": {"metrics_read_to": read.to_ms, "later_rows_counted": left_out}} if left_out else {})},
        }

    def tree(self, root: str | None, depth: int | None, q: Query) -> dict[str, Any]:
        """The tag hierarchy under `root` (every root when None), `depth` levels below it."""
        max_depth = MAX_DEPTH if depth is None else (root.count("/") + 1 if root else 0) + depth
        # without a root, the totals are a question of their own: read beside the tree
        early = (_TOTALS.submit(self.store.tagged_by_time, q.with_dims(()), filtered=True)
                 if root is None else None)
        c = self.store.collect_tree(root, max_depth, q)
        nodes = {key[0]: {"tag": key[0], "depth": key[0].count("/") + 1, **render(agg), "children": []}
                 for key, agg in c.groups.items()}
        roots = []
        for tag in sorted(nodes, key=lambda t: (-c.groups[(t,)].v[COST_PICO], t)):
            parent = tag.rpartition("/")[0]
            if tag != root and parent in nodes:
                nodes[parent]["children"].append(nodes[tag])
            else:
                roots.append(nodes[tag])
        if root is not None:
            totals = c.groups.get((root,), Agg())
        else:
            assert early is not None
            totals = early.result().get((), Agg())
        return {"object": "analytics.tag_tree", "root": root, "depth": depth, "from": q.from_ms, "to": q.to_ms,
                "timezone": q.tz, "filters": {"labels": q.labels},
                "overlapping": True, "note": "each request counts once in every node it is under; sibling "
                "nodes may share requests, so children can add up to more than their parent",
                "totals": render(totals), "data": roots, "plan": _plan(c, q.tz)}

    def export(self, month: str, start: int, end: int, dims: tuple[Dim, ...], rate: Decimal,
               current_labels: bool = False, tz: str = UTC) -> dict[str, Any]:
        """A month's invoice; `start` and `end` bound the month in time zone `tz`."""
        if any(d.is_tag for d in dims):
            raise InvalidRequest("an invoice needs lines that do not overlap: group by key, model, "
                                 "served_model, provider, status or label.<name>, not by tags", param="group_by")
        if any(d.kind == "time" for d in dims):
            raise InvalidRequest("an invoice covers one month: leave time.* out of group_by", param="group_by")
        q = Query(dims, from_ms=start, to_ms=end, current_labels=current_labels, tz=tz)
        c = self.store.collect(q)
        lines = []
        for key, agg in sorted(c.groups.items(), key=lambda kv: tuple((v is None, str(v)) for v in kv[0])):
            v = agg.v
            sums = {"requests": v[REQUESTS], "cost_pico": v[COST_PICO],
                    **{f: v[i] for i, f in enumerate(TOKEN_FIELDS, start=2)}}
            lines.append(({d.name: val for d, val in zip(dims, key, strict=True)}, sums))
        doc = invoice(month, [d.name for d in dims], lines, rate)
        doc["labels"] = "current" if current_labels else "recorded"
        doc["timezone"], doc["from"], doc["to"] = tz, start, end
        doc["plan"] = _plan(c, tz)
        return doc
