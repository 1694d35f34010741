"""One analytics question as one SQL statement over the columnar copy (DuckDB's dialect).

The statement's groups are keyed as `analytics/segment_reader.py` keys them, so its answer
merges with the roll-up and raw-ledger readers' (the tail of the ledger not yet copied):

* plain dimensions are columns; `label.<x>` joins the label set's (or, with `labels=current`,
  the key's) value of x; `time.*` maps each record's quarter-hour to the start of its local
  bucket through a list computed here (`core.zones`, the zone database the rest of the API
  uses, so answers agree to the millisecond in every zone);
* tag dimensions unnest each record's distinct tags (cut to n levels, within the tag filter's
  subtree); a record with none is in the group whose tag is null; the tree unnests every prefix;
* every metric is summed per group: requests, errors, tokens, cost (as 128-bit integers), the
  feedback scores, and the latency and time-to-first-token histograms (`core.histogram`).

With a `limit`, the statement returns only the first `limit` groups in the order the API shows
them (time, then cost and requests descending, then the other values as text) and counts all
of them (`row_count`): converting every group's histograms in Python cost more than the scan
(tag x customer: thousands of groups). Only where each SQL group is one answer group (no local
day or month that two SQL groups make up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tallygate.analytics.columnar_spans import gaps, offset_began, offsets, within
from tallygate.analytics.query import Dim, Query
from tallygate.core import zones
from tallygate.core.metrics import (
    CACHE_WRITE_TOKENS,
    CACHED_TOKENS,
    COST_PICO,
    ERRORS,
    FEEDBACK_COUNT,
    FEEDBACK_SUM,
    INPUT_TOKENS,
    LATENCY_START,
    OUTPUT_TOKENS,
    REASONING_TOKENS,
    REQUESTS,
    TTFT_START,
    WIDTH,
    Agg,
)
from tallygate.core.tagpath import MAX_DEPTH
from tallygate.core.timebuckets import DAY_MS, HOUR_MS

_PLAIN = {"key": "key_id", "model": "requested_model", "served_model": "served_model", "provider": "provider",
          "status": "status"}
_SUMS = (("sum(n)", REQUESTS), ("sum(errors)", ERRORS), ("sum(input_tokens)", INPUT_TOKENS),
         ("sum(output_tokens)", OUTPUT_TOKENS), ("sum(cached_tokens)", CACHED_TOKENS),
         ("sum(cache_write_tokens)", CACHE_WRITE_TOKENS), ("sum(reasoning_tokens)", REASONING_TOKENS),
         ("sum(cost_hi) * 4294967296 + sum(cost_lo)", COST_PICO), ("sum(fb_n)", FEEDBACK_COUNT),
         ("sum(fb_sum)", FEEDBACK_SUM))
# What each source row carries besides its keys: a record counts once (n = 1), a roll-up row its records
_ATTRS = ("created_at", "key_id", "label_set", "requested_model", "served_model", "provider", "status",
          "error_code", "lat_b", "ttft_b")
_RECORD_SUMS = ("1 AS n", "(status >= 400)::BIGINT AS errors", "input_tokens", "output_tokens", "cached_tokens",
                "cache_write_tokens", "reasoning_tokens", "0 AS cost_hi", "cost_pico AS cost_lo")
_ROLLED_SUMS = ("n", "errors", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
                "reasoning_tokens", "cost_hi", "cost_lo", "fb_n", "fb_sum")


@dataclass(slots=True)
class ColumnarQuestion:
    """A question, its time range and its resolved filters, for the columnar engine.

    `tree`: keys are (prefix, *time) for every tag prefix under `root` down to `max_depth`;
    `tagged`: only records with a tag, keyed by time alone (the tag tree's totals)."""

    q: Query
    from_ms: int | None
    to_ms: int | None
    key_ids: list[str] | None = None
    set_ids: list[str] | None = None
    tree: bool = False
    root: str | None = None
    max_depth: int = 0
    tagged: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    row_count: int | None = None  # all the groups, when `limit` cut them in SQL (else None)
    counted: bool = False  # the statement returns the group count as its last column
    spans: list[tuple[int, int]] | None = None  # only the records of these stretches (a roll-up answer's raw ends)
    _weighted: bool = False  # the source rows carry their histogram weight (`hw`): the hour roll-up is read
    records_table = "records"

    # ------------------------------------------------------------------------------ SQL
    def _p(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    @property
    def dims(self) -> tuple[Dim, ...]:
        """The dimensions keyed in SQL (the tree and `tagged` keep only time)."""
        q = self.q
        return tuple(d for d in q.dims if d.kind == "time") if self.tree or self.tagged else q.dims

    @property
    def time_unit(self) -> str | None:
        """The time bucket keyed (`hour`, `day`, `month`), or None without a time dimension."""
        time = next((d for d in self.dims if d.kind == "time"), None)
        return None if time is None else str(time.arg)

    def _where(self, *, tags: bool = True) -> list[str]:
        """The filters on each record (`tags`: with its tag filter, and the tree's totals' tagged records)."""
        q, where = self.q, []
        if self.from_ms is not None:
            where.append(f"created_at >= {int(self.from_ms)}")
        if self.to_ms is not None:
            where.append(f"created_at < {int(self.to_ms)}")
        for column, value in (("requested_model", q.model), ("served_model", q.served_model),
                              ("provider", q.provider), ("error_code", q.error_code)):
            if value is not None:
                where.append(f"{column} = {self._p(value)}")
        if q.status is not None:
            where.append(f"status = {int(q.status)}")
        for column, values in (("key_id", self.key_ids), ("label_set", self.set_ids)):
            if values is not None:
                where.append(self._in_list(column, values) if values else "false")
        want = self.root if self.tree else None if self.tagged else q.tag
        if want is not None and tags:
            where.append(self._carries(want))
        if self.tagged and tags:
            where.append("len(tags) > 0")
        if self.spans == []:
            where.append("false")
        return where

    def spans_filter(self) -> list[str]:
        """`spans` as one filter (an engine that reads them in one scan; DuckDB reads each apart)."""
        if not self.spans:
            return []
        return ["(" + " OR ".join(f"(created_at >= {int(a)} AND created_at < {int(b)})" for a, b in self.spans) + ")"]

    def _in_list(self, column: str, values: list[str]) -> str:
        return f"{column} IN (SELECT unnest({self._p(values)}::VARCHAR[]))"

    def _carries(self, tag: str) -> str:
        """A record has `tag` or a tag under it: `tag` is one of its prefixes."""
        return f"list_contains(p{tag.count('/') + 1}, {self._p(tag)})"

    def _under(self, kind: str, depth: int, tag: str | None) -> str:
        """The record's tags (kind 't') or prefixes ('p') of one depth, within `tag`'s subtree."""
        column = f"{kind}{depth}"
        if tag is None:
            return column
        t = self._p(tag)
        if depth == tag.count("/") + 1:
            return f"(CASE WHEN list_contains({column}, {t}) THEN [{t}] ELSE []::VARCHAR[] END)"
        return f"list_filter({column}, x -> starts_with(x, {t} || '/'))"

    def _in_subtree(self, tag: str) -> str:
        t = self._p(tag)
        return f"list_filter(tags, x -> x = {t} OR starts_with(x, {t} || '/'))"

    def _tag_list(self) -> str | None:
        """The list each record is unnested by (None: one row per record), from the depth columns."""
        q = self.q
        want = self.root if self.tree else q.tag
        dim = q.tag_dim
        if not self.tree and (dim is None or self.tagged):
            return None
        top = want.count("/") + 1 if want is not None else 1
        if self.tree:
            parts = [self._under("p", d, want) for d in range(top, min(int(self.max_depth), MAX_DEPTH) + 1)]
        elif dim is not None and dim.kind == "tag":
            parts = ["tags"] if want is None else [self._under("t", d, want) for d in range(top, MAX_DEPTH + 1)]
        else:
            assert dim is not None
            n = int(dim.arg or 0)
            parts = [self._under("t", d, want) for d in range(top, n)] + [self._under("p", n, want)]
        return " || ".join(parts) if parts else "[]::VARCHAR[]"

    def _time(self, d: Dim) -> str:
        """The bucket of each record by arithmetic on its UTC offset (constant between the range's
        DST transitions): local hours exactly; local days (and months) as the instant that is the
        local midnight by the record's own offset, which `groups` maps to the true start."""
        unit, tz = str(d.arg), self.q.tz
        if unit == "month" and self.from_ms is not None and self.to_ms is not None:
            return self._month(tz)
        step = HOUR_MS if unit == "hour" else DAY_MS
        if tz == zones.UTC:
            return f"(created_at - created_at % {step})"
        lo, hi = self.from_ms, self.to_ms
        assert lo is not None and hi is not None, "local buckets need a bounded range"
        pieces = offsets(lo, hi, tz)
        exprs = [f"(created_at - (((created_at + {off}) % {step}) + {step}) % {step})" for _, off in pieces]
        if unit == "hour":  # an hour starts no earlier than its offset (`zones.floor`: Lord Howe's half hours)
            began = [offset_began(lo, tz), *(start for start, _ in pieces[1:])]
            exprs = [f"greatest({e}, {b})" for e, b in zip(exprs, began, strict=True)]
        if len(exprs) == 1:
            return exprs[0]
        return ("(CASE " + " ".join(f"WHEN created_at < {start} THEN {e}" for (start, _), e
                                    in zip(pieces[1:], exprs[:-1], strict=True)) + f" ELSE {exprs[-1]} END)")

    def _month(self, tz: str) -> str:
        """The start of each record's local month, from the range's month boundaries: one SQL group
        per answer group (by local days, Python merged tens of groups into each month)."""
        assert self.from_ms is not None and self.to_ms is not None
        start = zones.floor(self.from_ms, "month", tz)
        cases = []
        while True:
            nxt = zones.after(start, "month", tz)
            if nxt >= self.to_ms:
                break
            cases.append(f"WHEN created_at < {nxt} THEN {start}")
            start = nxt
        return f"(CASE {' '.join(cases)} ELSE {start} END)" if cases else str(start)

    def _true_bucket(self, d: Dim, value: int) -> int:
        """A time key from SQL as the start of its local bucket (hours are exact already)."""
        unit = str(d.arg)
        if unit == "hour" or (unit == "day" and self.q.tz == zones.UTC):
            return value
        return zones.floor(value + 2 * HOUR_MS, unit, self.q.tz)  # within a DST shift of local midnight

    def cuts(self) -> bool:
        """Whether the statement may stop at `limit` groups: each SQL group is one answer group
        (no local day or month made of several SQL groups, which `groups` merges)."""
        if self.limit is None or self.tree or self.tagged:
            return False
        time = next((d for d in self.dims if d.kind == "time"), None)
        if time is None or time.arg == "hour":
            return True
        if time.arg != "day":
            return False
        if self.q.tz == zones.UTC:
            return True
        return self.from_ms is not None and self.to_ms is not None and len(offsets(self.from_ms, self.to_ms,
                                                                                  self.q.tz)) == 1

    def _order(self) -> str:
        """The API's row order (`analytics/service.py` `_sort_key`) over the SQL groups."""
        times = [f"g{i} ASC" for i, d in enumerate(self.dims) if d.kind == "time"]
        rest = [f"coalesce(CAST(g{i} AS VARCHAR), '') ASC" for i, d in enumerate(self.dims) if d.kind != "time"]
        cost = f"s{next(j for j, (_, pos) in enumerate(_SUMS) if pos == COST_PICO)}"
        return ", ".join([*times, f"coalesce({cost}, 0) DESC", "s0 DESC", *rest])

    def rollable(self) -> bool:
        """Whether the day roll-up of tags (`columnar.py`, `tag_days`) answers this question's whole
        UTC days: it keeps every record's tag prefixes with all its attributes, by UTC day, so a tag
        dimension, the tree or a tag filter read it unless time is bucketed by the hour (a local day or
        month: the UTC days within one such bucket, see `columnar_spans.in_buckets`). The tag tree's totals (`tagged`)
        read it too: the records of its whole days less its untagged rows (`tg IS NULL`), where the
        records' tag lists cost four times the scan."""
        if self.spans is not None or not (self.tree or self.tagged or self.q.tag_dim is not None
                                          or self.q.tag is not None):
            return False
        time = next((d for d in self.dims if d.kind == "time"), None)
        return time is None or time.arg in ("day", "month")

    def _rolled_where(self) -> list[str]:
        """`_where` for the roll-up's rows: the same attribute filters; the tag list as row kinds."""
        q = self.q
        where = self._where(tags=False)
        want = self.root if self.tree else q.tag
        dim = q.tag_dim
        if self.tagged:  # the untagged records (subtracted from all of them)
            return [*where, "tg IS NULL"]
        if not self.tree and dim is None:  # a tag filter alone: each record's row of that prefix
            assert want is not None
            return [*where, f"tg = {self._p(want)}"]
        if want is not None:
            t = self._p(want)
            # the range first: it skips the row groups of other tags ('0' follows '/')
            where.append(f"tg >= {t} AND tg < {t} || '0' AND (tg = {t} OR starts_with(tg, {t} || '/'))")
        if self.tree:
            where.append(f"depth BETWEEN 1 AND {min(int(self.max_depth), MAX_DEPTH)}")
        elif dim is not None and dim.kind == "tag":
            where.append("own")
        else:
            assert dim is not None
            where.append(f"((own AND depth < {int(dim.arg or 0)}) OR depth = {int(dim.arg or 0)})")
        return where

    def _records(self, lo: int | None, hi: int | None, feedback: bool, *, tag_filter: bool = True) -> str:
        """The records of [lo, hi) as source rows (unnested by `tag_list`), narrow: only what is keyed
        or summed (a `*` would carry every list column through the unnest); `tag_filter`: with the tag filter."""
        where, tag_list = self._where(tags=tag_filter), self._tag_list()
        if lo is not None:
            where.append(f"created_at >= {int(lo)}")
        if hi is not None:
            where.append(f"created_at < {int(hi)}")
        fb = (["(f.score_milli IS NOT NULL)::BIGINT AS fb_n", "coalesce(f.score_milli, 0) AS fb_sum"] if feedback
              else ["0 AS fb_n", "0 AS fb_sum"])
        cols = [f"r.{c}" for c in _ATTRS] + list(_RECORD_SUMS) + fb + (["1 AS hw"] if self._weighted else [])
        if tag_list is not None:
            cols.append(f"{tag_list} AS tl")
        rows = (f"SELECT {', '.join(cols)} FROM records r"
                f"{' LEFT JOIN feedback f ON f.request_id = r.id' if feedback else ''}"
                f"{' WHERE ' + ' AND '.join(where) if where else ''}")
        if tag_list is None:
            return rows
        tags = "tl" if self.tree else "CASE WHEN len(tl) = 0 THEN [NULL::VARCHAR] ELSE tl END"
        return f"SELECT * EXCLUDE (tl), unnest({tags}) AS tg FROM ({rows})"

    def _rolled(self, spans: list[tuple[int, int]], tagged_rows: bool, table: str = "tag_days", *,
                at: int | None = None, less: bool = False) -> str:
        """The roll-up's rows of whole UTC days (months, from `tag_months`) in `spans`, as source rows
        (for `tagged`, the untagged rows with their sums negated); `at`: keyed at that time; `less`:
        their sums negated."""
        where = self._rolled_where()
        where.append("(" + " OR ".join(f"(created_at >= {int(a)} AND created_at < {int(b)})" for a, b in spans)
                     + ")")
        negated = self.tagged != less
        sums = [f"-{c} AS {c}" for c in _ROLLED_SUMS] if negated else list(_ROLLED_SUMS)
        attrs = list(_ATTRS) if at is None else [f"{int(at)}::BIGINT AS created_at", *_ATTRS[1:]]
        weight = [f"{'-' if negated else ''}n AS hw"] if self._weighted else []
        cols = [*attrs, *sums, *weight] + (["tg"] if tagged_rows else [])
        return f"SELECT {', '.join(cols)} FROM {table} WHERE {' AND '.join(where)}"

    def _hourly_rows(self, spans: list[tuple[int, int]], tagged_rows: bool, table: str = "tag_hours") -> list[str]:
        """The hour roll-up's rows of whole UTC hours in `spans` (`columnar_spans.hour_spans`) as source rows: one
        statement of its sums (histogram weight 0) for the sums, then two of its latency and
        time-to-first-token buckets (no sums; their counts as weight `hw`) for the histograms.
        `tag_hours` keeps no attribute (NULL), `usage_hours` no tag."""
        where = self._rolled_where() if table == "tag_hours" else self._where(tags=False)
        where.append("(" + " OR ".join(f"(created_at >= {int(a)} AND created_at < {int(b)})" for a, b in spans)
                     + ")")
        none = ["NULL::VARCHAR AS key_id", "NULL::VARCHAR AS label_set", "NULL::VARCHAR AS requested_model",
                "NULL::VARCHAR AS served_model", "NULL::VARCHAR AS provider", "NULL::SMALLINT AS status",
                "NULL::VARCHAR AS error_code"] if table == "tag_hours" else list(_ATTRS[1:8])
        zero = [f"0::BIGINT AS {c}" for c in _ROLLED_SUMS]
        tg = ["tg"] if tagged_rows else []
        rows = [["created_at", *none, "NULL::UTINYINT AS lat_b", "NULL::UTINYINT AS ttft_b", *_ROLLED_SUMS,
                 "0::BIGINT AS hw", *tg],
                ["created_at", *none, "unnest(lat_bs) AS lat_b", "NULL::UTINYINT AS ttft_b", *zero,
                 "unnest(lat_ns) AS hw", *tg],
                ["created_at", *none, "NULL::UTINYINT AS lat_b", "unnest(ttft_bs) AS ttft_b", *zero,
                 "unnest(ttft_ns) AS hw", *tg]]
        return [f"SELECT {', '.join(cols)} FROM {table} WHERE {' AND '.join(where)}" for cols in rows]

    def usage_hourly(self) -> bool:
        """Whether the hour roll-up of everything but tags (`columnar.py`, `usage_hours`) answers this
        question's whole UTC hours: no tag dimension, filter, tree or tagged totals; any other
        dimension, filter, time bucket and zone."""
        return self.spans is None and not (self.tree or self.tagged or self.q.tag_dim is not None
                                           or self.q.tag is not None)

    def hourly(self) -> bool:
        """Whether the narrow hour roll-up of tags (`columnar.py`, `tag_hours`) answers this question's
        whole UTC hours: tags (a dimension, the tree or the filter alone) by any time bucket in any zone,
        with no other dimension and no filter but the tag's (it keeps no other attribute)."""
        q = self.q
        if self.spans is not None or self.tagged or not (self.tree or q.tag_dim is not None or q.tag is not None):
            return False
        if self.key_ids is not None or self.set_ids is not None or q.model is not None or q.record_filters:
            return False
        return all(d.kind == "time" or d.is_tag for d in self.dims)

    def keys_sql(self, after: tuple[int, str] | None, limit: int) -> tuple[str, dict[str, Any]]:
        """The (created_at, id) of the first `limit` matching records newest first, after the logs
        cursor `after` (a record's (created_at, id); an empty id: every record before created_at)."""
        self.params = {}
        where = self._where()
        if after is not None:
            ms, rid = after
            where.append(f"(created_at < {int(ms)} OR (created_at = {int(ms)} AND id < {self._p(rid)}))" if rid
                         else f"created_at < {int(ms)}")
        return (f"SELECT created_at, id FROM {self.records_table}{' WHERE ' + ' AND '.join(where) if where else ''} "
                f"ORDER BY created_at DESC, id DESC LIMIT {int(limit)}"), self.params

    def sql(self, *, feedback: bool, rolled: list[tuple[int, int]] | None = None,
            months: list[tuple[int, int]] | None = None,
            split: list[tuple[int, int, int, list[tuple[int, int]]]] | None = None,
            hours: list[tuple[int, int]] | None = None,
            usage: list[tuple[int, int]] | None = None,
            rolled_usage: list[tuple[int, int]] | None = None) -> tuple[str, dict[str, Any]]:
        """The statement and its parameters; `feedback`: join the scores (skipped when none exist);
        `rolled`: the stretches of whole UTC days read from the tag roll-up (`rollable` questions), of
        which `months` (whole UTC months) are read from the month roll-up, and the months of `split`
        (`columnar_spans.split_months`) from the month roll-up less the day roll-up's rows of their cut days; `hours`:
        the stretches of whole UTC hours read from the narrow hour roll-up (`columnar_spans.hour_spans`); `usage`: those
        read from the hour roll-up of everything but tags; `rolled_usage`: the stretches of `rolled` whose
        records the tag tree's totals (`tagged`) read from that roll-up (a month of one team: its 65k
        hour rows, not its 1.3M records of 10M scanned twice)."""
        self.params = {}
        usage = usage or []
        rolled_usage = (rolled_usage or []) if self.tagged else []
        hours = [*(hours or []), *usage]
        self._weighted = bool(hours or rolled_usage)  # every source row carries its histogram weight (`hw`)
        q, dims = self.q, self.dims
        keys, joins = [], []
        if self.tree:
            keys.append("tg")
        for i, d in enumerate(dims):
            if d.is_tag:
                keys.append("tg")
            elif d.kind == "time":
                keys.append(self._time(d))
            elif d.kind == "label":
                table, col = ("key_labels", "key_id") if q.current_labels else ("label_values", "set_id")
                source = "key_id" if q.current_labels else "label_set"
                joins.append(f"LEFT JOIN {table} l{i} ON l{i}.{col} = r.{source} AND l{i}.name = "
                             f"{self._p(str(d.arg))}")
                keys.append(f"l{i}.value")
            else:
                keys.append(f"r.{_PLAIN[d.kind]}")
        # the records of each stretch apart (one range each: DuckDB skips the row groups outside it,
        # where an OR of 30 ranges read every row group of the month)
        stretches = self.spans or gaps(self.from_ms, self.to_ms, sorted([*(rolled or []), *hours]))
        parts = [self._records(lo, hi, feedback) for lo, hi in stretches]
        if self.tagged:  # the rolled-up days' records, tagged or not (their untagged rows are subtracted)
            parts += [self._records(lo, hi, feedback, tag_filter=False)
                      for a, b in gaps(None, None, rolled_usage) for lo, hi in within(rolled or [], a, b)]
        split = split or []
        whole = sorted([*(months or []), *((a, b) for a, b, _, _ in split)])
        days = [span for lo, hi in gaps(None, None, whole) for span in within(rolled or [], lo, hi)]
        if days:
            parts.append(self._rolled(days, "tg" in keys))
        if months:
            parts.append(self._rolled(months, "tg" in keys, "tag_months"))
        for a, b, at, cut in split:
            parts.append(self._rolled([(a, b)], "tg" in keys, "tag_months", at=at))
            parts.append(self._rolled(cut, "tg" in keys, at=at, less=True))
        # an hour roll-up's sums rows go to the sums alone, its bucket rows to the histograms alone
        hourly = (self._hourly_rows(usage or rolled_usage, False, "usage_hours") if usage or rolled_usage
                  else self._hourly_rows(hours, "tg" in keys) if hours else [])
        sums_rows, bucket_rows = hourly[:1], hourly[1:]
        sums = [s for s, _ in _SUMS]
        count = "sum(hw)" if self._weighted else "sum(n)"
        if not rolled and not hours:  # records only: fewer aggregates (DuckDB's group-by costs one pass per aggregate)
            count = sums[0] = "count(*)"
            sums[1], sums[7] = "count(*) FILTER (WHERE status >= 400)", "sum(cost_lo)"
        if not feedback:
            sums[8], sums[9] = "0", "0"
        groups = [f"g{i}" for i in range(len(keys))]
        # The sums per group (cut to the first `limit` groups in the API's order, counting them all), and
        # apart the count per group and latency / time-to-first-token bucket, as lists per group. Summing
        # every metric per (group, bucket, bucket) cost three times as much: many more groups, all wide.
        def keyed(rows: list[str]) -> str:
            return (f"SELECT {', '.join(f'{k} AS g{i}' for i, k in enumerate(keys))}{', ' if keys else ''}r.* "
                    f"FROM ({' UNION ALL '.join(rows)}) r {' '.join(joins)}")

        src = keyed(parts + sums_rows)
        self.counted = bool(keys) and self.cuts()
        top = (f"SELECT {', '.join([*groups, *(f'{x} AS s{j}' for j, x in enumerate(sums))])}"
               f"{', count(*) OVER () AS c' if self.counted else ''} FROM src"
               f"{' GROUP BY ' + ', '.join(groups) if keys else ''}"
               f"{f' ORDER BY {self._order()} LIMIT {int(self.limit or 0)}' if self.counted else ''}")
        hist = (f"SELECT {', '.join([*groups, 'lat_b', 'ttft_b'])}, {count} AS k "
                f"FROM {'hsrc' if self._weighted else 'src'} GROUP BY ALL")
        same = " AND ".join(f"top.{g} IS NOT DISTINCT FROM h.{g}" for g in groups) or "true"
        outer = [*(f"top.{g}" for g in groups), *(f"any_value(top.s{j})" for j in range(len(sums))),
                 "list(h.lat_b)", "list(h.k)", "list(h.ttft_b)"] + (["any_value(top.c)"] if self.counted else [])
        hsrc = f", hsrc AS NOT MATERIALIZED ({keyed(parts + bucket_rows)})" if self._weighted else ""
        sql = (f"WITH src AS {'' if self._few() else 'NOT '}MATERIALIZED ({src}){hsrc}, top AS ({top}), h AS ({hist}) "
               f"SELECT {', '.join(outer)} FROM top JOIN h ON {same}"
               f"{' GROUP BY ' + ', '.join(f'top.{g}' for g in groups) if keys else ''}")
        return sql, self.params

    def _few(self) -> bool:
        """Whether `src` is kept (materialized) for the sums and the histograms to read, rather than
        read twice: when it is read twice (no hour roll-up rows) and a filter on errors leaves few of
        its rows (failed requests: a few percent). provider x tag_level.1 x day of status 429 over a
        month at 10M records: 450-680 ms read twice, 230-270 ms kept; with status 200 (96% of the
        records) keeping them was slower (0.5-1.6 s against 0.4-1.5 s)."""
        q = self.q
        return not self._weighted and ((q.status is not None and q.status >= 400) or q.error_code is not None)

    # --------------------------------------------------------------------------- answers
    def buckets(self, rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Agg]:
        """`groups` of the rows of `sql`: the buckets' lists made histograms."""
        if self.counted:  # the first `limit` groups, each with the count of all of them
            self.row_count = int(rows[0][-1]) if rows else 0
            rows = [row[:-1] for row in rows]
        made = []
        for row in rows:
            lat: dict[int, int] = {}
            ttft: dict[int, int] = {}
            for lb, tb, n in zip(row[-3] or (), row[-1] or (), row[-2] or (), strict=True):
                if lb is not None:  # the hour roll-up's rows carry one histogram's bucket each
                    lat[lb] = lat.get(lb, 0) + n
                if tb is not None:
                    ttft[tb] = ttft.get(tb, 0) + n
            made.append((*row[:-3], lat, ttft))
        return self.groups(made)

    def groups(self, rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Agg]:
        """The answer groups of rows (keys, `_SUMS`, the feedback count and sum, the latency and
        time-to-first-token histograms as {bucket: count})."""
        shift = 1 if self.tree else 0
        n = len(self.dims) + shift
        status_at = [i + shift for i, d in enumerate(self.dims) if d.kind == "status"]
        times = [(i + shift, d) for i, d in enumerate(self.dims) if d.kind == "time"]
        out: dict[tuple[Any, ...], Agg] = {}
        for row in rows:
            if not row[n]:  # no record at all (an ungrouped count over an empty range)
                continue
            key = list(row[:n])
            for i in status_at:
                key[i] = None if key[i] is None else int(key[i])
            for i, d in times:
                key[i] = self._true_bucket(d, int(key[i]))
            v = [0] * WIDTH
            for (_, pos), value in zip(_SUMS, row[n:], strict=False):
                v[pos] = int(value or 0)
            for start, hist in ((LATENCY_START, row[-2]), (TTFT_START, row[-1])):
                for b, count in (hist or {}).items():
                    v[start + int(b)] += int(count)
            have = out.get(tuple(key))
            if have is None:
                out[tuple(key)] = Agg(v, None, None)
            else:  # two SQL groups of one local day or month
                have.add_vector(v)
        return out

