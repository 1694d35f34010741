"""The scale-out backend answers like the embedded one: the same copy kept by the same mirror, the
same questions in ClickHouse's SQL, run here on chDB (ClickHouse in process; no server on these
machines), equal to a direct computation over the raw records."""

from __future__ import annotations

import random

from tallygate.analytics.clickhouse import ChdbClient, ClickHouseColumnar
from tallygate.analytics.copied_logs import CopiedLogs
from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.db import migrate, open_engine
from tests.analytics.ledgers import T0, comparable, fill, random_question, random_records


def test_clickhouse_backend_answers_random_questions_like_the_raw_ledger(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(41)
    fill(engine, random_records(rng, 1200), rng, feedback=25)
    client = ChdbClient(str(tmp_path / "ch"))
    store = AnalyticsStore(engine, columnar=ClickHouseColumnar(client))
    assert store.sync() == 1200
    raw, clickhouse = Analytics(AnalyticsStore(engine, raw_only=True)), Analytics(store)
    asked = 0
    while asked < 40:
        q = random_question(rng)
        if q is None:
            continue
        asked += 1
        assert comparable(clickhouse.usage(q)) == comparable(raw.usage(q)), q
    q = Query(parse_group_by("tag_level.2,label.team"), from_ms=T0, to_ms=T0 + 86_400_000, tz="Asia/Kolkata")
    assert clickhouse.usage(q)["plan"]["source"] == "columnar"
    tree = Query(labels={"team": "a"}, from_ms=T0 + 17, to_ms=T0 + 2 * 86_400_000)
    strip = lambda nodes: [(n["tag"], n["requests"], n["cost"], strip(n["children"])) for n in nodes]  # noqa: E731
    assert strip(clickhouse.tree(None, None, tree)["data"]) == strip(raw.tree(None, None, tree)["data"])
    client.close()
    engine.dispose()


def test_clickhouse_backend_keys_the_logs_pages_like_the_ledger(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tallygate.core.tagpath import carries
    from tallygate.store.logs import LogFilter, LogReader

    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(43)
    records = random_records(rng, 900)
    fill(engine, records, rng, feedback=0)
    client = ChdbClient(str(tmp_path / "ch"))
    store = AnalyticsStore(engine, columnar=ClickHouseColumnar(client))
    store.sync()
    copied = CopiedLogs(store)
    logs = LogReader(engine, budget_ms=0.0, exact_hours=copied.hours, exact_keys=copied.keys)
    for f in (LogFilter(tag="US", status=429), LogFilter(labels={"team": "a"}, provider="p1"), LogFilter(model="m2")):
        want = [r.id for r in sorted((r for r in records if (f.tag is None or carries(r.tags, f.tag))
                                      and all(r.labels.get(n) == v for n, v in f.labels.items())
                                      and f.status in (None, r.status) and f.provider in (None, r.provider)
                                      and f.model in (None, r.requested_model)),
                                     key=lambda r: (r.created_at, r.id), reverse=True)]
        got, cursor = [], None
        while True:
            page = logs.page(f, 9, cursor)
            assert len(page.rows) == 9 or page.next_cursor is None
            got += [r.record.id for r in page.rows]
            if (cursor := page.next_cursor) is None:
                break
        assert got == want, f
    client.close()
    engine.dispose()
