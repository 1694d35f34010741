"""The SQL of analytics: one roll-up segment or one raw segment, summed into groups.

Each function reads one time segment and adds its rows into `out`, a dict from a group key
(one value per dimension of the question) to an `Agg`. Roll-up rows are summed by SQL
(`GROUP BY` the columns the dimensions need) and mapped to group keys in Python; raw records
are aggregated in Python, keeping exact durations for exact percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Table, Text, and_, case, cast, func, or_, select, true

from tallygate.analytics.plan import Segment
from tallygate.analytics.query import Dim, Query
from tallygate.core.histogram import EDGES_US
from tallygate.core.metrics import COST_PICO, LATENCY_START, METRICS, TTFT_START, WIDTH, Agg
from tallygate.core.timebuckets import DAY_MS, HOUR_MS, month_floor
from tallygate.core.zones import UTC, after, floor
from tallygate.store.schema import feedback, request_tags, requests, tag_rollups

_NOT_COST = [m for m in METRICS if m != "cost_pico"]
_COST_SPLIT = 10**6  # SUM(cost_pico) could pass 2^63 (9.2M USD) in one group: sum it in two parts


_SUMS: dict[str, list[Any]] = {}


def metric_columns(t: Table) -> list[Any]:
    """SUM of every metric column (as BIGINT), cost last as two partial sums. Built once per table:
    134 expressions cost milliseconds to construct, per segment read."""
    found = _SUMS.get(t.name)
    if found is None:
        cost = t.c.cost_pico
        found = _SUMS[t.name] = ([cast(func.sum(t.c[m]), BigInteger) for m in _NOT_COST]
                                 + [cast(func.sum(cost.op("/")(_COST_SPLIT)), BigInteger),
                                    cast(func.sum(cost.op("%")(_COST_SPLIT)), BigInteger)])
    return found


def metric_vector(values: Iterable[Any]) -> list[int]:
    """The metric vector of one summed row (the inverse of `metric_columns`)."""
    v = list(values)  # SUMs over at least one row: never NULL
    low, high = v.pop(), v.pop()
    v.insert(COST_PICO, high * _COST_SPLIT + low)
    return v


def time_range(col, seg: Segment) -> list[Any]:  # type: ignore[no-untyped-def]
    where = []
    if seg.from_ms is not None:
        where.append(col >= seg.from_ms)
    if seg.to_ms is not None:
        where.append(col < seg.to_ms)
    where += [or_(col < a, col >= b) for a, b in seg.holes]
    return where


MAX_LISTED_BUCKETS = 2000  # a segment of more roll-up buckets than this is read as a range


def listed_buckets(conn: Connection, seg: Segment) -> list[int] | None:
    """The hour (day) buckets of a bounded hour (day) segment, less its holes, for SQLite: `bucket IN
    (...)` seeks each bucket's rows by the key (bucket, ...), where a range less holes reads the rows
    of the holes too and tests each hole per row (a ragged fortnight's 43 hours around its whole days
    read all 14 days; label.team by Kolkata day tested 30 holes per row). None: a range."""
    step = {"hour": HOUR_MS, "day": DAY_MS}.get(seg.level)
    if conn.dialect.name != "sqlite" or step is None or seg.from_ms is None or seg.to_ms is None:
        return None
    first = seg.from_ms + (-seg.from_ms) % step
    if (seg.to_ms - first) // step > MAX_LISTED_BUCKETS:
        return None
    return [b for b in range(first, seg.to_ms, step) if not any(a <= b < z for a, z in seg.holes)]


def under(col, tag: str):  # type: ignore[no-untyped-def]
    """`col` is `tag` or a path under it."""
    return or_(col == tag, func.substr(col, 1, len(tag) + 1) == tag + "/")


def summed_rows(conn: Connection, t: Table, group_cols: list[Any], where: list[Any],
                out: dict[tuple[Any, ...], Agg], key_of: Callable[[tuple[Any, ...]], tuple[Any, ...] | None], *,
                few_per_group: bool = False) -> None:
    """Add the roll-up rows matching `where`, summed by `group_cols` (column names or expressions),
    to out[key_of(values)].

    SQL sums them (`GROUP BY`), except when `few_per_group` says a group has only a row or two
    (tag prefixes of one month): then 134 aggregates per output group cost more (twice, on
    SQLite) than reading the rows and adding the few duplicates up in Python."""
    cols = [t.c[c] if isinstance(c, str) else c for c in group_cols]
    if few_per_group:
        query, to_vector = select(*cols, *(t.c[m] for m in METRICS)).where(*where), None
    else:
        query, to_vector = select(*cols, *metric_columns(t)).where(*where), metric_vector
        if cols:
            query = query.group_by(*cols)
    n = len(cols)
    for row in conn.execute(query):
        if row[n] is None:  # SUM over no rows at all
            continue
        key = key_of(tuple(row[:n]))
        if key is None:
            continue
        values = row[n:] if to_vector is None else to_vector(row[n:])
        agg = out.get(key)
        if agg is None:
            out[key] = Agg(list(values), None, None)
        else:
            agg.add_vector(values)


MAX_LOCAL_BUCKETS = 1000  # a CASE of more local bucket starts than this: the roll-up buckets are grouped


def local_bucket(t: Table, seg: Segment, dim: Dim | None, tz: str = UTC) -> Any:
    """The column a roll-up segment is grouped by for time dimension `dim`: its `bucket`, or, when
    the segment's rows are finer than `dim` (hours of local days, days of months), the start of the
    local bucket each row is in, as a CASE over the segment's local bucket boundaries. A roll-up
    segment never straddles a local boundary inside a row (`plan.split`), so this is exact, and SQL
    sums a New York month of hours into 30 rows per group instead of 720 added up in Python."""
    col = t.c.bucket
    levels = ("month", "day", "hour")
    if (dim is None or seg.level not in levels or seg.from_ms is None or seg.to_ms is None
            or levels.index(seg.level) <= levels.index(str(dim.arg))):
        return col
    unit, starts = str(dim.arg), [floor(seg.from_ms, str(dim.arg), tz)]
    while len(starts) <= MAX_LOCAL_BUCKETS:
        nxt = after(starts[-1], unit, tz)
        if nxt >= seg.to_ms:
            break
        starts.append(nxt)
    else:
        return col
    whens = [(col < b, a) for a, b in zip(starts, starts[1:], strict=False)] or [(col < seg.to_ms, starts[0])]
    return case(*whens, else_=starts[-1]).label("bucket")


def time_value(dim: Dim, bucket: int, tz: str = UTC) -> int:
    """The start of the local time bucket of `dim` that holds `bucket` (a UTC roll-up bucket or a time)."""
    return floor(bucket, str(dim.arg), tz)


# `tags` as its stored text: the reader parses each distinct list once (SQLAlchemy's JSON type would
# decode every row)
RAW_COLUMNS = [requests.c.created_at, requests.c.key_id, requests.c.label_set, cast(requests.c.tags, Text),
               requests.c.requested_model, requests.c.served_model, requests.c.provider, requests.c.status,
               requests.c.input_tokens, requests.c.output_tokens, requests.c.cached_tokens,
               requests.c.cache_write_tokens, requests.c.reasoning_tokens, requests.c.cost_pico,
               requests.c.latency_us, requests.c.ttft_us, feedback.c.score_milli]


def tagged_records(tag: str, seg: Segment) -> ColumnElement[bool]:
    """A record carries a tag under `tag`, found by the request_tags key (tag, created_at) of each
    tag under it (from the month roll-ups). For a rare tag; a common one is checked per record."""
    t, rt = tag_rollups["month"], request_tags.c
    months = [] if seg.from_ms is None else [t.c.bucket >= month_floor(seg.from_ms)]
    if seg.to_ms is not None:
        months.append(t.c.bucket < seg.to_ms)
    tags = select(t.c.prefix).where(t.c.is_tag == true(), under(t.c.prefix, tag), *months).distinct()
    return requests.c.id.in_(select(rt.request_id).where(rt.tag.in_(tags), *time_range(rt.created_at, seg)))


def record_filters(q: Query) -> list[Any]:
    """The question's filters on record columns only the raw ledger holds (status, error code, ...)."""
    c = requests.c
    where = [] if q.status is None else [c.status == q.status]
    for col, value in ((c.error_code, q.error_code), (c.provider, q.provider), (c.served_model, q.served_model)):
        if value is not None:
            where.append(col == value)
    return where


def raw_records(conn: Connection, seg: Segment, *, tag: str | None, key_ids: list[str] | None,
                model: str | None, set_ids: list[str] | None, sparse_tag: bool = False,
                extra: list[Any] | None = None) -> Iterable[Any]:
    """Ledger records of one segment (with their feedback score), filtered in SQL (but for a
    common tag, which the caller checks on each record's tags); `extra`: more conditions."""
    c = requests.c
    where = time_range(c.created_at, seg) + list(extra or ())
    if tag is not None and sparse_tag:
        where.append(tagged_records(tag, seg))
    if key_ids is not None:
        where.append(c.key_id.in_(key_ids))
    if model is not None:
        where.append(c.requested_model == model)
    if set_ids is not None:
        where.append(c.label_set.in_(set_ids))
    query = (select(*RAW_COLUMNS).select_from(requests.outerjoin(feedback, feedback.c.request_id == c.id))
             .where(and_(true(), *where)))
    if conn.dialect.name == "postgresql":
        # Rows are streamed through a server-side cursor, for which PostgreSQL plans as if only
        # a tenth will be read (a nested loop where a hash join is right). All are read.
        conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
    return conn.execute(query.execution_options(yield_per=5000))  # streamed, 5,000 rows at a time


def tag_groups(tags: list[str], dim: Dim | None, tag: str | None, max_depth: int | None = None) -> list[Any]:
    """The values a record's tags give a tag dimension ([None] when it has none).

    `tag` limits them to that subtree; `dim` None means every prefix (the tag tree), down to
    `max_depth` levels."""
    if tag is not None:
        inside = tag + "/"
        tags = [t for t in tags if t == tag or t.startswith(inside)]
    if not tags:
        return [] if dim is None else [None]
    if dim is None:
        found: dict[str, None] = {}
        top = tag.count("/") + 1 if tag is not None else 1
        for t in tags:
            parts = t.split("/")
            for d in range(top, min(len(parts), len(parts) if max_depth is None else max_depth) + 1):
                found["/".join(parts[:d])] = None
        return list(found)
    if dim.kind == "tag":
        return list(dict.fromkeys(tags))
    n = int(dim.arg or 0)
    return list(dict.fromkeys("/".join(t.split("/")[:n]) for t in tags))


def _bucket(col: Any) -> Any:
    """The histogram bucket of a duration in microseconds, in SQL (`core.histogram.bucket`)."""
    return case(*[(col < edge, i) for i, edge in enumerate(EDGES_US)], else_=len(EDGES_US))


def raw_summed(conn: Connection, seg: Segment, group: list[Any], *, key_ids: list[str] | None, model: str | None,
               set_ids: list[str] | None, tagged: bool = False) -> dict[tuple[Any, ...], list[int]]:
    """The raw records of one segment summed by SQL into metric vectors, by the values of `group`
    (with `tagged`, only the records with at least one tag).

    For the ragged ends of a roll-up answer (whose percentiles come from histograms anyway): the
    database counts each group's records per latency and TTFT bucket, so Python handles a few rows
    per group instead of every record."""
    c = requests.c
    where = time_range(c.created_at, seg)
    if tagged:
        where.append(cast(c.tags, Text) != "[]")  # as the writer stores an empty list
    if key_ids is not None:
        where.append(c.key_id.in_(key_ids))
    if model is not None:
        where.append(c.requested_model == model)
    if set_ids is not None:
        where.append(c.label_set.in_(set_ids))
    lat = _bucket(c.latency_us)
    ttft = case((c.ttft_us.is_(None), -1), else_=_bucket(c.ttft_us))
    sums = [func.count(), func.sum(case((c.status >= 400, 1), else_=0)), func.sum(c.input_tokens),
            func.sum(c.output_tokens), func.sum(c.cached_tokens), func.sum(c.cache_write_tokens),
            func.sum(c.reasoning_tokens), func.sum(c.cost_pico), func.count(feedback.c.score_milli),
            func.coalesce(func.sum(feedback.c.score_milli), 0)]
    query = (select(*group, lat, ttft, *sums)
             .select_from(requests.outerjoin(feedback, feedback.c.request_id == c.id))
             .where(and_(true(), *where)).group_by(*group, lat, ttft))
    out: dict[tuple[Any, ...], list[int]] = {}
    n = len(group)
    for row in conn.execute(query):
        key = tuple(row[:n])
        v = out.get(key)
        if v is None:
            v = out[key] = [0] * WIDTH
        count = int(row[n + 2])
        for i, value in enumerate(row[n + 2:]):
            v[i] += int(value or 0)
        v[LATENCY_START + row[n]] += count
        if row[n + 1] >= 0:
            v[TTFT_START + row[n + 1]] += count
    return out
