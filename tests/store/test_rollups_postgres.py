"""The roll-up design on PostgreSQL: the same records give the same answers as on SQLite."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import event

from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.db import migrate, open_engine
from tallygate.store.feedback import FeedbackStore
from tallygate.store.ingest import BatchIngest
from tests.postgres import postgres_server
from tests.store.test_rollups import DAY, T0, record


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def records() -> list[dict]:
    rng = random.Random(9)
    tags = ["US/CA/SF", "US/NYC", "EU/FR", "team/search/rank", "prod"]
    out = []
    for i in range(600):
        out.append(record(f"req_{i:05d}", T0 + rng.randrange(2 * DAY), rng.sample(tags, rng.randrange(0, 3)),
                          key=rng.choice(["k1", "k2"]), labels={"team": rng.choice(["a", "b"])},
                          status=rng.choice([200, 200, 502]), cost=rng.randrange(10**6, 10**10),
                          latency_us=rng.randrange(10**3, 10**7), ttft_us=rng.choice([None, 5000])))
    return out


QUESTIONS = [("label.team", {}), ("tag_level.2", {}), ("tag", {"tag": "US"}), ("time.day,model", {}),
             ("label.team,status", {"from_ms": T0 + 3_600_000 + 17, "to_ms": T0 + DAY + 5}),  # raw + hours
             ("label.team", {"tag": "US"}),  # tag x label: raw
             ("time.hour,tag_level.1", {"from_ms": T0 + 17, "to_ms": T0 + DAY + 3_600_005}),  # tags by hour
             ("model", {"labels": {"team": "b"}, "from_ms": T0 + 5, "to_ms": T0 + DAY + 7}),  # label x model
             ("time.day,label.team", {"from_ms": T0, "to_ms": T0 + 2 * DAY, "tz": "America/New_York"})]


def answers(url: str) -> list:
    engine = open_engine(url)
    migrate(engine)
    ingest = BatchIngest(engine)
    recs = records()
    for i in range(0, len(recs), 97):
        ingest.write(recs[i:i + 97])
    ingest.write(recs[:150])  # a replayed batch
    feedback = FeedbackStore(engine)
    assert feedback.put("req_00001", 800, "ok") is not None
    assert feedback.put("req_00001", 200, None).replaced  # type: ignore[union-attr]
    analytics = Analytics(AnalyticsStore(engine))
    out = []
    for dims, kw in QUESTIONS:
        doc = analytics.usage(Query(parse_group_by(dims), **kw))
        out.append((doc["data"], doc["totals"], doc["plan"]["source"]))
    out.append(analytics.tree(None, None, Query())["data"])
    out.append(analytics.export("2026-11", T0, T0 + 30 * DAY, parse_group_by("label.team"), Decimal("0.2")))
    engine.dispose()
    return out


def test_postgres_rollups_answer_exactly_as_sqlite(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    on_pg = answers(pg_url)
    on_sqlite = answers(f"sqlite:///{tmp_path}/same.db")
    assert on_pg == on_sqlite
    totals = on_pg[0][1]
    assert totals["requests"] == 600 and totals["feedback"] == {"count": 1, "mean_score": 0.2}
    assert on_pg[8][0] and [source for _, _, source in on_pg[:6]] == ["dims", "tags", "tags", "dims", "usage", "raw"]


def test_attribute_rows_are_read_by_their_index_on_postgres(pg_url: str) -> None:
    """A label by local day reads the attribute's hour rows: on PostgreSQL by `dim IN (?, '')`, which its
    planner matches to the (dim, value, bucket) index; `dim || ''` (SQLite's guard against that
    index) made it scan the whole hour table (label.team by New York day at 10M records: 640 ms,
    with the index 80 ms)."""
    engine = open_engine(pg_url)
    migrate(engine)
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        seen.append(statement)

    Analytics(AnalyticsStore(engine)).usage(Query(parse_group_by("time.day,label.team"), from_ms=T0,
                                                  to_ms=T0 + 2 * DAY, tz="America/New_York"))
    engine.dispose()
    dims = [s for s in seen if "FROM dim_rollup_hour" in s]
    assert len(dims) == 1  # the label's rows and every request's ('' row), in one statement (0505074)
    assert all("dim_rollup_hour.dim IN (" in s and "dim_rollup_hour.dim ||" not in s for s in dims), dims
