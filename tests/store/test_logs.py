"""Log pages: exactly the filtered records, newest first, whatever the filter; never a full scan."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import event, text

from tallygate.core.record import Attempt, LedgerRecord, replace
from tallygate.core.tagpath import carries
from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tallygate.store.logs import LogFilter, LogReader
from tests.store.test_rollups import DAY, T0, record

TAGS = ["US", "US/CA", "US/CA/SF", "US/NYC", "EU/FR", "team/x/y", "prod", "rare/one"]
LABELS = [{"team": "a"}, {"team": "b", "env": "prod"}, {"env": "dev"}, {}]


def records() -> list[LedgerRecord]:
    rng = random.Random(12)
    out = []
    for i in range(2500):
        tags = rng.sample(TAGS[:-1], rng.randrange(0, 3)) + (["rare/one"] if i % 500 == 7 else [])
        out.append(record(f"req_{i:05d}", T0 + rng.randrange(3 * DAY) // 7 * 7, tags,  # some equal times
                          key=rng.choice(["k1", "k2", "k3", None]), labels=rng.choice(LABELS),
                          status=rng.choice([200, 200, 200, 429, 502]), model=rng.choice(["m1", "m2"])))
        r = out[-1]
        out[-1] = replace(r, provider=("p1", "p2", "p3")[i % 3], served_model=f"{r.requested_model}-{i % 2}",
                          error_code={429: "upstream_rate_limited", 502: "upstream_server_error"}.get(r.status))
        if i % 3:  # one attempt like the record, or a fallback after a failed one
            first = Attempt(provider="p", model=out[-1].requested_model or "", status=out[-1].status,
                            latency_ms=12.5 + i, target=out[-1].requested_model)
            tries = (first,) if i % 3 == 1 else (
                Attempt(provider="q", model="other", status=502, latency_ms=3.25, error="UpstreamHTTPError"), first)
            out[-1] = replace(out[-1], attempts=tries)
    return out


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):  # type: ignore[no-untyped-def]
    eng = open_engine(f"sqlite:///{tmp_path_factory.mktemp('logs')}/l.db")
    migrate(eng)
    recs = records()
    ingest = BatchIngest(eng)
    for i in range(0, len(recs), 400):
        ingest.write(recs[i:i + 400])
    yield eng, recs
    eng.dispose()


def expected(recs: list[LedgerRecord], f: LogFilter) -> list[str]:
    def ok(r: LedgerRecord) -> bool:
        return ((f.tag is None or carries(r.tags, f.tag))
                and all(r.labels.get(n) == v for n, v in f.labels.items())
                and (f.key_id is None or r.key_id == f.key_id) and (f.model is None or r.requested_model == f.model)
                and (f.status is None or r.status == f.status)
                and (f.error_code is None or r.error_code == f.error_code)
                and (f.provider is None or r.provider == f.provider)
                and (f.served_model is None or r.served_model == f.served_model)
                and (f.from_ms is None or r.created_at >= f.from_ms) and (f.to_ms is None or r.created_at < f.to_ms))
    return [r.id for r in sorted(filter(ok, recs), key=lambda r: (r.created_at, r.id), reverse=True)]


def all_pages(reader: LogReader, f: LogFilter, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor, partial = None, 0
    for _ in range(10_000):
        page = reader.page(f, limit, cursor)
        assert len(page.rows) <= limit
        partial += page.partial
        ids += [r.record.id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            return ids, partial
    raise AssertionError("the pages never ended")


FILTERS = [
    LogFilter(),
    LogFilter(tag="US"), LogFilter(tag="US/CA"), LogFilter(tag="rare/one"), LogFilter(tag="nowhere"),
    LogFilter(tag="U"),  # a prefix of a segment is not a tag prefix
    LogFilter(labels={"team": "a"}), LogFilter(labels={"team": "nobody"}),
    LogFilter(labels={"env": "prod", "team": "b"}),
    LogFilter(key_id="k2"), LogFilter(key_id="no-such-key"), LogFilter(model="m1", status=502),
    LogFilter(status=429, tag="US/NYC", labels={"env": "dev"}),
    LogFilter(tag="prod", key_id="k1", model="m2", from_ms=T0 + DAY // 3, to_ms=T0 + 2 * DAY + 1234),
    LogFilter(from_ms=T0 + 5 * 3_600_000 + 17, to_ms=T0 + 5 * 3_600_000 + 900_000),
    LogFilter(error_code="upstream_rate_limited"), LogFilter(provider="p2"), LogFilter(served_model="m1-1"),
    LogFilter(error_code="upstream_server_error", provider="p3", served_model="m2-0", tag="US"),
    LogFilter(provider="p1", labels={"team": "a"}, from_ms=T0 + DAY // 5, to_ms=T0 + DAY + 77),
    LogFilter(error_code="no_such_code"), LogFilter(provider="nobody", tag="US"),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: repr(f)[9:60])
def test_pages_hold_exactly_the_matching_records_newest_first(ledger, f: LogFilter) -> None:  # type: ignore[no-untyped-def]
    eng, recs = ledger
    want = expected(recs, f)
    got, partial = all_pages(LogReader(eng, budget_ms=10_000), f, 37)
    assert partial == 0
    assert got == want


@pytest.mark.parametrize("f", [LogFilter(tag="rare/one"), LogFilter(status=502, model="m1", tag="EU/FR"),
                               LogFilter(labels={"team": "b"})], ids=str)
def test_a_page_out_of_scan_budget_is_partial_and_its_cursor_loses_nothing(ledger, f: LogFilter) -> None:  # type: ignore[no-untyped-def]
    eng, recs = ledger
    got, partial = all_pages(LogReader(eng, budget_ms=0), f, 50)
    assert partial > 0  # with no budget, a page ends after its first hour that had too few rows
    assert got == expected(recs, f)


def test_a_filter_that_matches_nothing_reads_no_record(ledger) -> None:  # type: ignore[no-untyped-def]
    eng, _ = ledger
    statements = capture(eng, lambda reader: [reader.page(f, 50, None) for f in (
        LogFilter(tag="nowhere"), LogFilter(labels={"team": "nobody"}), LogFilter(key_id="nope", tag="US"),
        LogFilter(provider="nobody"), LogFilter(served_model="none", status=200))])
    assert not [s for s, _ in statements if "FROM requests" in s]


def capture(eng, run) -> list[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, Any]] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(eng, "before_cursor_execute", before)
    try:
        run(LogReader(eng, budget_ms=10_000))
    finally:
        event.remove(eng, "before_cursor_execute", before)
    return seen


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: repr(f)[9:60])
def test_every_log_query_reads_the_ledger_by_an_index_never_a_full_scan(ledger, f: LogFilter) -> None:  # type: ignore[no-untyped-def]
    eng, _ = ledger
    statements = capture(eng, lambda reader: reader.page(f, 20, reader.page(f, 20, None).next_cursor))
    assert statements
    with eng.connect() as conn:
        for sql, params in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
            for step in plan:
                # the ledger's big tables are only ever searched by an index, and a search of
                # requests by time is bounded on both sides (one hour at most)
                assert not step.startswith(("SCAN requests", "SCAN request_tags", "SCAN tag_rollup_hour",
                                            "SCAN dim_rollup_hour", "SCAN usage_rollup_hour")), (step, sql)
                if "ix_requests_created_at" in step:
                    assert "created_at>? AND created_at<?" in step, step
            if "FROM requests" in sql and "request_tags" not in sql.split("FROM requests")[0]:
                assert any(s.startswith("SEARCH") for s in plan), plan


def test_logs_read_labels_and_attempts_back_as_written(ledger) -> None:  # type: ignore[no-untyped-def]
    eng, recs = ledger
    reader = LogReader(eng)
    for r in recs[:50]:
        got = reader.get(r.id)
        assert got is not None and got.record == r
    with eng.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM requests WHERE labels IS NOT NULL")).scalar_one() == 0
