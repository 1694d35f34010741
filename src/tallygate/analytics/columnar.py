"""The embedded columnar engine: a DuckDB copy of the ledger that answers any question by one scan.

DuckDB (in process, one file) keeps the settled ledger (`analytics/mirror.py`) column by column,
in time order, so a question reads only the columns it needs of the row groups in its range.
One SQL statement answers a question: filters as `WHERE`, tag dimensions by unnesting each
record's (distinct, cut) tags, labels by joining the label sets, local time buckets by a table
of the question's quarter-hours, and every metric (sums, errors, both latency histograms) per
group. Money is summed as 128-bit integers, so costs stay exact to the picodollar.

Why DuckDB: measured on this project's 10M-record ledger (docs/analytics.md), it answers the
questions no roll-up holds in a fraction of a second where the row stores take seconds to tens
of seconds; it is one `pip install` with no server, and the same copy is the path to scale-out
(its Parquet files, or the ClickHouse backend of `analytics/clickhouse.py`, hold the same rows).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import duckdb
import orjson

from tallygate.analytics import columnar_rollups as rollups
from tallygate.analytics import columnar_spans as spans
from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.analytics.mirror import COLUMNS, label_value
from tallygate.core.histogram import bucket
from tallygate.core.metrics import Agg
from tallygate.core.tagpath import MAX_DEPTH
from tallygate.core.timebuckets import DAY_MS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  id VARCHAR, created_at BIGINT, key_id VARCHAR, label_set VARCHAR, tags VARCHAR[],
  requested_model VARCHAR, served_model VARCHAR, provider VARCHAR, status SMALLINT, error_code VARCHAR,
  input_tokens BIGINT, output_tokens BIGINT, cached_tokens BIGINT, cache_write_tokens BIGINT,
  reasoning_tokens BIGINT, cost_pico BIGINT, lat_b UTINYINT, ttft_b UTINYINT,
  {levels});
CREATE TABLE IF NOT EXISTS feedback (request_id VARCHAR PRIMARY KEY, score_milli INTEGER);
CREATE TABLE IF NOT EXISTS label_values (set_id VARCHAR, name VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS key_labels (key_id VARCHAR, name VARCHAR, value VARCHAR);
CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value BIGINT);
CREATE TABLE IF NOT EXISTS tag_days ({rolled});
CREATE TABLE IF NOT EXISTS rolled_days (day BIGINT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS tag_months ({rolled});
CREATE TABLE IF NOT EXISTS rolled_months (month BIGINT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS tag_hours ({hourly});
CREATE TABLE IF NOT EXISTS hourly_days (day BIGINT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS usage_hours ({usage});
CREATE TABLE IF NOT EXISTS usage_days (day BIGINT PRIMARY KEY);
"""
# Each record's distinct tags by depth (t1..t8) and distinct tag prefixes by depth (p1..p8): a tag
# level, a subtree and the tree are list concatenations and equality tests, not string surgery per
# row (which costs DuckDB ten times as much).
LEVEL_COLUMNS = tuple(f"{kind}{d}" for kind in "tp" for d in range(1, MAX_DEPTH + 1))
_NAMES = (*COLUMNS[:COLUMNS.index("latency_us")], "lat_b", "ttft_b", *LEVEL_COLUMNS)
SCHEMA_VERSION = 2
_JSON_TYPES = ("VARCHAR", "BIGINT", "VARCHAR", "VARCHAR", "VARCHAR[]", "VARCHAR", "VARCHAR", "VARCHAR", "SMALLINT",
              "VARCHAR", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "BIGINT", "UTINYINT", "UTINYINT",
               *("VARCHAR[]",) * len(LEVEL_COLUMNS))
_LATENCY = COLUMNS.index("latency_us")
_TAGS = COLUMNS.index("tags")
_TAG_NAMES = ("tags", *LEVEL_COLUMNS)  # a row's JSON: these members from one cache per tags text,
_HEAD_NAMES = tuple(n for n in _NAMES if n not in _TAG_NAMES)  # these from the row itself


def by_depth(tags: list[str]) -> list[list[str]]:
    """A record's distinct tags by depth, then its distinct prefixes by depth (`LEVEL_COLUMNS`)."""
    own: list[list[str]] = [[] for _ in range(MAX_DEPTH)]
    prefixes: list[dict[str, None]] = [{} for _ in range(MAX_DEPTH)]
    for tag in tags:
        parts = tag.split("/")
        own[len(parts) - 1].append(tag)
        for d in range(1, len(parts) + 1):
            prefixes[d - 1]["/".join(parts[:d])] = None
    return own + [list(p) for p in prefixes]


class DuckDBColumnar:
    """A DuckDB database file (or ':memory:') holding the columnar copy; thread-safe."""

    name = "duckdb"

    def __init__(self, path: str | Path = ":memory:", threads: int | None = None) -> None:
        self.path = str(path)
        self._db = duckdb.connect(self.path)
        self._write = threading.Lock()
        self._local = threading.local()
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value BIGINT)")
        made = self._db.execute("SELECT count(*) FROM information_schema.tables "
                                "WHERE table_name = 'records'").fetchone()
        if made and made[0] and self.get_meta("schema") != SCHEMA_VERSION:  # an older layout: copied again
            self._db.execute("DROP TABLE records; DELETE FROM meta")
        self._db.execute(_SCHEMA.format(levels=", ".join(f"{c} VARCHAR[]" for c in LEVEL_COLUMNS),
                                        rolled=rollups.ROLLED_COLUMNS, hourly=rollups.HOURLY_COLUMNS,
                                        usage=rollups.USAGE_COLUMNS))
        self.set_meta("schema", SCHEMA_VERSION)

    def close(self) -> None:
        self._db.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._db.cursor()
        return cur

    # ------------------------------------------------------------------ the mirror's sink
    def replace_range(self, from_ms: int, to_ms: int, rows: list[tuple[Any, ...]]) -> None:
        with self._write:
            cur = self._cursor()
            cur.execute("BEGIN")
            cur.execute("DELETE FROM records WHERE created_at >= ? AND created_at < ?", [from_ms, to_ms])
            if rows:
                self._append(cur, rows)
            rollups.unroll(cur, from_ms - from_ms % DAY_MS, to_ms)
            cur.execute("COMMIT")

    def settle(self, watermark: int, budget_s: float | None = rollups.ROLL_BUDGET_S) -> int:
        """Roll up the whole UTC days (and months) before `watermark` not rolled up yet (`columnar_rollups.settle`)."""
        return rollups.settle(self._cursor(), self._write, watermark, budget_s)

    @staticmethod
    def _append(cur: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> None:
        """Rows through a JSON-lines file: DuckDB's reader takes ~10^5 rows/s from Python this way,
        where parameter lists convert a few hundred (and JSON keeps NULL apart from '')."""
        fd, name = tempfile.mkstemp(suffix=".jsonl", prefix="tallygate-columnar-")
        try:
            fragments: dict[str | None, bytes] = {}  # a tags text -> its JSON members (tags and levels)
            dumps = orjson.dumps
            with os.fdopen(fd, "wb") as f:
                for r in rows:
                    text = r[_TAGS]
                    tail = fragments.get(text)
                    if tail is None:  # a few thousand distinct tag lists in a chunk: each worked out once
                        tags = list(dict.fromkeys(orjson.loads(text or "[]")))
                        tail = fragments[text] = dumps(dict(zip(_TAG_NAMES, [tags, *by_depth(tags)],
                                                                strict=True)))[1:] + b"\n"
                    ttft = r[_LATENCY + 1]
                    head = dumps(dict(zip(_HEAD_NAMES, (*r[:_TAGS], *r[_TAGS + 1:_LATENCY], bucket(r[_LATENCY]),
                                                        None if ttft is None else bucket(ttft)), strict=True)))
                    f.write(head[:-1] + b"," + tail)
            columns = ", ".join(f"'{n}': '{t}'" for n, t in zip(_NAMES, _JSON_TYPES, strict=True))
            select = ", ".join(_NAMES)
            cur.execute(f"INSERT INTO records SELECT {select} FROM read_json(?, format = 'newline_delimited', "
                        f"columns = {{{columns}}})", [name])
        finally:
            os.unlink(name)

    def hour_counts(self) -> dict[int, int]:
        rows = self._cursor().execute("SELECT created_at - created_at % 3600000 AS h, count(*) FROM records "
                                      "GROUP BY h").fetchall()
        return {int(h): int(n) for h, n in rows}

    def set_feedback(self, rows: list[tuple[str, int]]) -> None:
        with self._write:
            cur = self._cursor()
            cur.execute("BEGIN")
            cur.executemany("INSERT OR REPLACE INTO feedback VALUES (?, ?)", rows)
            days = cur.execute(f"SELECT DISTINCT created_at - created_at % {DAY_MS} FROM records WHERE id IN "
                               "(SELECT unnest(?::VARCHAR[]))", [[r[0] for r in rows]]).fetchall()
            for (day,) in days:  # their days' sums of scores changed
                rollups.unroll(cur, int(day), int(day) + DAY_MS)
            cur.execute("COMMIT")

    def set_labels(self, label_sets: dict[str, dict[str, Any]], key_labels: dict[str, dict[str, Any]]) -> None:
        with self._write:
            cur = self._cursor()
            cur.execute("BEGIN")
            for table, source in (("label_values", label_sets), ("key_labels", key_labels)):
                cur.execute(f"DELETE FROM {table}")
                flat = [(i, n, label_value(v)) for i, labels in source.items() for n, v in labels.items()]
                if flat:
                    cur.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", flat)
            cur.execute("COMMIT")

    def get_meta(self, name: str) -> int | None:
        row = self._cursor().execute("SELECT value FROM meta WHERE name = ?", [name]).fetchone()
        return None if row is None else int(row[0])

    def set_meta(self, name: str, value: int) -> None:
        with self._write:
            self._cursor().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [name, value])

    # ------------------------------------------------------------------------ questions
    def answer(self, question: ColumnarQuestion) -> dict[tuple[Any, ...], Agg]:
        """The groups of one question over the copy (keys as `analytics/reader.py` makes them)."""
        cur = self._cursor()
        cur.execute("BEGIN")  # one snapshot: the days rolled up and their rows
        try:
            has_feedback = cur.execute("SELECT count(*) > 0 FROM feedback").fetchone()
            lo, hi, unit, tz = question.from_ms, question.to_ms, question.time_unit, question.q.tz
            rolled = spans.in_buckets(self._rolled(cur, lo, hi), unit, tz) if question.rollable() else []
            rolled_months = self._months(cur) if rolled else set()
            months = spans.whole_months(rolled, rolled_months, unit, tz) if rolled else []
            split = spans.split_months(lo, hi, rolled_months, unit, tz) if rolled else []
            hours = (spans.hour_spans(lo, hi, self._hourly(cur, lo, hi), rolled, unit, tz)
                     if question.hourly() else [])
            usage = (spans.hour_spans(lo, hi, self._hourly(cur, lo, hi, "usage_days"), [], unit, tz)
                     if question.usage_hourly() else [])
            # the tag tree's totals: all the records of its rolled days from the hour roll-up where it holds them
            rolled_usage = ([s for a, b in self._hourly(cur, lo, hi, "usage_days") for s in spans.within(rolled, a, b)]
                            if question.tagged and rolled else [])
            sql, params = question.sql(feedback=bool(has_feedback and has_feedback[0]), rolled=rolled, months=months,
                                       split=split, hours=hours, usage=usage, rolled_usage=rolled_usage)
            rows = cur.execute(sql, params).fetchall()
        finally:
            cur.execute("ROLLBACK")  # it only read
        return question.buckets(rows)

    def keys(self, question: ColumnarQuestion, after: tuple[int, str] | None, limit: int) -> list[tuple[int, str]]:
        """The (created_at, id) of the question's first `limit` records newest first, after `after`
        (a logs page: the records themselves are read from the ledger by id)."""
        sql, params = question.keys_sql(after, limit)
        return [(int(ms), str(rid)) for ms, rid in self._cursor().execute(sql, params).fetchall()]

    @staticmethod
    def _months(cur: duckdb.DuckDBPyConnection) -> set[int]:
        return {int(m) for (m,) in cur.execute("SELECT month FROM rolled_months").fetchall()}

    @staticmethod
    def _rolled(cur: duckdb.DuckDBPyConnection, lo: int | None, hi: int | None) -> list[tuple[int, int]]:
        """The stretches of whole rolled-up days within [lo, hi), in order."""
        first = -(2**62) if lo is None else lo + (-lo) % DAY_MS
        last = 2**62 if hi is None else hi
        days = [int(d) for (d,) in cur.execute("SELECT day FROM rolled_days WHERE day >= ? AND day + ? <= ? "
                                               "ORDER BY day", [first, DAY_MS, last]).fetchall()]
        return spans.joined_days(days)

    @staticmethod
    def _hourly(cur: duckdb.DuckDBPyConnection, lo: int | None, hi: int | None,
                table: str = "hourly_days") -> list[tuple[int, int]]:
        """The stretches of days within [lo, hi) (whole or not) whose hours `tag_hours` holds (`table`
        'usage_days': `usage_hours`), in order."""
        first = -(2**62) if lo is None else lo - lo % DAY_MS
        last = 2**62 if hi is None else hi
        days = [int(d) for (d,) in cur.execute(f"SELECT day FROM {table} WHERE day >= ? AND day < ? ORDER BY day",
                                               [first, last]).fetchall()]
        return spans.joined_days(days)

    def minutes(self, from_ms: int, to_ms: int) -> list[tuple[int, int, int, int]]:
        """(minute start, requests, errors, spend in picodollars) of each minute of [from, to) that had
        requests, oldest first (the on-call chart: a day is 350,000 records at 10M a month)."""
        rows = self._cursor().execute(
            "SELECT created_at - created_at % 60000 AS m, count(*), count(*) FILTER (WHERE status >= 400), "
            "sum(cost_pico::HUGEINT) FROM records WHERE created_at >= ? AND created_at < ? GROUP BY m ORDER BY m",
            [from_ms, to_ms]).fetchall()
        return [(int(m), int(n), int(e), int(c or 0)) for m, n, e, c in rows]

    def count(self) -> int:
        row = self._cursor().execute("SELECT count(*) FROM records").fetchone()
        return int(row[0]) if row else 0

