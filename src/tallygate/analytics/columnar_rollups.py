"""The columnar copy's roll-ups, kept in DuckDB beside its records (`analytics/columnar.py`).

Whole UTC days of records rolled up by tag prefix (`tag_days`, and `tag_months` of whole months),
by hour of tags (`tag_hours`) and by hour of everything but tags (`usage_hours`): far fewer rows
than the records, so the questions they hold (`analytics/columnar_spans.py` says which stretches)
read them instead. A day is rolled up once it is whole and settled (`settle`); records copied
again into a day take it out of them (`unroll`) until the next `settle`.
"""

from __future__ import annotations

import threading
import time

import duckdb

from tallygate.core.timebuckets import DAY_MS, ceil, month_floor

# The tag roll-ups' rows (`tag_days`, `tag_months`): created_at is the day's (month's) start.
ROLLED_COLUMNS = """
  created_at BIGINT, key_id VARCHAR, label_set VARCHAR, requested_model VARCHAR, served_model VARCHAR,
  provider VARCHAR, status SMALLINT, error_code VARCHAR, lat_b UTINYINT, ttft_b UTINYINT, tg VARCHAR,
  depth UTINYINT, own BOOLEAN, n BIGINT, errors BIGINT, input_tokens BIGINT, output_tokens BIGINT,
  cached_tokens BIGINT, cache_write_tokens BIGINT, reasoning_tokens BIGINT, cost_hi BIGINT, cost_lo BIGINT,
  fb_n BIGINT, fb_sum BIGINT"""
# One UTC day of records as `tag_days` rows: per record, a row for each distinct tag prefix (its depth,
# and whether the record carries that tag itself) or one row without a tag (an untagged record);
# rows alike but for their sums are one row. About 6x fewer rows than the unnested records (10M a month).
# A day's rows are stored in tag order, so a subtree's rows are a few row groups (DuckDB's zone maps).
# Sums are BIGINT (DuckDB scans HUGEINT columns a hundred times slower); a cost sum is kept exact as
# cost_hi * 2^32 + cost_lo, each part far from BIGINT's bounds.
_ROLL_DAY = """
INSERT INTO tag_days
SELECT day, key_id, label_set, requested_model, served_model, provider, status, error_code, lat_b, ttft_b, tg,
       depth, own, n, errors, input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
       cost // 4294967296, cost % 4294967296, fb_n, fb_sum
FROM (
SELECT $day AS day, key_id, label_set, requested_model, served_model, provider, status, error_code, lat_b, ttft_b,
       tg, coalesce(length(tg) - length(replace(tg, '/', '')) + 1, 0) AS depth,
       tg IS NULL OR list_contains(tags, tg) AS own,
       count(*) AS n, count(*) FILTER (WHERE status >= 400) AS errors, sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens,
       sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens,
       sum(cost_pico::HUGEINT) AS cost, count(f.score_milli) AS fb_n, coalesce(sum(f.score_milli), 0) AS fb_sum
FROM (SELECT id, key_id, label_set, requested_model, served_model, provider, status, error_code, lat_b, ttft_b,
             tags, input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_pico,
             unnest(CASE WHEN coalesce(len(tags), 0) = 0 THEN [NULL::VARCHAR]
                         ELSE p1 || p2 || p3 || p4 || p5 || p6 || p7 || p8 END) AS tg
      FROM records WHERE created_at >= $day AND created_at < $day + 86400000) r
LEFT JOIN feedback f ON f.request_id = r.id
GROUP BY ALL)
ORDER BY tg
"""
# A whole UTC month of `tag_days` rows as `tag_months` rows: the same rows summed over the month's days
# (a sixth of them at 1M records a month; a month-wide tag question reads these). Costs are carried
# from the low part to the high one so that each stays far from BIGINT's bounds.
_ROLL_MONTH = """
INSERT INTO tag_months
SELECT $month, key_id, label_set, requested_model, served_model, provider, status, error_code, lat_b, ttft_b, tg,
       depth, own, sum(n), sum(errors), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
       sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_hi) + sum(cost_lo) // 4294967296,
       sum(cost_lo) % 4294967296, sum(fb_n), sum(fb_sum)
FROM tag_days WHERE created_at >= $month AND created_at < $next
GROUP BY ALL
ORDER BY tg
"""
# The narrow hour roll-up of tags (`tag_hours`): per UTC hour, tag prefix (or none) and whether the
# records carry that tag themselves, their sums and both histograms as (buckets, counts) lists; no
# other attribute. It answers tags by local day, hour or month in any zone (days not aligned with UTC
# days: New York, Kolkata) for questions with no filter but the tag's: 2% of the unnested records (57k
# rows a day at 10M a month, where the records unnest into 2.8M), where keying the histogram buckets
# too made eight times as many rows.
HOURLY_COLUMNS = """
  created_at BIGINT, tg VARCHAR, depth UTINYINT, own BOOLEAN, n BIGINT, errors BIGINT, input_tokens BIGINT,
  output_tokens BIGINT, cached_tokens BIGINT, cache_write_tokens BIGINT, reasoning_tokens BIGINT, cost_hi BIGINT,
  cost_lo BIGINT, fb_n BIGINT, fb_sum BIGINT, lat_bs UTINYINT[], lat_ns BIGINT[], ttft_bs UTINYINT[],
  ttft_ns BIGINT[]"""
_ROLL_HOURS = """
INSERT INTO tag_hours
WITH u AS (
  SELECT created_at - created_at % 3600000 AS h, tg, tg IS NULL OR list_contains(tags, tg) AS own, status,
         input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_pico, lat_b, ttft_b,
         f.score_milli AS score
  FROM (SELECT id, created_at, tags, status, input_tokens, output_tokens, cached_tokens, cache_write_tokens,
               reasoning_tokens, cost_pico, lat_b, ttft_b,
               unnest(CASE WHEN coalesce(len(tags), 0) = 0 THEN [NULL::VARCHAR]
                           ELSE p1 || p2 || p3 || p4 || p5 || p6 || p7 || p8 END) AS tg
        FROM records WHERE created_at >= $day AND created_at < $day + 86400000) r
  LEFT JOIN feedback f ON f.request_id = r.id),
s AS (
  SELECT h, tg, own, count(*) AS n, count(*) FILTER (WHERE status >= 400) AS errors,
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens,
         sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens,
         sum(cost_pico::HUGEINT) AS cost, count(score) AS fb_n, coalesce(sum(score), 0) AS fb_sum
  FROM u GROUP BY h, tg, own),
l AS (SELECT h, tg, own, list(b ORDER BY b) AS bs, list(k ORDER BY b) AS ns
      FROM (SELECT h, tg, own, lat_b AS b, count(*) AS k FROM u GROUP BY ALL) GROUP BY h, tg, own),
t AS (SELECT h, tg, own, list(b ORDER BY b) AS bs, list(k ORDER BY b) AS ns
      FROM (SELECT h, tg, own, ttft_b AS b, count(*) AS k FROM u WHERE ttft_b IS NOT NULL GROUP BY ALL)
      GROUP BY h, tg, own)
SELECT s.h, s.tg, coalesce(length(s.tg) - length(replace(s.tg, '/', '')) + 1, 0), s.own, n, errors, input_tokens,
       output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost // 4294967296, cost % 4294967296,
       fb_n, fb_sum, coalesce(l.bs, []), coalesce(l.ns, []), coalesce(t.bs, []), coalesce(t.ns, [])
FROM s LEFT JOIN l ON l.h = s.h AND l.tg IS NOT DISTINCT FROM s.tg AND l.own = s.own
LEFT JOIN t ON t.h = s.h AND t.tg IS NOT DISTINCT FROM s.tg AND t.own = s.own
ORDER BY s.h, s.tg
"""
# The hour roll-up of everything but tags (`usage_hours`): per UTC hour and attributes (key, label set,
# models, provider, status, error code) the sums and both histograms as lists, 17.7k rows a day at 10M
# records a month (333k records a day; the histogram buckets as keys made 5x as many rows). It answers
# questions without tags in any zone and with any filter from the whole UTC hours of their range.
USAGE_COLUMNS = """
  created_at BIGINT, key_id VARCHAR, label_set VARCHAR, requested_model VARCHAR, served_model VARCHAR,
  provider VARCHAR, status SMALLINT, error_code VARCHAR, n BIGINT, errors BIGINT, input_tokens BIGINT,
  output_tokens BIGINT, cached_tokens BIGINT, cache_write_tokens BIGINT, reasoning_tokens BIGINT, cost_hi BIGINT,
  cost_lo BIGINT, fb_n BIGINT, fb_sum BIGINT, lat_bs UTINYINT[], lat_ns BIGINT[], ttft_bs UTINYINT[],
  ttft_ns BIGINT[]"""
_USAGE_KEYS = "h, key_id, label_set, requested_model, served_model, provider, status, error_code"
_ROLL_USAGE = f"""
INSERT INTO usage_hours
WITH u AS (
  SELECT created_at - created_at % 3600000 AS h, key_id, label_set, requested_model, served_model, provider, status,
         error_code, input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_pico,
         lat_b, ttft_b, f.score_milli AS score
  FROM records r LEFT JOIN feedback f ON f.request_id = r.id
  WHERE created_at >= $day AND created_at < $day + 86400000),
s AS (
  SELECT {_USAGE_KEYS}, count(*) AS n, count(*) FILTER (WHERE status >= 400) AS errors,
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens,
         sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens,
         sum(cost_pico::HUGEINT) AS cost, count(score) AS fb_n, coalesce(sum(score), 0) AS fb_sum,
         row_number() OVER () AS rid
  FROM u GROUP BY ALL),
b AS (
  SELECT rid, lat_b, ttft_b, count(*) AS k
  FROM u JOIN s ON ({' AND '.join(f's.{c} IS NOT DISTINCT FROM u.{c}' for c in _USAGE_KEYS.split(', '))})
  GROUP BY ALL),
l AS (SELECT rid, list(lat_b ORDER BY lat_b) AS bs, list(k ORDER BY lat_b) AS ns
      FROM (SELECT rid, lat_b, sum(k) AS k FROM b GROUP BY ALL) GROUP BY rid),
t AS (SELECT rid, list(ttft_b ORDER BY ttft_b) AS bs, list(k ORDER BY ttft_b) AS ns
      FROM (SELECT rid, ttft_b, sum(k) AS k FROM b WHERE ttft_b IS NOT NULL GROUP BY ALL) GROUP BY rid)
SELECT {_USAGE_KEYS}, n, errors, input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
       cost // 4294967296, cost % 4294967296, fb_n, fb_sum, coalesce(l.bs, []), coalesce(l.ns, []),
       coalesce(t.bs, []), coalesce(t.ns, [])
FROM s LEFT JOIN l ON l.rid = s.rid LEFT JOIN t ON t.rid = s.rid
ORDER BY h
"""
ROLL_BUDGET_S = 5.0  # a sync rolls up days for at most about this long (the rest at the next sync)


def unroll(cur: duckdb.DuckDBPyConnection, from_ms: int, to_ms: int) -> None:
    """The days of [from, to) leave the tag roll-up (their records changed): rolled up again by `settle`."""
    cur.execute("DELETE FROM tag_days WHERE created_at >= ? AND created_at < ?", [from_ms, to_ms])
    cur.execute("DELETE FROM rolled_days WHERE day >= ? AND day < ?", [from_ms, to_ms])
    cur.execute("DELETE FROM tag_hours WHERE created_at >= ? AND created_at < ?", [from_ms, to_ms])
    cur.execute("DELETE FROM hourly_days WHERE day >= ? AND day < ?", [from_ms, to_ms])
    cur.execute("DELETE FROM usage_hours WHERE created_at >= ? AND created_at < ?", [from_ms, to_ms])
    cur.execute("DELETE FROM usage_days WHERE day >= ? AND day < ?", [from_ms, to_ms])
    first = month_floor(from_ms)  # and the months that hold those days
    cur.execute("DELETE FROM tag_months WHERE created_at >= ? AND created_at < ?", [first, to_ms])
    cur.execute("DELETE FROM rolled_months WHERE month >= ? AND month < ?", [first, to_ms])


def settle(cur: duckdb.DuckDBPyConnection, write: threading.Lock, watermark: int,
           budget_s: float | None = ROLL_BUDGET_S) -> int:
    """Roll up every whole UTC day before `watermark` that is not, by day (`tag_days`) and by hour
    (`tag_hours`, `usage_hours`; a copy made before them gets them here), oldest first, for about
    `budget_s` seconds (None: all of them), writing under `write`; returns the days rolled up."""
    first = cur.execute("SELECT min(created_at) FROM records WHERE created_at < ?", [watermark]).fetchone()
    if not first or first[0] is None:
        return 0
    done = {int(d) for (d,) in cur.execute("SELECT day FROM rolled_days").fetchall()}
    hourly = {int(d) for (d,) in cur.execute("SELECT day FROM hourly_days").fetchall()}
    usage = {int(d) for (d,) in cur.execute("SELECT day FROM usage_days").fetchall()}
    start = time.monotonic()
    rolled = 0
    for day in range(int(first[0]) - int(first[0]) % DAY_MS, watermark - DAY_MS + 1, DAY_MS):
        if day in done and day in hourly and day in usage:
            continue
        if budget_s is not None and time.monotonic() - start > budget_s:
            break
        with write:
            cur.execute("BEGIN")
            if day not in done:
                cur.execute("DELETE FROM tag_days WHERE created_at = ?", [day])
                cur.execute(_ROLL_DAY, {"day": day})
                cur.execute("INSERT OR REPLACE INTO rolled_days VALUES (?)", [day])
            if day not in hourly:
                cur.execute("DELETE FROM tag_hours WHERE created_at >= ? AND created_at < ?", [day, day + DAY_MS])
                cur.execute(_ROLL_HOURS, {"day": day})
                cur.execute("INSERT OR REPLACE INTO hourly_days VALUES (?)", [day])
            if day not in usage:
                cur.execute("DELETE FROM usage_hours WHERE created_at >= ? AND created_at < ?", [day, day + DAY_MS])
                cur.execute(_ROLL_USAGE, {"day": day})
                cur.execute("INSERT OR REPLACE INTO usage_days VALUES (?)", [day])
            cur.execute("COMMIT")
        rolled += 1
    _settle_months(cur, write, watermark)
    return rolled


def _settle_months(cur: duckdb.DuckDBPyConnection, write: threading.Lock, watermark: int) -> None:
    """Roll up every whole UTC month before `watermark` whose days are all rolled up and that is not."""
    done = {int(m) for (m,) in cur.execute("SELECT month FROM rolled_months").fetchall()}
    days = [int(d) for (d,) in cur.execute("SELECT day FROM rolled_days ORDER BY day").fetchall()]
    if not days:
        return
    month = month_floor(days[0])
    have = set(days)
    while month < watermark:
        nxt = ceil(month + 1, "month")
        if nxt <= watermark and month not in done and all(d in have for d in range(month, nxt, DAY_MS)):
            with write:
                cur.execute("BEGIN")
                cur.execute("DELETE FROM tag_months WHERE created_at = ?", [month])
                cur.execute(_ROLL_MONTH, {"month": month, "next": nxt})
                cur.execute("INSERT OR REPLACE INTO rolled_months VALUES (?)", [month])
                cur.execute("COMMIT")
        month = nxt
