"""Log pages keyed by the columnar copy: the copy names each page's records, the ledger gives them by
primary key, so every page of a rare filter is full, and the pages hold exactly the matching
records newest first, the last minutes (not copied yet) included, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.copied_logs import CopiedLogs
from tallygate.analytics.reader import AnalyticsStore
from tallygate.core.record import replace
from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tallygate.store.logs import LogFilter, LogReader
from tests.postgres import postgres_server
from tests.store.test_logs import FILTERS, all_pages, expected, records
from tests.store.test_rollups import DAY, T0

MINUTE = 60_000


def _ledger(url: str) -> tuple[Any, list[Any]]:
    eng = open_engine(url)
    migrate(eng)
    old = records()
    now = int(time.time() * 1000)
    # the last two hours: some copied (older than 10 minutes), some only in the ledger
    fresh = [replace(r, id=f"req_fresh_{i:03d}", created_at=now - i * 97_000) for i, r in enumerate(old[:80])]
    recs = old + fresh
    ingest = BatchIngest(eng)
    ordered = sorted(recs, key=lambda r: r.created_at)
    for i in range(0, len(ordered), 400):
        ingest.write(ordered[i:i + 400])
    return eng, recs


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ledger(request, tmp_path_factory) -> Iterator[tuple[Any, list[Any], AnalyticsStore]]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        eng, recs = _ledger(f"sqlite:///{tmp_path_factory.mktemp('keyed')}/l.db")
        store = AnalyticsStore(eng, columnar=DuckDBColumnar(), sync_every_s=3600)
        store.sync()
        yield eng, recs, store
        eng.dispose()
        return
    with postgres_server() as url:
        eng, recs = _ledger(url)
        store = AnalyticsStore(eng, columnar=DuckDBColumnar(), sync_every_s=3600)
        store.sync()
        yield eng, recs, store
        eng.dispose()


def _reader(store: AnalyticsStore, eng: Any, budget_ms: float) -> LogReader:
    copied = CopiedLogs(store)
    return LogReader(eng, budget_ms=budget_ms, exact_hours=copied.hours, exact_keys=copied.keys)


def test_keyed_pages_hold_exactly_the_matching_records_newest_first(ledger) -> None:  # type: ignore[no-untyped-def]
    eng, recs, store = ledger
    assert store.mirror is not None and store.mirror.watermark > T0 + 3 * DAY  # the copy holds the old records
    for f in [*FILTERS, LogFilter(model="m1", from_ms=T0 + DAY)]:
        for limit in (41, 500):
            got, partial = all_pages(_reader(store, eng, 10_000), f, limit)
            assert got == expected(recs, f), (f, limit)
            assert partial == 0


def test_every_page_of_a_rare_filter_is_full_until_its_last(ledger) -> None:  # type: ignore[no-untyped-def]
    """With no time to scan hours (budget 0), a page of matches spread over days is still full:
    the walk takes exactly as many pages as it has pages of matches."""
    eng, recs, store = ledger
    reader = _reader(store, eng, 0.0)
    for f in (LogFilter(status=429, tag="US/NYC", labels={"env": "dev"}), LogFilter(tag="rare/one"),
              LogFilter(error_code="upstream_server_error", provider="p3", served_model="m2-0", tag="US"),
              LogFilter(model="m2", status=502, provider="p1", to_ms=T0 + 3 * DAY)):
        want = expected(recs, f)
        assert want, f
        for limit in (3, 10):
            pages, got, cursor = 0, [], None
            while True:
                page = reader.page(f, limit, cursor)
                pages += 1
                got += [r.record.id for r in page.rows]
                assert not page.partial and (len(page.rows) == limit or page.next_cursor is None), (f, pages)
                if (cursor := page.next_cursor) is None:
                    break
            assert got == want
            assert pages == max(1, -(-len(want) // limit)), (f, limit, pages)


def test_no_page_is_partial_when_the_watermark_is_in_the_hour_before_nows(ledger) -> None:  # type: ignore[no-untyped-def]
    """In the first ten minutes of an hour the watermark (ten minutes ago) is in the hour before:
    the ledger's part of a walk is then two hours, and with no time to scan (budget 0) a page that
    crossed from one to the other came back partial, even empty (CI at hh:05: an empty partial page
    of a rare filter). Here the copy is synced as of five past the current hour, whatever the clock."""
    eng, recs, _ = ledger
    now = int(time.time() * 1000)
    hour = now - now % 3_600_000
    store = AnalyticsStore(eng, columnar=DuckDBColumnar(), sync_every_s=3600)
    store.sync(now_ms=hour + 5 * MINUTE)
    assert store.mirror is not None and store.mirror.watermark == hour - 5 * MINUTE
    reader = _reader(store, eng, 0.0)
    for f in (LogFilter(status=429, tag="US/NYC", labels={"env": "dev"}), LogFilter(tag="rare/one"),
              LogFilter(error_code="upstream_server_error", provider="p3", served_model="m2-0", tag="US"),
              LogFilter(model="m1"), LogFilter(status=502)):
        want = expected(recs, f)
        for limit in (3, 10):
            pages, got, cursor = 0, [], None
            while True:
                page = reader.page(f, limit, cursor)
                pages += 1
                got += [r.record.id for r in page.rows]
                assert not page.partial and (len(page.rows) == limit or page.next_cursor is None), (f, limit, pages)
                if (cursor := page.next_cursor) is None:
                    break
            assert got == want, (f, limit)


def test_a_keyed_page_reads_the_ledger_once_by_primary_key(ledger) -> None:  # type: ignore[no-untyped-def]
    """Past the last hour, a page is one read of the ledger's records, by id (no hour walked)."""
    eng, recs, store = ledger
    f = LogFilter(model="m1", status=429)
    reader = _reader(store, eng, 10_000)
    first = reader.page(f, 5, None)
    second = reader.page(f, 5, first.next_cursor)  # the hours of the walk are counted by now
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(eng, "before_cursor_execute", before)
    try:
        third = reader.page(f, 5, second.next_cursor)
    finally:
        event.remove(eng, "before_cursor_execute", before)
    want = expected(recs, f)
    assert [r.record.id for r in (*first.rows, *second.rows, *third.rows)] == want[:15]
    reads = [sql for sql in seen if "FROM requests" in sql and "label_sets" in sql]
    assert len(reads) == 1 and "requests.id IN" in reads[0], reads


def test_a_walk_reads_its_keys_from_the_copy_on_its_first_page_only(ledger) -> None:  # type: ignore[no-untyped-def]
    """The first page reads a thousand keys ahead (over the last hour, day, week, then the whole
    range, until one holds them); the walk's next pages take theirs from them."""
    eng, recs, store = ledger
    columnar = store.columnar
    assert columnar is not None
    reads: list[int] = []
    read = columnar.keys

    def counted(question, after, limit):  # type: ignore[no-untyped-def]
        reads.append(limit)
        return read(question, after, limit)

    columnar.keys = counted  # type: ignore[method-assign]
    try:
        f = LogFilter(model="m1", status=429, provider="p2", to_ms=T0 + 3 * DAY)  # no other test's
        reader = _reader(store, eng, 10_000)
        first = reader.page(f, 4, None)
        on_first = len(reads)
        rest, _ = all_pages_from(reader, f, 4, first.next_cursor)
    finally:
        columnar.keys = read  # type: ignore[method-assign]
    got = [r.record.id for r in first.rows] + rest
    assert got == expected(recs, f) and len(got) > 12
    assert 1 <= on_first <= 4 and len(reads) == on_first, reads


def all_pages_from(reader: LogReader, f: LogFilter, limit: int, cursor: str | None) -> tuple[list[str], int]:
    ids: list[str] = []
    while cursor is not None:
        page = reader.page(f, limit, cursor)
        ids += [r.record.id for r in page.rows]
        cursor = page.next_cursor
    return ids, 0
