"""Reading the ledger back: filtered, cursor-paginated request logs, as typed records.

Records keep their labels as a label-set id (the JSON once in `label_sets`) and their attempts
in the compact form of `store/attempts.py`; both are expanded here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, or_, select

from tallygate.core.record import COLUMNS, LedgerRecord
from tallygate.core.tagpath import carries
from tallygate.core.timebuckets import HOUR_MS, month_floor
from tallygate.errors import InvalidRequest
from tallygate.store.attempts import decode as decode_attempts
from tallygate.store.hours import Parts, all_counts, hour_counts, tags_under
from tallygate.store.schema import feedback, label_sets, request_tags, requests, usage_rollups


@dataclass(slots=True)
class LogFilter:
    """What `GET /v1/logs` may filter on; `tag` matches the tag and everything under it."""

    tag: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None
    model: str | None = None
    status: int | None = None
    error_code: str | None = None
    provider: str | None = None
    served_model: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None


def encode_cursor(created_at: int, row_id: str) -> str:
    """`<created_at>.<id>`: opaque to clients, and any string of that shape is a valid cursor."""
    return f"{created_at}.{row_id}"


_CURSOR = re.compile(r"[0-9]{1,15}\.[A-Za-z0-9_-]{0,64}")  # no id: an hour where a page stopped


def decode_cursor(cursor: str) -> tuple[int, str]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    ms, _, row_id = cursor.partition(".")
    return int(ms), row_id


@dataclass(frozen=True, slots=True)
class Feedback:
    """A request's feedback: the score in thousandths, the comment, when it was last set (ms)."""

    score_milli: int
    comment: str | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One ledger record as read back, with its feedback if any."""

    record: LedgerRecord
    feedback: Feedback | None


def logged_request(row: Mapping[Any, Any]) -> LoggedRequest:
    """A row of `with_feedback()` as typed objects."""
    values = {name: row[name] for name in COLUMNS}
    values["tags"] = tuple(values["tags"] or ())
    values["labels"] = values["labels"] or row["set_labels"] or {}
    values["attempts"] = decode_attempts(values["attempts"], row["provider"], row["served_model"], row["status"],
                                         row["requested_model"])
    fb = None if row["feedback_score"] is None else Feedback(row["feedback_score"], row["feedback_comment"],
                                                             row["feedback_at"])
    return LoggedRequest(LedgerRecord(**values), fb)


def with_feedback() -> Select[Any]:
    """SELECT of ledger rows with their label set and feedback (if any) as set_labels, feedback_*."""
    return (select(requests, label_sets.c.labels.label("set_labels"), feedback.c.score_milli.label("feedback_score"),
                   feedback.c.comment.label("feedback_comment"), feedback.c.updated_at.label("feedback_at"))
            .select_from(requests.outerjoin(label_sets, label_sets.c.id == requests.c.label_set)
                         .outerjoin(feedback, feedback.c.request_id == requests.c.id)))


def matching_sets(conn: Connection, labels: dict[str, str]) -> list[str]:
    """The label-set ids whose labels include every (name, value) of `labels`."""
    rows = conn.execute(select(label_sets.c.id, label_sets.c.labels))
    return [sid for sid, got in rows if all((got or {}).get(n) == v for n, v in labels.items())]


def keys_of_sets(conn: Connection, sets: list[str], from_ms: int | None, to_ms: int | None) -> list[str]:
    """The keys ('' for none) whose records carry one of the label sets in [from, to), by month."""
    t = usage_rollups["month"]
    where: list[ColumnElement[bool]] = [t.c.label_set.in_(sets)]
    if from_ms is not None:
        where.append(t.c.bucket >= month_floor(from_ms))
    if to_ms is not None:
        where.append(t.c.bucket < to_ms)
    return list(conn.execute(select(t.c.key_id).where(*where).distinct()).scalars())


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page, newest first. `partial`: the scan budget ran out before `limit` rows were found;
    the rows are right but there may be more, and `next_cursor` continues where the scan stopped."""

    rows: list[LoggedRequest]
    next_cursor: str | None
    partial: bool = False


# A filter's exact matches per UTC hour, for the hours before the returned time (a columnar engine
# counts them in one scan): a walk then reads only hours that hold a match. None: not known.
ExactHours = Callable[[LogFilter], tuple[dict[int, int], int] | None]
# A columnar copy's mark (it holds every record before the hour the mark is in) and the (created_at,
# id) of a filter's first `want` matches before that hour and `upper`, after a cursor, newest first.
# None: no copy to ask (not made yet).
ExactKeys = Callable[[LogFilter, int | None, tuple[int, str] | None, int],
                     tuple[list[tuple[int, str]], int] | None]
SCAN_BUDGET_MS = 50.0  # a page stops scanning hours after this long (and says it is partial)
_SPARSE = 0.05  # below this share of an hour's records, a tag is found by its index, not by scanning the hour


class LogReader:
    """Synchronous queries over the ledger (run from a worker thread).

    A page walks the hours that hold matches (`store/hours.py`), newest first, and reads each with
    an index on created_at (or key, label set, tag): a filter that matches nothing reads no record,
    and no query reads more than one hour of the ledger. After `budget_ms` of hours that gave too
    few rows the page ends early, marked partial, with a cursor at the hour it stopped at.

    With a columnar copy (`exact_keys`), the hours it holds are not walked: the copy gives the
    page's (created_at, id) in one query and the ledger its records by primary key, so a rare
    filter's page is full and its walk takes as many pages as it has pages of matches."""

    def __init__(self, engine: Engine, *, budget_ms: float = SCAN_BUDGET_MS,
                 exact_hours: ExactHours | None = None, exact_keys: ExactKeys | None = None) -> None:
        self._engine = engine
        self.budget_ms = budget_ms
        self._exact_hours = exact_hours
        self._exact_keys = exact_keys

    def get(self, request_id: str) -> LoggedRequest | None:
        with self._engine.connect() as conn:
            row = conn.execute(with_feedback().where(requests.c.id == request_id)).mappings().first()
        return logged_request(row) if row else None

    def page(self, f: LogFilter, limit: int, cursor: str | None) -> LogPage:
        """Newest first: the rows and the cursor of the next page (None at the end)."""
        after = decode_cursor(cursor) if cursor else None
        upper = f.to_ms  # exclusive
        if after is not None:  # a cursor at an hour where a partial page stopped has no id
            below = after[0] + 1 if after[1] else after[0]
            upper = below if upper is None else min(upper, below)
        rows: list[LoggedRequest] = []
        with self._engine.connect() as conn:
            where = self._where(conn, f, after, upper)
            if where is None:
                return LogPage([], None)
            parts = Parts.of(tag=f.tag, labels=f.labels, key_id=f.key_id, model=f.model, status=f.status,
                             provider=f.provider, served_model=f.served_model)
            if self._exact_keys is not None and (found := self._exact_keys(f, upper, after, limit + 1)) is not None:
                partial = self._keyed(conn, f, where, parts, found, upper, rows, limit)
            else:
                counts = self._hours(conn, f, parts, upper, first=after is None)
                if not counts:
                    return LogPage([], None)
                partial = self._read_hours(conn, f, where, counts, upper, rows, limit)
            if partial is not None:
                return partial
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].record.created_at, rows[-1].record.id) if more and rows else None
        return LogPage(rows, nxt)

    @staticmethod
    def _where(conn: Connection, f: LogFilter, after: tuple[int, str] | None,
               upper: int | None) -> list[ColumnElement[bool]] | None:
        """The filter and the cursor as conditions on the ledger's records (None: nothing matches)."""
        c = requests.c
        where: list[ColumnElement[bool]] = []
        if f.labels:
            sets = matching_sets(conn, f.labels)
            if not sets:
                return None
            where.append(c.label_set.in_(sets))
            if f.key_id is None:  # the keys that had those labels: their (key_id, created_at) index
                keys = keys_of_sets(conn, sets, f.from_ms, upper)
                where.append(or_(c.key_id.in_([k for k in keys if k]), c.key_id.is_(None)) if "" in keys
                             else c.key_id.in_(keys))
        if f.key_id is not None:
            where.append(c.key_id == f.key_id)
        if f.model is not None:
            where.append(c.requested_model == f.model)
        if f.status is not None:
            where.append(c.status == f.status)
        for column, value in (("error_code", f.error_code), ("provider", f.provider),
                              ("served_model", f.served_model)):
            if value is not None:
                where.append(c[column] == value)
        if after is not None:
            ms, rid = after
            where += [c.created_at <= ms, or_(c.created_at < ms, c.id < rid)]
        return where

    def _keyed(self, conn: Connection, f: LogFilter, where: list[ColumnElement[bool]], parts: Parts,
               found: tuple[list[tuple[int, str]], int], upper: int | None, rows: list[LoggedRequest],
               limit: int) -> LogPage | None:
        """A page from the columnar copy's matches: the hour the copy's mark is in and after it (a late
        record may still arrive there) from the ledger, hour by hour; before it, the (created_at, id)
        the copy gave for the page, then those records by primary key. A page is full unless the
        filter ends in it, however rare its matches: the ledger's part is at most the mark's hour
        and the minutes after it (two hours when the mark is in the hour before now's), read whole
        whatever the scan budget."""
        keys, mark = found
        split = mark - mark % HOUR_MS
        if upper is None or upper > split:
            tail_from = split if f.from_ms is None else max(split, f.from_ms)
            counts = hour_counts(conn, parts, tail_from, upper)
            if counts and (partial := self._read_hours(conn, f, where, counts, upper, rows, limit,
                                                        budgeted=False)) is not None:
                return partial
        keys = keys[:max(0, limit + 1 - len(rows))]
        if keys:
            query = with_feedback().where(requests.c.id.in_([rid for _, rid in keys]))
            got = {r["id"]: logged_request(r) for r in conn.execute(query).mappings()}
            rows += [got[rid] for _, rid in keys if rid in got]
        return None

    def _read_hours(self, conn: Connection, f: LogFilter, where: list[ColumnElement[bool]], counts: dict[int, int],
                    upper: int | None, rows: list[LoggedRequest], limit: int, *,
                    budgeted: bool = True) -> LogPage | None:
        """Add the matches of `counts`' hours to `rows`, newest first, until it holds `limit + 1`; a
        partial page when the scan budget ran out first (never unless `budgeted`)."""
        c = requests.c
        started = time.perf_counter()
        totals = all_counts(conn, f.from_ms, upper) if f.tag is not None else {}
        subtree: list[str] | None = None  # the tags under f.tag, for reading a rare one by its key
        for hour in sorted(counts, reverse=True):
            lo = hour if f.from_ms is None else max(hour, f.from_ms)
            hi = hour + HOUR_MS if upper is None else min(hour + HOUR_MS, upper)
            bounds = [c.created_at >= lo, c.created_at < hi]
            if f.tag is not None and counts[hour] < _SPARSE * totals.get(hour, 0):
                if subtree is None:
                    subtree = tags_under(conn, f.tag, f.from_ms, upper)
                rt = request_tags.c
                bounds.append(c.id.in_(select(rt.request_id).where(rt.tag.in_(subtree), rt.created_at >= lo,
                                                                   rt.created_at < hi)))
            query = with_feedback().where(*where, *bounds).order_by(c.created_at.desc(), c.id.desc())
            if f.tag is not None and counts[hour] >= _SPARSE * totals.get(hour, 0):
                self._read_filtered(conn, query, f.tag, rows, limit + 1)  # a common tag
            else:
                rows += [logged_request(r) for r in conn.execute(query.limit(limit + 1 - len(rows))).mappings()]
            if len(rows) > limit:
                break
            if budgeted and (time.perf_counter() - started) * 1000 > self.budget_ms and hour != min(counts):
                return LogPage(rows, encode_cursor(lo, ""), partial=True)
        return None

    def _hours(self, conn: Connection, f: LogFilter, parts: Parts, upper: int | None, *,
               first: bool) -> dict[int, int]:
        """The hours of [from, upper) that may hold a match, with an upper bound of their matches: the
        exact count of the columnar copy's hours (kept across a walk's pages), the roll-ups' bound
        for the hours after it (the last minutes). The `first` page asks the roll-ups for the whole
        range first (a filter they rule out ends there); later pages read them for the last
        minutes only (over a month that was most of a page's time)."""
        if self._exact_hours is None:
            return hour_counts(conn, parts, f.from_ms, upper)
        if first and not hour_counts(conn, parts, f.from_ms, upper):
            return {}
        exact = self._exact_hours(f)
        if exact is None:
            return hour_counts(conn, parts, f.from_ms, upper)
        found, upto = exact  # the hours before `upto` that hold a match, and how many
        counts = {h: n for h, n in found.items() if n and h + HOUR_MS <= upto and (upper is None or h < upper)}
        tail_from = upto - upto % HOUR_MS if f.from_ms is None else max(upto - upto % HOUR_MS, f.from_ms)
        if upper is None or tail_from < upper:
            counts.update(hour_counts(conn, parts, tail_from, upper))
        return counts

    @staticmethod
    def _read_filtered(conn: Connection, query: Select[Any], tag: str, rows: list[LoggedRequest], want: int) -> None:
        """Add the records of `query` that carry a tag under `tag` to `rows`, until it holds `want`
        (a tag this common is on every twentieth record or more: a page reads a few thousand)."""
        result = conn.execute(query.execution_options(yield_per=500)).mappings()
        try:
            for r in result:
                if carries(r["tags"] or (), tag):
                    rows.append(logged_request(r))
                    if len(rows) >= want:
                        break
        finally:
            result.close()
