"""The scale-out columnar backend: the same copy and the same questions on ClickHouse.

`ClickHouseColumnar` is a `Sink` for `analytics/mirror.py` and answers `ColumnarQuestion`s like
`DuckDBColumnar`, through a `Client`: a ClickHouse server over HTTP (`clickhouse-connect`), or
chDB, ClickHouse in process (the stand-in the tests run; the project's machines run no server).
The records table is a MergeTree ordered by time; a range is replaced by a lightweight DELETE and
an INSERT. Questions are the DuckDB statements in ClickHouse's dialect (`ClickHouseQuestion`):
`arrayFilter`/`arrayDistinct` for tags, `ARRAY JOIN` to unnest, `sumMap` for the histograms,
128-bit sums for money, `join_use_nulls` so a missing label is NULL as in SQL.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
from typing import Any, Protocol

import orjson

from tallygate.analytics.columnar_spans import QUARTER_MS
from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.analytics.mirror import COLUMNS, label_value
from tallygate.core import zones
from tallygate.core.histogram import bucket
from tallygate.core.metrics import LATENCY_START, TTFT_START, Agg
from tallygate.core.timebuckets import DAY_MS, HOUR_MS

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS {db}.records (
      id String, created_at Int64, key_id Nullable(String), label_set Nullable(String), tags Array(String),
      requested_model Nullable(String), served_model Nullable(String), provider Nullable(String), status Int16,
      error_code Nullable(String), input_tokens Int64, output_tokens Int64, cached_tokens Int64,
      cache_write_tokens Int64, reasoning_tokens Int64, cost_pico Int64, lat_b UInt8, ttft_b Nullable(UInt8))
      ENGINE = MergeTree ORDER BY created_at""",
    "CREATE TABLE IF NOT EXISTS {db}.feedback (request_id String, score_milli Int32, version UInt64) "
    "ENGINE = ReplacingMergeTree(version) ORDER BY request_id",
    "CREATE TABLE IF NOT EXISTS {db}.label_values (set_id String, name String, value Nullable(String)) "
    "ENGINE = MergeTree ORDER BY set_id",
    "CREATE TABLE IF NOT EXISTS {db}.key_labels (key_id String, name String, value Nullable(String)) "
    "ENGINE = MergeTree ORDER BY key_id",
    "CREATE TABLE IF NOT EXISTS {db}.meta (name String, value Int64, version UInt64) "
    "ENGINE = ReplacingMergeTree(version) ORDER BY name",
]
_NAMES = (*COLUMNS[:COLUMNS.index("latency_us")], "lat_b", "ttft_b")
_LATENCY = COLUMNS.index("latency_us")


class Client(Protocol):
    """The few calls the backend makes: a statement, a query's rows, rows inserted as JSON lines."""

    def command(self, sql: str) -> None: ...

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...

    def insert_json_lines(self, table: str, path: str) -> None: ...


def literal(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ChdbClient:
    """ClickHouse in process (chDB), on a data directory (or temporary)."""

    def __init__(self, path: str | None = None) -> None:
        session: Any = importlib.import_module("chdb.session")  # optional: pip install chdb
        self._session: Any = session.Session(path) if path else session.Session()
        self._lock = threading.Lock()

    def command(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            result = self._session.query(sql, "JSONCompact")
        data = orjson.loads(result.bytes()) if result.bytes() else {"data": []}
        return [tuple(r) for r in data["data"]]

    def insert_json_lines(self, table: str, path: str) -> None:
        self.command(f"INSERT INTO {table} SELECT * FROM file({literal(path)}, JSONEachRow)")

    def close(self) -> None:
        self._session.close()


class ServerClient:
    """A ClickHouse server through `clickhouse-connect` (HTTP)."""

    def __init__(self, **connect: Any) -> None:
        connector: Any = importlib.import_module("clickhouse_connect")  # optional: pip install clickhouse-connect
        self._client: Any = connector.get_client(**connect)

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._client.query(sql).result_rows]

    def insert_json_lines(self, table: str, path: str) -> None:
        with open(path, "rb") as f:
            self._client.raw_insert(table, insert_block=f.read(), fmt="JSONEachRow")


class ClickHouseColumnar:
    """The columnar copy in ClickHouse database `database`; the same interface as DuckDBColumnar."""

    name = "clickhouse"

    def __init__(self, client: Client, database: str = "tallygate") -> None:
        self.client = client
        self.db = database
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        for statement in _SCHEMA:
            client.command(statement.format(db=database))
        self._version = 0

    def _next(self) -> int:
        self._version += 1
        return self._version

    def replace_range(self, from_ms: int, to_ms: int, rows: list[tuple[Any, ...]]) -> None:
        self.client.command(f"DELETE FROM {self.db}.records WHERE created_at >= {int(from_ms)} "
                            f"AND created_at < {int(to_ms)}")
        if not rows:
            return
        fd, name = tempfile.mkstemp(suffix=".jsonl", prefix="tallygate-clickhouse-")
        try:
            with os.fdopen(fd, "wb") as f:
                for r in rows:
                    ttft = r[_LATENCY + 1]
                    values = (*r[:_LATENCY], bucket(r[_LATENCY]), None if ttft is None else bucket(ttft))
                    doc = dict(zip(_NAMES, values, strict=True))
                    doc["tags"] = orjson.loads(doc["tags"] or "[]")
                    f.write(orjson.dumps(doc) + b"\n")
            self.client.insert_json_lines(f"{self.db}.records", name)
        finally:
            os.unlink(name)

    def hour_counts(self) -> dict[int, int]:
        rows = self.client.rows(f"SELECT intDiv(created_at, {HOUR_MS}) * {HOUR_MS} AS h, count() "
                                f"FROM {self.db}.records GROUP BY h")
        return {int(h): int(n) for h, n in rows}

    def set_feedback(self, rows: list[tuple[str, int]]) -> None:
        version = self._next()
        values = ", ".join(f"({literal(i)}, {int(s)}, {version})" for i, s in rows)
        self.client.command(f"INSERT INTO {self.db}.feedback VALUES {values}")

    def set_labels(self, label_sets: dict[str, dict[str, Any]], key_labels: dict[str, dict[str, Any]]) -> None:
        for table, source in (("label_values", label_sets), ("key_labels", key_labels)):
            self.client.command(f"TRUNCATE TABLE {self.db}.{table}")
            flat = [(i, n, label_value(v)) for i, labels in source.items() for n, v in labels.items()]
            if flat:
                values = ", ".join(f"({literal(i)}, {literal(n)}, {'NULL' if v is None else literal(v)})"
                                   for i, n, v in flat)
                self.client.command(f"INSERT INTO {self.db}.{table} VALUES {values}")

    def get_meta(self, name: str) -> int | None:
        rows = self.client.rows(f"SELECT argMax(value, version) FROM {self.db}.meta WHERE name = {literal(name)} "
                                f"HAVING count() > 0")
        return None if not rows else int(rows[0][0])

    def set_meta(self, name: str, value: int) -> None:
        self.client.command(f"INSERT INTO {self.db}.meta VALUES ({literal(name)}, {int(value)}, {self._next()})")

    def settle(self, watermark: int) -> int:
        """Nothing derived to bring up to date: ClickHouse scans the records for every question."""
        return 0

    def answer(self, question: ColumnarQuestion) -> dict[tuple[Any, ...], Agg]:
        ch = ClickHouseQuestion(**{f: getattr(question, f) for f in question.__dataclass_fields__})
        ch.db = self.db
        has_feedback = self.client.rows(f"SELECT count() > 0 FROM {self.db}.feedback")
        sql = ch.ch_sql(feedback=bool(has_feedback and int(has_feedback[0][0])))
        return ch.groups(self.client.rows(sql))

    def keys(self, question: ColumnarQuestion, after: tuple[int, str] | None, limit: int) -> list[tuple[int, str]]:
        ch = ClickHouseQuestion(**{f: getattr(question, f) for f in question.__dataclass_fields__})
        ch.records_table = f"{self.db}.records"
        sql, _ = ch.keys_sql(after, limit)
        return [(int(ms), str(rid)) for ms, rid in self.client.rows(sql)]

    def minutes(self, from_ms: int, to_ms: int) -> list[tuple[int, int, int, int]]:
        """(minute start, requests, errors, spend in picodollars) of each minute of [from, to) that had requests."""
        rows = self.client.rows(f"SELECT intDiv(created_at, 60000) * 60000 AS m, count(), countIf(status >= 400), "
                                f"toString(sum(toInt128(cost_pico))) FROM {self.db}.records "
                                f"WHERE created_at >= {int(from_ms)} AND created_at < {int(to_ms)} "
                                "GROUP BY m ORDER BY m")
        return [(int(m), int(n), int(e), int(c)) for m, n, e, c in rows]

    def count(self) -> int:
        return int(self.client.rows(f"SELECT count() FROM {self.db}.records")[0][0])


class ClickHouseQuestion(ColumnarQuestion):
    """A `ColumnarQuestion` written in ClickHouse's SQL (values as literals)."""

    db: str = "tallygate"

    def _p(self, value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(literal(str(v)) for v in value) + "]"
        return literal(str(value))

    def _in_list(self, column: str, values: list[str]) -> str:
        return f"{column} IN ({', '.join(literal(v) for v in values)})"

    def _carries(self, tag: str) -> str:
        return f"length({self._in_subtree(tag)}) > 0"

    def _in_subtree(self, tag: str) -> str:
        t = self._p(tag)
        return f"arrayFilter(x -> x = {t} OR startsWith(x, concat({t}, '/')), tags)"

    def _ch_tag_list(self) -> str | None:
        q = self.q
        want = self.root if self.tree else q.tag
        dim = q.tag_dim
        if not self.tree and (dim is None or self.tagged):
            return None
        tags = "tags" if want is None else self._in_subtree(want)
        if self.tree:
            top = want.count("/") + 1 if want is not None else 1
            return (f"arrayDistinct(arrayFlatten(arrayMap(x -> arrayMap(d -> arrayStringConcat(arraySlice("
                    f"splitByChar('/', x), 1, d), '/'), range({top}, least(length(splitByChar('/', x)), "
                    f"{int(self.max_depth)}) + 1)), {tags})))")
        assert dim is not None
        if dim.kind == "tag":
            cut = f"arrayDistinct({tags})"
        else:
            n = int(dim.arg or 0)
            cut = (f"arrayDistinct(arrayMap(x -> arrayStringConcat(arraySlice(splitByChar('/', x), 1, {n}), '/'), "
                   f"{tags}))")
        return f"if(empty({cut}), [CAST(NULL, 'Nullable(String)')], arrayMap(x -> toNullable(x), {cut}))"

    def _ch_time(self, unit: str) -> str:
        tz = self.q.tz
        if tz == zones.UTC and unit in ("hour", "day"):
            step = HOUR_MS if unit == "hour" else DAY_MS
            return f"intDiv(created_at, {step}) * {step}"
        lo, hi = self.from_ms, self.to_ms
        assert lo is not None and hi is not None
        base = lo - lo % QUARTER_MS
        starts = [zones.floor(ms, unit, tz) for ms in range(base, hi, QUARTER_MS)]
        return f"arrayElement([{','.join(map(str, starts))}], intDiv(created_at - {base}, {QUARTER_MS}) + 1)"

    def ch_sql(self, *, feedback: bool) -> str:
        self.params = {}
        q, dims = self.q, self.dims
        where = [w.replace("len(", "length(") for w in self._where()] + self.spans_filter()  # len() is DuckDB's
        tag_list = self._ch_tag_list()
        keys, joins = [], []
        if self.tree:
            keys.append("tg")
        for i, d in enumerate(dims):
            if d.is_tag:
                keys.append("tg")
            elif d.kind == "time":
                keys.append(self._ch_time(str(d.arg)))
            elif d.kind == "label":
                table, col = ("key_labels", "key_id") if q.current_labels else ("label_values", "set_id")
                source = "key_id" if q.current_labels else "label_set"
                joins.append(f"LEFT JOIN (SELECT {col}, value FROM {self.db}.{table} WHERE name = "
                             f"{self._p(str(d.arg))}) AS l{i} ON l{i}.{col} = r.{source}")
                keys.append(f"l{i}.value")
            else:
                keys.append(f"r.{_PLAIN[d.kind]}")
        if feedback:
            joins.append(f"LEFT JOIN (SELECT request_id, argMax(score_milli, version) AS score_milli FROM "
                         f"{self.db}.feedback GROUP BY request_id) AS f ON f.request_id = r.id")
        sums = ["count()", "countIf(status >= 400)", "sum(input_tokens)", "sum(output_tokens)", "sum(cached_tokens)",
                "sum(cache_write_tokens)", "sum(reasoning_tokens)", "toString(sum(toInt128(cost_pico)))"]
        sums += ["count(f.score_milli)", "sum(ifNull(f.score_milli, 0))"] if feedback else ["0", "0"]
        sums += ["sumMap([toUInt16(lat_b)], [toUInt64(1)])",
                 "sumMap(if(isNull(ttft_b), [], [toUInt16(assumeNotNull(ttft_b))]), "
                 "if(isNull(ttft_b), [], [toUInt64(1)]))"]
        inner = f"SELECT * FROM {self.db}.records" + (f" WHERE {' AND '.join(where)}" if where else "")
        source = f"({inner}) AS r" + (f" ARRAY JOIN {tag_list} AS tg" if tag_list is not None else "")
        cols = [f"{k} AS g{i}" for i, k in enumerate(keys)]
        group = f" GROUP BY {', '.join(f'g{i}' for i in range(len(keys)))}" if keys else ""
        return (f"SELECT {', '.join(cols + sums)} FROM {source} {' '.join(joins)}{group} "
                f"SETTINGS join_use_nulls = 1")

    def groups(self, rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Agg]:
        converted = []
        for row in rows:
            lat, ttft = row[-2], row[-1]
            converted.append((*row[:-2], _hist(lat), _hist(ttft)))
        out = super().groups(converted)
        for key in list(out):  # ClickHouse answers an ungrouped count over no record with a zero row
            if not out[key].v[0]:
                del out[key]
        return out


def _hist(pair: Any) -> dict[int, int]:
    """sumMap's (keys, values) as {bucket: count}."""
    if isinstance(pair, dict):
        return {int(k): int(v) for k, v in pair.items()}
    keys, values = pair
    return {int(k): int(v) for k, v in zip(keys, values, strict=True)}


_PLAIN = {"key": "key_id", "model": "requested_model", "served_model": "served_model", "provider": "provider",
          "status": "status"}
assert LATENCY_START < TTFT_START
