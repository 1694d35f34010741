"""Answering analytics questions from the roll-ups, the columnar copy and the raw ledger.

`collect(q)` plans the question (`analytics/plan.py`), reads every time segment from its table
and merges the rows into groups: a dict from group key (one value per dimension) to `Agg`.
Totals are always a separate `collect` without dimensions, so each request counts once in
them, however many rows it is in.

Label dimensions: the usage roll-ups keep a label-set id per row; `label.x` groups by that id
in SQL and maps each set to its value of x here. With `labels=current` they group by key and
map each key to its labels now. The dim roll-ups hold each label's values themselves; requests
without the label are their '' row (every request) less the label's rows.

Every question is answered; none is refused for its size. What no roll-up holds (tags crossed
with other dimensions, the filters on status, error code, provider and served model, label
filters on the tag tree) and local time buckets (any zone, where roll-up hours would have to be
cut) are answered by the columnar engine (`analytics/columnar.py`) over the settled ledger plus
the raw ledger for the last minutes it has not copied yet; on PostgreSQL also the usage questions
whose roll-up read would sum hour rows (`_sums_usage_hours`). Without a columnar engine they are
read from the raw ledger (exact, but slow on millions of records). Within one answer
(`sharing`), a raw segment is read once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from tallygate.analytics.columnar_spans import offsets
from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.analytics.cover import cover
from tallygate.analytics.mirror import ColumnarEngine, Mirror
from tallygate.analytics.plan import Segment, levels_for, merged, plan, segments_for
from tallygate.analytics.query import Query
from tallygate.analytics.segment_reader import SegmentReader, TagMode
from tallygate.core.metrics import REQUESTS, Agg
from tallygate.core.timebuckets import HOUR_MS
from tallygate.core.zones import UTC
from tallygate.store.hours import Parts, all_counts, hour_counts, records_between
from tallygate.store.schema import api_keys, label_sets, requests, tag_rollups

log = logging.getLogger("tallygate.analytics")
SYNC_EVERY_S = 1.0  # a question brings the columnar copy up to date at most this often
OPEN_WAIT_S = 3.0  # at most this long a question waits for the copy to open and copy labels and scores
_SPARSE = 0.05  # a tag filter matching less than this share of the records is read by its index



@dataclass(slots=True)
class Collected:
    groups: dict[tuple[Any, ...], Agg]
    family: str
    segments: list[Segment] = field(default_factory=list)
    raw_estimate: int = 0  # upper bound of the raw records read (from the hour roll-ups), when known
    less: list[Segment] = field(default_factory=list)  # read and subtracted (`analytics/cover.py`)
    row_count: int | None = None  # all the groups, when only the first `limit` were read (else None)
    catching_up: bool = False  # the columnar copy answered while it is being brought up to date

    @property
    def exact(self) -> bool:
        return all(s.level == "raw" for s in self.segments) and not self.less and self.family != "columnar"


# The threads that read a roll-up answer's raw ends from the columnar copy (DuckDB and SQLite both
# release the GIL: the two halves of one answer overlap on two cores)
_ENDS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tallygate-ends")
RARE_LABEL_SETS = 0.1  # a label filter that at most this share of the label sets pass is read by the copy


class AnalyticsStore:
    """Synchronous analytics queries (run them from a worker thread). With `raw_only` every
    question is answered from the raw ledger: slow, exact, and a check on the roll-ups. With a
    `columnar` engine, the questions the roll-ups do not hold are answered by it; with `open_columnar`,
    the engine is opened by the first question that needs it (None from it: the engine is off)."""

    def __init__(self, engine: Engine, *, raw_only: bool = False, columnar: ColumnarEngine | None = None,
                 sync_every_s: float = SYNC_EVERY_S,
                 open_columnar: Callable[[], ColumnarEngine | None] | None = None) -> None:
        self._engine = engine
        self._raw_only = raw_only
        self.columnar = columnar
        self.mirror = None if columnar is None else Mirror(engine, columnar)
        self._opener = None if columnar is not None else open_columnar
        self._opening = threading.Lock()
        self._sync_every = sync_every_s
        self._synced_at = 0.0
        self._syncing = threading.Lock()
        self._warming = threading.Lock()  # held while a background thread makes the first copy
        self._warmer: threading.Thread | None = None
        self._stopping = False
        self._local = threading.local()  # .memo: raw segments read during one answer (`sharing`)
        self._sets: dict[str, dict[str, Any]] = {}

    @property
    def columnar_configured(self) -> bool:
        """Whether a columnar engine answers (open, or to be opened by the first question)."""
        return self.columnar is not None or self._opener is not None

    def open_columnar(self) -> ColumnarEngine | None:
        """The columnar engine, opened now if it was not (once; thread-safe)."""
        if self.columnar is None and self._opener is not None:
            with self._opening:
                if self.columnar is None and self._opener is not None:
                    columnar = self._opener()
                    if columnar is not None:
                        self.mirror = Mirror(self._engine, columnar)
                    self.columnar, self._opener = columnar, None
        return self.columnar

    def sync(self, *, wait: bool = True, now_ms: int | None = None) -> int:
        """Bring the columnar copy up to date (records copied) as of `now_ms` (default: now); with
        `wait` False, skip when another thread is at it or it was done less than `sync_every_s` ago."""
        if self.mirror is None:
            return 0
        if not wait and time.monotonic() - self._synced_at < self._sync_every:
            return 0
        if not self._syncing.acquire(blocking=wait):
            return 0
        try:
            copied = self.mirror.sync(int(time.time() * 1000) if now_ms is None else now_ms)
            self._synced_at = time.monotonic()
            return copied
        finally:
            self._syncing.release()

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
    def collect(self, q: Query, limit: int | None = None) -> Collected:
        """The groups of `q` (keys: one value per dimension, in order). With `limit`, an engine may
        return only the first `limit` groups in the API's order, and then says how many there are
        (`Collected.row_count`)."""
        memo = getattr(self._local, "memo", None)
        key = ("collect", repr(q), limit)
        if memo is not None and key in memo:
            found: Collected = memo[key]
            return Collected({k: v.copy() for k, v in found.groups.items()}, found.family, found.segments,
                             found.raw_estimate, found.less, found.row_count)
        q = self.bounded(q)
        family, segments = plan(q)
        out = self._run(q, family, segments, TagMode(), limit=limit)
        if memo is not None:
            memo[key] = Collected({k: v.copy() for k, v in out.groups.items()}, out.family, out.segments,
                                  out.raw_estimate, out.less, out.row_count)
        return out

    def collect_spans(self, q: Query, spans: list[tuple[int, int]]) -> dict[tuple[Any, ...], Agg] | None:
        """The groups of `q` summed over the ordered, disjoint `spans` (instead of its own range), in
        one scan of the columnar copy (the on-call page: the same hours of several days); None unless
        the copy holds every record of them (`copied_until`)."""
        if not spans:
            return {}
        until = self.copied_until(spans[0][0])
        if until is None or until < spans[-1][1] or self.columnar is None:
            return None
        with self._engine.connect() as conn:
            ctx = SegmentReader(q, conn, self._label_sets(conn), self.current_labels(conn) if q.current_labels else {},
                                TagMode())
            question = ColumnarQuestion(q, spans[0][0], spans[-1][1], ctx.key_ids, ctx.set_ids, spans=spans)
        return self.columnar.answer(question)

    def collect_tree(self, root: str | None, max_depth: int, q: Query) -> Collected:
        """Every tag prefix under `root` (all when None) down to `max_depth` levels: keys (prefix,)."""
        family = "raw" if q.filtered else "tags"
        return self._run(q, family, segments_for(q, family), TagMode(tree=True, root=root, max_depth=max_depth))

    def tagged_by_time(self, q: Query, *, filtered: bool = False) -> dict[tuple[Any, ...], Agg]:
        """Requests with at least one tag, grouped by `q`'s time dimension (if any); with
        `filtered`, only those that pass `q`'s filters (but its tag filter)."""
        time_dim = q.time_dim
        sub = self.bounded(q.span(q.from_ms, q.to_ms, (time_dim,) if time_dim else ()))
        if filtered and q.filtered:
            sub = replace(q, dims=sub.dims, tag=None)
            return self._run(sub, "raw", segments_for(sub, "raw"), TagMode(tagged=True)).groups
        return self._run(sub, "tags", segments_for(sub, "tags"), TagMode(tagged=True)).groups

    def _bounds(self) -> tuple[int, int]:
        """The ledger's first record time and last record time + 1 ((0, 0) when empty)."""
        with self._engine.connect() as conn:
            first, last = conn.execute(select(func.min(requests.c.created_at),
                                              func.max(requests.c.created_at))).one()
        return (0, 0) if first is None else (int(first), int(last) + 1)

    def bounded(self, q: Query) -> Query:
        """`q` with an open end closed at the ledger's first or last record, when local time
        buckets need a bounded range to cut (UTC buckets do not)."""
        if q.tz == UTC or q.time_dim is None or (q.from_ms is not None and q.to_ms is not None):
            return q
        first, last = self._bounds()
        lo = first if q.from_ms is None else q.from_ms
        hi = max(lo, last if q.to_ms is None else q.to_ms)
        return replace(q, from_ms=lo, to_ms=hi)

    def tag_groups_per_bucket(self, q: Query) -> dict[int, int] | None:
        """Tag groups per time bucket of a tag x time question whose plan reads only roll-up rows
        at its time level (tags by hour, by day): from the index alone, no metric column read.
        None for any other question."""
        family, segments = plan(q)
        time_dim = q.time_dim
        if self._raw_only or family != "tags" or time_dim is None or q.tag_dim is None \
                or any(s.level != time_dim.arg for s in segments) or self._columnar_answers(q, family):
            return None
        out: dict[int, int] = {}
        with self._engine.connect() as conn:
            ctx = SegmentReader(q, conn, {}, {}, TagMode())
            for seg in segments:
                t = tag_rollups[seg.level]
                query = (select(t.c.bucket, func.count(t.c.prefix.distinct())).where(*ctx.tag_where(t, seg))
                         .group_by(t.c.bucket))
                for bucket, n in conn.execute(query):
                    out[int(bucket)] = out.get(int(bucket), 0) + int(n)
        return out

    def _columnar_answers(self, q: Query, family: str) -> bool:
        """Whether the columnar engine takes `q`: what no roll-up holds, and local time buckets."""
        if not self.columnar_configured or self._raw_only:
            return False
        if family == "raw":
            return True
        if family == "usage" and self._sums_usage_hours(q):
            return True
        if q.tz == UTC or q.time_dim is None or q.from_ms is None or q.to_ms is None:
            return False
        tag = q.tag_dim
        if family == "tags" and q.time_dim.arg != "hour" and tag is not None and (tag.kind == "tag" or
                                                                                 int(tag.arg or 0) >= 2):
            # local days of many tags: the roll-up hours hold thousands of tag rows each, fetched one by
            # one (tag_level.3 by New York day over 7 days: 260k rows, 20 s; the columnar copy 3 s)
            return True
        # local buckets are whole UTC hours of the roll-ups, summed per local bucket by SQL (measured
        # faster); with 30- and 45-minute offsets the half hours around each day's boundary are the raw
        # ends, which the copy reads when it is up to date (`_columnar_ends`), else the ledger. Local
        # hours there are no whole UTC hour at all: the copy answers them.
        if q.time_dim.arg == "hour" and any(off % HOUR_MS for _, off in offsets(q.from_ms, q.to_ms, q.tz)):
            return True
        # a label filter that few label sets pass (one customer: 19 of 302 at 10M): the copy reads only
        # their records, where the roll-up hours sum 134 columns over every hour of the range (one
        # customer's days in Adelaide over 18 days at 10M records: 0.63 s from the roll-ups, 0.18 s
        # from the copy)
        return bool(q.labels) and not q.current_labels and self._rare_labels(q)

    def _sums_usage_hours(self, q: Query) -> bool:
        """Whether PostgreSQL would sum usage roll-up hours over all keys and models: a row per key,
        label set and model each hour, 134 columns at ~0.1 µs a value. The copy's `usage_hours` answers
        them faster (label.team,model over 03T05:17-17T11:42 at 10M records: 276 ms from the roll-ups,
        102 ms from the copy; a month by hour of two labels: 205 -> 160 ms). A key or model filter reads
        few rows by their index (equal or faster in SQL), and whole days and months few rows: SQL keeps them."""
        if self._engine.dialect.name != "postgresql" or q.key_id is not None or q.model is not None:
            return False
        return any(s.level == "hour" for s in segments_for(q, "usage"))

    def _rare_labels(self, q: Query) -> bool:
        """Whether at most `RARE_LABEL_SETS` of the label sets pass `q`'s label filter."""
        with self._engine.connect() as conn:
            sets = self._label_sets(conn)
        passing = sum(all(labels.get(n) == v for n, v in q.labels.items()) for labels in sets.values())
        return passing <= RARE_LABEL_SETS * len(sets)

    def _run(self, q: Query, family: str, segments: list[Segment], mode: TagMode, *,
             columnar: bool = True, limit: int | None = None) -> Collected:
        if columnar and self._columnar_answers(q, family):
            answered = self._run_columnar(q, family, mode, limit)
            if answered is not None:
                return answered  # else the copy is being made: the roll-ups and the raw ledger answer
        if self._raw_only:
            segments = [Segment("raw", q.from_ms, q.to_ms)]
        rolled = family != "raw" and not self._raw_only and any(s.level != "raw" for s in segments)
        ends = self._columnar_ends(segments) if rolled and columnar else None
        # whole hours (days) less their outside parts: UTC only, where an hour row is in one time bucket
        if ends is not None:  # the raw ends from the columnar copy: one scan of a few stretches
            pieces = [(1, s) for s in merged([s for s in segments if s.level != "raw"])]
        elif rolled and (q.tz == UTC or q.time_dim is None):
            pieces = cover(segments, levels_for(q, family))
        else:
            pieces = [(1, s) for s in segments]
        out: dict[tuple[Any, ...], Agg] = {}
        less: dict[tuple[Any, ...], Agg] = {}
        with self._engine.connect() as conn:
            ctx = SegmentReader(q, conn, self._label_sets(conn), self.current_labels(conn) if q.current_labels else {},
                           mode, getattr(self._local, "memo", None))
            estimate = 0 if self._raw_only or family != "raw" else self._estimate(conn, q, mode, segments, ctx)
            ended: Future[dict[tuple[Any, ...], Agg]] | None = None
            if ends:  # the raw ends from the copy in another thread, while the database sums the roll-ups
                assert self.columnar is not None
                # bounded by the stretches themselves (local months and offsets are worked out over them)
                ended = _ENDS.submit(self.columnar.answer, ColumnarQuestion(
                    q, ends[0][0], ends[-1][1], ctx.key_ids, ctx.set_ids, mode.tree, mode.root, mode.max_depth,
                    mode.tagged, spans=ends))
            summed = rolled and (family in ("dims", "usage") or mode.tagged)
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
            if ended is not None and ends:
                for key, agg in ended.result().items():
                    have = out.get(key)
                    if have is None:
                        out[key] = agg
                    else:
                        have.add_vector(agg.v)
                pieces += [(1, Segment("columnar", a, b)) for a, b in ends]
        if less:  # the parts of whole hours (days) that were read but are outside the range
            for key, agg in less.items():
                if key in out:
                    out[key] = out[key].minus(agg)
            out = {key: agg for key, agg in out.items() if agg.v[REQUESTS] > 0}
        return Collected(out, family, [s for sign, s in pieces if sign > 0], estimate,
                         [s for sign, s in pieces if sign < 0])

    def _columnar_ends(self, segments: list[Segment]) -> list[tuple[int, int]] | None:
        """The raw segments of a roll-up answer, when the columnar copy holds all of them (before the
        first hour it does not hold all of): one DuckDB scan of those stretches instead of SQL sums
        or Python over the ledger's rows (the 30 half hours around a month's local midnights in
        Kolkata, the ragged ends of a range). None: the ledger reads them."""
        raw = [s for s in segments if s.level == "raw"]
        if not raw or self.columnar is None or self.mirror is None or not self.copy_ready():
            return None
        if any(s.from_ms is None or s.to_ms is None for s in raw):
            return None
        self.sync(wait=False)
        mark = self.exact_until(min(int(s.from_ms or 0) for s in raw))
        if any(int(s.to_ms or 0) > mark for s in raw):
            return None
        return sorted((int(s.from_ms or 0), int(s.to_ms or 0)) for s in raw)

    def _run_columnar(self, q: Query, family: str, mode: TagMode, limit: int | None = None) -> Collected | None:
        """The columnar copy up to its watermark (or to the first hour it holds a different count of
        than the ledger: a late record), the raw ledger after it (the last minutes).

        While the copy is being brought up to date (in the background: a question never waits for
        it), what it holds answers only questions no roll-up holds, only if its labels and scores
        are the ledger's, and only up to its watermark: the rest is read from the raw ledger. After
        a restart that is nearly all of the range; during a first copy, a growing part. Else None:
        the roll-ups and the raw ledger answer."""
        ready = self.copy_ready()
        if not ready and family != "raw":
            return None
        if ready:
            self.sync(wait=False)
        elif not self._side_tables_copied():
            return None
        columnar, mirror = self.columnar, self.mirror
        assert columnar is not None and mirror is not None
        mark = self.exact_until(q.from_ms)
        if not ready and (mark == 0 or (q.from_ms is not None and mark <= q.from_ms)):
            return None  # nothing of the range copied yet
        lo, hi = q.from_ms, q.to_ms
        if q.time_dim is not None and (lo is None or hi is None):  # month and local buckets need bounds
            first, last = self._bounds()
            lo, hi = (first if lo is None else lo), (max(last, mark) if hi is None else hi)
        copied_to = mark if hi is None else min(hi, mark)
        fresh_tail = hi is None or hi > mark  # the last minutes, from the ledger: they may change the first groups
        out: dict[tuple[Any, ...], Agg] = {}
        segments: list[Segment] = []
        row_count = None
        with self._engine.connect() as conn:
            ctx = SegmentReader(q, conn, self._label_sets(conn), self.current_labels(conn) if q.current_labels else {},
                                mode, getattr(self._local, "memo", None))
            if lo is None or lo < copied_to:
                question = ColumnarQuestion(q, lo, copied_to, ctx.key_ids, ctx.set_ids, mode.tree, mode.root,
                                            mode.max_depth, mode.tagged, limit=None if fresh_tail else limit)
                out = columnar.answer(question)
                row_count = question.row_count
                segments.append(Segment("columnar", lo, copied_to))
            if fresh_tail:
                tail = Segment("raw", mark if lo is None else max(lo, mark), hi)
                fresh: dict[tuple[Any, ...], Agg] = {}
                ctx.raw(tail, fresh)
                for key, agg in fresh.items():
                    have = out.get(key)
                    if have is None:
                        out[key] = Agg(agg.v, None, None)
                    else:
                        have.add_vector(agg.v)
                segments.append(tail)
        return Collected(out, "columnar", segments, row_count=row_count, catching_up=not ready)

    def _side_tables_copied(self) -> bool:
        """Whether the copy is open and holds the ledger's label sets and scores as they are now;
        right after a start, the background sync copies them first: wait for that a little
        (`OPEN_WAIT_S`), rather than answer from the raw ledger (seconds to minutes)."""
        deadline = time.monotonic() + OPEN_WAIT_S
        while True:
            mirror = self.mirror
            if mirror is not None and self.columnar is not None and mirror.side_synced:
                with self._engine.connect() as conn:
                    return mirror.side_tables_current(conn)
            if time.monotonic() > deadline or not self._warming.locked():
                return False
            time.sleep(0.05)

    def copied_until(self, lo: int) -> int | None:
        """Up to where the columnar copy holds every record from `lo` on (its watermark, or the
        first hour a late record is missing from: `exact_until`); None until its first copy is
        made (in the background: never waited for) and without a columnar engine."""
        if not self.copy_ready() or self.columnar is None or self.mirror is None:
            return None
        self.sync(wait=False)
        return self.exact_until(lo)

    def exact_until(self, lo: int | None) -> int:
        """The copy's watermark, or the first hour in [lo, watermark) whose records the copy does not
        hold all of (a record that arrived late, not copied yet; the watermark's own hour up to the
        watermark included): the copy answers only before it. The watermark and the count of its
        hour's copied part are read together (`Mirror.open_hour`): while a sync copies, the copy's
        count of that hour runs ahead of the watermark."""
        assert self.mirror is not None
        mark, part_copied = self.mirror.open_hour
        copied = dict(self.mirror.counts)  # copied at once: the sync thread adds to it
        start = None if lo is None else lo - lo % HOUR_MS
        part = mark - mark % HOUR_MS  # the watermark's own hour: copied up to the watermark
        with self._engine.connect() as conn:
            ledger = all_counts(conn, start, part)
            opened = records_between(conn, part, mark) if part < mark and (start is None or part >= start) else None
        hours = {h for h in copied if (start is None or h >= start) and h + HOUR_MS <= part} | set(ledger)
        stale = [h for h in hours if h + HOUR_MS <= part and ledger.get(h, 0) != copied.get(h, 0)]
        if opened is not None and opened != part_copied:  # a late record of its copied part
            stale.append(part)
        return min(stale, default=mark)

    def columnar_question(self, q: Query, lo: int | None, hi: int) -> ColumnarQuestion:
        """`q` over [lo, hi) for the columnar engine, its key and label filters resolved."""
        with self._engine.connect() as conn:
            ctx = SegmentReader(q, conn, self._label_sets(conn), {}, TagMode())
            return ColumnarQuestion(q, lo, hi, ctx.key_ids, ctx.set_ids)

    def copy_ready(self) -> bool:
        """Whether the columnar copy has been made once; if not, open and make it in a background
        thread (started once) and say no."""
        if self.mirror is not None and self._synced_at > 0:
            return True
        self.warm()
        return False

    def warm(self) -> None:
        """Open the columnar copy and bring it up to date in a background thread, unless one is at it
        (the gateway calls this at start-up when the ledger holds records)."""
        if self.columnar_configured and self._warming.acquire(blocking=False):
            self._warmer = threading.Thread(target=self._warm, name="tallygate-columnar-warm", daemon=True)
            self._warmer.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """At shutdown: the background copy stops after the chunk it is copying (a thread still in
        DuckDB when the interpreter exits aborts the process); waits for it up to `timeout_s`."""
        self._stopping = True
        if self.mirror is not None:
            self.mirror.stopping = True
        warmer = self._warmer
        if warmer is not None:
            warmer.join(timeout_s)

    def has_records(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(requests.c.id).limit(1)).first() is not None

    def _warm(self) -> None:
        try:
            if self.open_columnar() is not None and not self._stopping:
                self.sync()
        except Exception as exc:  # e.g. the ledger closed under it at shutdown: no traceback in the log
            log.warning("columnar copy failed (%s); the logs read the ledger alone until the next try", exc)
        finally:
            self._warming.release()

    def _estimate(self, conn: Connection, q: Query, mode: TagMode, segments: list[Segment],
                  ctx: SegmentReader) -> int:
        """An upper bound of the raw records a raw-only question reads (from the hour roll-ups).
        Decides per raw segment whether a tag filter is read by its index (`ctx.sparse`)."""
        tag = mode.root if mode.tree else None if mode.tagged else q.tag
        parts = Parts.of(tag=tag, labels={} if q.current_labels else q.labels, key_id=q.key_id, model=q.model,
                         status=q.status)
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
        return estimate
