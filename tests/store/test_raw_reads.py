"""Questions no roll-up holds read the raw ledger (without a columnar engine): answered, exactly."""

from __future__ import annotations

from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.ingest import BatchIngest
from tests.store.test_rollups import DAY, T0, engine, record  # noqa: F401

HOUR = 3_600_000


def fill(eng) -> None:  # type: ignore[no-untyped-def]
    recs = [record(f"r{i:04d}", T0 + i * (2 * DAY // 400), ["team/a"] if i % 2 else ["US/CA"],
                   labels={"team": "ab"[i % 3 % 2]}) for i in range(400)]
    BatchIngest(eng).write(recs)


def test_a_tag_by_label_question_over_a_long_range_is_answered_not_refused(engine) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    fill(engine)
    analytics = Analytics(AnalyticsStore(engine))  # no columnar engine: the raw ledger, exact
    doc = analytics.usage(Query(parse_group_by("label.team"), tag="team", from_ms=T0, to_ms=T0 + 2 * DAY))
    assert doc["plan"]["source"] == "raw" and doc["plan"]["percentiles"] == "exact"
    assert doc["totals"]["requests"] == 200  # every second record of the 400
    assert doc["plan"]["raw_records"]["at_most"] >= 200
    assert {r["group"]["label.team"]: r["requests"] for r in doc["data"]} == {
        "a": sum(1 for i in range(400) if i % 2 and i % 3 % 2 == 0),
        "b": sum(1 for i in range(400) if i % 2 and i % 3 % 2 == 1)}


def test_sql_summed_ragged_ends_bucket_durations_as_the_histogram_does(engine) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from collections import Counter

    from tallygate.analytics.plan import Segment
    from tallygate.analytics.sql import raw_summed
    from tallygate.core.histogram import EDGES_US, bucket
    from tallygate.core.metrics import LATENCY_START, REQUESTS, TTFT_START

    durations = sorted({1, 999, *EDGES_US, *(e - 1 for e in EDGES_US), *(e + 1 for e in EDGES_US), 10**10})
    BatchIngest(engine).write([record(f"d{i:04d}", T0 + i, [], latency_us=us, ttft_us=us // 2 if i % 2 else None)
                               for i, us in enumerate(durations)])
    with engine.connect() as conn:
        (vector,) = raw_summed(conn, Segment("raw", T0, T0 + DAY), [], key_ids=None, model=None, set_ids=None).values()
    lat = Counter(bucket(us) for us in durations)
    ttft = Counter(bucket(us // 2) for i, us in enumerate(durations) if i % 2)
    assert vector[REQUESTS] == len(durations)
    assert vector[LATENCY_START:TTFT_START] == [lat[b] for b in range(TTFT_START - LATENCY_START)]
    assert vector[TTFT_START:] == [ttft[b] for b in range(len(vector) - TTFT_START)]
