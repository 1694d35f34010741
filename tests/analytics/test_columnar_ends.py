"""A roll-up answer's raw ends (the ragged ends of a range, the half hours around local midnights in
Kolkata) are read from the columnar copy in one scan when it holds them, and the answer stays that of
a direct computation over the raw records."""

from __future__ import annotations

import random

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.db import migrate, open_engine
from tests.analytics.ledgers import DAY, HOUR, T0, comparable, fill, random_records

QUESTIONS = [
    ("time.day,label.team", {"tz": "Asia/Kolkata"}, "dims"),
    ("time.day,model", {"tz": "Asia/Kathmandu", "labels": {"team": "a"}}, "usage"),
    ("time.month,model,key", {"tz": "Asia/Kolkata"}, "usage"),
    ("tag_level.1,time.day", {"tz": "Asia/Kolkata"}, "tags"),
    ("label.team,model", {}, "usage"),
    ("key", {"tz": "Asia/Kathmandu"}, "dims"),
    ("tag_level.2", {"labels": {}}, "tags"),
]


def test_raw_ends_come_from_the_columnar_copy_and_answer_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(17)
    fill(engine, random_records(rng, 1500), rng, feedback=50)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    columnar, raw = Analytics(store), Analytics(AnalyticsStore(engine, raw_only=True))
    ends = 0
    for dims, filters, family in QUESTIONS:
        for lo, hi in [(T0, T0 + 3 * DAY), (T0 + 5 * HOUR + 17_017, T0 + 2 * DAY + 7 * HOUR + 3)]:
            q = Query(parse_group_by(dims), from_ms=lo, to_ms=hi, **filters)  # type: ignore[arg-type]
            got = columnar.usage(q)
            assert got["plan"]["source"] == family, (dims, filters)
            levels = {s["level"] for s in got["plan"]["segments"]}
            assert "raw" not in levels, (dims, filters, lo, hi, levels)  # never the ledger's rows
            ends += "columnar" in levels
            assert comparable(got) == comparable(raw.usage(q)), (dims, filters, lo, hi)
    assert ends >= 10  # every ragged range, and whole days around local midnights
    engine.dispose()
