"""A logs walk reads only the hours that hold a match once the columnar copy has counted them:
a combined filter that matches nothing ends on its first page, and a rare one returns exactly
its records, newest first."""

from __future__ import annotations

import random
import time
from typing import Any

import msgspec
from sqlalchemy import event

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.copied_logs import CopiedLogs
from tallygate.analytics.reader import AnalyticsStore
from tallygate.core.tagpath import carries
from tallygate.store.db import migrate, open_engine
from tallygate.store.logs import LogFilter, LogReader
from tests.analytics.ledgers import DAY, HOUR, T0, fill, random_records


def test_a_logs_walk_reads_only_hours_with_matches_and_finds_every_record(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(21)
    records = random_records(rng, 3000)
    fill(engine, records, rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    logs = LogReader(engine, budget_ms=0.0, exact_hours=CopiedLogs(store).hours)  # any hour without a row ends a page
    nothing = next(f for f in (LogFilter(tag=t, labels={"env": "dev"}, model="m2", status=502, key_id=k)
                               for t in ("US/CA/SF", "EU", "prod", "team/b") for k in ("k1", "k2", "k3"))
                   if not any(carries(r.tags, f.tag or "") and r.labels == {"env": "dev"} and r.key_id == f.key_id
                              and r.requested_model == "m2" and r.status == 502 for r in records))
    page = logs.page(nothing, 50, None)
    assert page.rows == [] and page.next_cursor is None and not page.partial
    rare = LogFilter(tag="EU", model="m1", status=429)
    want = sorted((r for r in records if carries(r.tags, "EU") and r.requested_model == "m1" and r.status == 429),
                  key=lambda r: (r.created_at, r.id), reverse=True)
    assert 0 < len(want) < 100
    got, cursor, pages = [], None, 0
    while True:
        page = logs.page(rare, 5, cursor)
        pages += 1
        got += [r.record.id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == [r.id for r in want]
    assert pages <= len(want) // 5 + 1 + len({r.created_at // 3_600_000 for r in want})
    engine.dispose()


def test_the_first_logs_page_does_not_wait_for_the_columnar_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A copy not made yet is made in the background: meanwhile the logs read the ledger alone
    (still exact), and once it is made its hour counts are used."""
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(5)
    records = random_records(rng, 500)
    fill(engine, records, rng, feedback=0)
    opened: list[bool] = []

    def slow_open() -> DuckDBColumnar:
        time.sleep(0.5)
        opened.append(True)
        return DuckDBColumnar()

    store = AnalyticsStore(engine, open_columnar=slow_open)
    copied = CopiedLogs(store)
    f = LogFilter(model="m1")
    started = time.monotonic()
    assert copied.hours(f) is None  # not made yet: the caller counts from the ledger
    assert time.monotonic() - started < 0.4 and not opened
    deadline = time.monotonic() + 30
    while (found := copied.hours(f)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found is not None and opened == [True]
    hours, _ = found
    assert sum(hours.values()) == sum(1 for r in records if r.requested_model == "m1")
    logs, got, cursor = LogReader(engine, exact_hours=copied.hours), [], None
    while True:
        page = logs.page(f, 100, cursor)
        got += [r.record.id for r in page.rows]
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(got) == sorted(r.id for r in records if r.requested_model == "m1")
    engine.dispose()


def _walk(logs: LogReader, f: LogFilter) -> list[str]:
    got, cursor = [], None
    while True:
        page = logs.page(f, 7, cursor)
        got += [r.record.id for r in page.rows]
        if (cursor := page.next_cursor) is None:
            return got


def test_a_walk_finds_a_late_record_in_an_hour_the_copy_counted_no_match_in(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(8)
    records = random_records(rng, 800)
    fill(engine, records, rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar(), sync_every_s=3600)  # no sync during the test
    store.sync()
    copied = CopiedLogs(store)
    logs = LogReader(engine, budget_ms=0.0, exact_hours=copied.hours)
    f = LogFilter(model="m1", status=429, provider="p1")

    def want(recs: list) -> list[str]:  # type: ignore[type-arg]
        return [r.id for r in sorted((r for r in recs if r.requested_model == "m1" and r.status == 429
                                      and r.provider == "p1"), key=lambda r: (r.created_at, r.id), reverse=True)]

    keyed = LogReader(engine, budget_ms=0.0, exact_hours=copied.hours, exact_keys=copied.keys)
    assert _walk(logs, f) == want(records)  # the copy's counts of the filter's hours are kept for a while
    assert _walk(keyed, f) == want(records)
    empty = next(h for h in range(T0, T0 + 3 * DAY, HOUR) if not any(h <= r.created_at < h + HOUR for r in records
                                                                      if r.id in want(records)))
    late = msgspec.structs.replace(records[0], id="late-1", created_at=empty + 7, requested_model="m1",
                                   served_model="m1-served", status=429, provider="p1")
    fill(engine, [late], rng, feedback=0)  # replayed from a journal, long after its hour was copied
    assert _walk(logs, f) == want([*records, late])
    assert _walk(keyed, f) == want([*records, late])  # the copy no longer names the pages of the late hour
    engine.dispose()


def test_pages_after_the_first_ask_the_roll_ups_only_for_the_hours_the_copy_has_not_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Over a month, the roll-ups' bound on every hour of the range was most of a page's time (and
    each page stops after 50 ms): once the copy has counted the filter's hours, a later page asks
    the roll-ups about the last minutes only."""
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(4)
    records = random_records(rng, 1500)
    fill(engine, records, rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar(), sync_every_s=3600)
    store.sync()
    logs = LogReader(engine, exact_hours=CopiedLogs(store).hours)
    f = LogFilter(model="m1", status=502)
    first = logs.page(f, 5, None)
    assert first.next_cursor is not None
    seen: list[tuple[str, Any]] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        got = [r.record.id for r in logs.page(f, 5, first.next_cursor).rows]
    finally:
        event.remove(engine, "before_cursor_execute", before)
    want = [r.id for r in sorted((r for r in records if r.requested_model == "m1" and r.status == 502),
                                 key=lambda r: (r.created_at, r.id), reverse=True)]
    assert got == want[5:10]
    bounds = [sql for sql, params in seen if "FROM dim_rollup_hour" in sql and "502" in str(params)]
    assert all("bucket >=" in sql for sql in bounds), bounds  # the last minutes (here: none), not the month
    engine.dispose()
