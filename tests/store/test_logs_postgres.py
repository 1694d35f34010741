"""Log pages on PostgreSQL: the same records as on SQLite, each query with an index plan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tallygate.store.logs import LogReader
from tests.postgres import postgres_server
from tests.store.test_logs import FILTERS, all_pages, capture, expected, records


@pytest.fixture(scope="module")
def pg_ledger() -> Iterator[tuple[Any, list[Any]]]:
    with postgres_server() as url:
        eng = open_engine(url)
        migrate(eng)
        recs = records()
        ingest = BatchIngest(eng)
        for i in range(0, len(recs), 400):
            ingest.write(recs[i:i + 400])
        yield eng, recs
        eng.dispose()


def test_postgres_pages_hold_exactly_the_matching_records(pg_ledger) -> None:  # type: ignore[no-untyped-def]
    eng, recs = pg_ledger
    for f in FILTERS:
        assert all_pages(LogReader(eng, budget_ms=10_000), f, 41)[0] == expected(recs, f), f


def test_postgres_has_an_index_plan_for_every_log_query(pg_ledger) -> None:  # type: ignore[no-untyped-def]
    eng, _ = pg_ledger
    for f in FILTERS:
        statements = capture(eng, lambda reader, f=f: reader.page(f, 20, reader.page(f, 20, None).next_cursor))
        with eng.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: make the planner show its index plan
            for sql, params in statements:
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, params))
                for table in ("requests", "request_tags", "tag_rollup_hour", "dim_rollup_hour", "usage_rollup_hour"):
                    assert f"Seq Scan on {table} " not in plan + " ", (f, sql, plan)
