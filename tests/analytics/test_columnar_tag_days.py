"""The columnar copy's tag roll-up (`tag_days`): whole UTC days of tag questions are read from it,
and its answers stay those of a direct computation over the raw records when a late record or a
feedback score changes a day that was already rolled up."""

from __future__ import annotations

import random

import msgspec

from tallygate.analytics import columnar_spans as spans
from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.db import migrate, open_engine
from tallygate.store.feedback import FeedbackStore
from tests.analytics.ledgers import DAY, HOUR, T0, comparable, fill, random_records

# tag dimensions, the tree's kinds of rows and a tag filter alone, with every other filter kind
QUESTIONS = [
    ("tag,label.team", {}),
    ("tag_level.2,status", {"labels": {"team": "a"}}),
    ("tag_level.1,time.day", {"model": "m1"}),
    ("tag,time.month", {"provider": "p2"}),
    ("tag_level.3,key", {"tag": "team"}),
    ("model,status", {"tag": "US/CA"}),
    ("label.env", {"tag": "US", "served_model": "m1-served", "error_code": "internal_error", "status": 500}),
    ("tag", {"current_labels": True, "labels": {"team": "b"}}),
    # local months: the UTC days inside one month are rolled up, the day around its start is not
    ("tag,time.month", {"tz": "America/New_York", "provider": "p1"}),
    ("tag_level.2,time.month,label.team", {"tz": "Pacific/Chatham", "tag": "US"}),
    ("tag_level.1,time.month", {"tz": "Asia/Kolkata", "status": 200}),
    ("tag,time.day", {"tz": "Asia/Kathmandu"}),  # local days: never a whole UTC day, the records answer
]
RANGES = [(T0, T0 + 3 * DAY), (T0 + 5 * HOUR + 17, T0 + 2 * DAY + 7 * HOUR), (None, None), (T0 + DAY, None)]


def _tree(doc: dict) -> tuple:  # type: ignore[type-arg]
    def nodes(ns: list[dict]) -> list[tuple]:  # type: ignore[type-arg]
        return [(n["tag"], n["requests"], n["errors"], n["cost"], n["input_tokens"], nodes(n["children"])) for n in ns]
    return nodes(doc["data"]), doc["totals"]["cost"]


def _assert_same(columnar: Analytics, raw: Analytics) -> None:
    for dims, filters in QUESTIONS:
        for lo, hi in RANGES:
            q = Query(parse_group_by(dims), from_ms=lo, to_ms=hi, **filters)  # type: ignore[arg-type]
            got = columnar.usage(q)
            assert got["plan"]["source"] == "columnar", (dims, filters)
            assert comparable(got) == comparable(raw.usage(q)), (dims, filters, lo, hi)
    for root in (None, "US", "team/a"):
        for labels in ({}, {"team": "a"}):
            q = Query(labels=labels, from_ms=T0, to_ms=T0 + 3 * DAY)
            assert _tree(columnar.tree(root, None, q)) == _tree(raw.tree(root, None, q)), (root, labels)


def test_whole_days_are_read_from_the_tag_roll_up_and_answer_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(41)
    fill(engine, random_records(rng, 1500), rng, feedback=60)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    store = AnalyticsStore(engine, columnar=copy)
    assert store.sync() == 1500
    cur = copy._cursor()
    rolled = f"SELECT count(*) FROM rolled_days WHERE day < {T0 + 3 * DAY}"  # and the empty days since
    assert cur.execute(rolled).fetchone() == (3,)
    assert cur.execute("SELECT count(DISTINCT created_at) FROM tag_days").fetchone() == (3,)
    assert copy._rolled(cur, T0 + 5 * HOUR, T0 + 3 * DAY) == [(T0 + DAY, T0 + 3 * DAY)]
    # every record is in the roll-up once per distinct tag prefix (or once, untagged)
    assert cur.execute("SELECT sum(n) FROM tag_days").fetchone() == cur.execute(
        "SELECT sum(greatest(len(p1 || p2 || p3 || p4 || p5 || p6 || p7 || p8), 1)) FROM records").fetchone()
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    _assert_same(Analytics(store), raw)

    # a record replayed late into a rolled-up day, and a score on a record of another one
    late = msgspec.structs.replace(random_records(random.Random(4), 1)[0], id="late-1", tags=("US/CA/SF", "prod"),
                                   created_at=T0 + DAY + 5 * HOUR + 7)
    fill(engine, [late], rng, feedback=0)
    first = next(r for r in random_records(random.Random(41), 1500) if r.created_at < T0 + DAY and r.tags)
    FeedbackStore(engine).put(first.id, 977, None)
    store.sync()
    assert cur.execute(rolled).fetchone() == (3,)  # rolled up again
    _assert_same(Analytics(store), raw)
    copy.close()
    engine.dispose()


def test_a_local_month_reads_the_utc_days_that_lie_inside_it() -> None:
    def days(dims: str, tz: str) -> list[tuple[int, int]]:
        q = ColumnarQuestion(Query(parse_group_by(dims), tz=tz), T0, T0 + 3 * DAY)
        return spans.in_buckets([(T0 - DAY, T0 + 3 * DAY)], q.time_unit, tz)
    assert days("tag,time.month", "UTC") == [(T0 - DAY, T0 + 3 * DAY)]
    # New York's November starts at 04:00 UTC on the 1st (and DST ends at 06:00): that day is not whole
    assert days("tag,time.month", "America/New_York") == [(T0 - DAY, T0), (T0 + DAY, T0 + 3 * DAY)]
    # Kolkata's starts at 18:30 UTC on 31 October
    assert days("tag_level.2,time.month", "Asia/Kolkata") == [(T0, T0 + 3 * DAY)]
    assert days("tag,time.day", "Asia/Kolkata") == []
    assert days("tag,time.day", "UTC") == [(T0 - DAY, T0 + 3 * DAY)]


def test_a_copy_made_before_the_roll_up_rolls_up_its_days_without_copying_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(7)
    fill(engine, random_records(rng, 400), rng, feedback=0)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    AnalyticsStore(engine, columnar=copy).sync()
    copy._cursor().execute("DROP TABLE tag_days; DROP TABLE rolled_days")  # as an older copy
    copy.close()
    again = DuckDBColumnar(tmp_path / "copy.duckdb")
    store = AnalyticsStore(engine, columnar=again)
    assert store.sync() == 0  # nothing copied: the records are there
    assert again._cursor().execute("SELECT count(DISTINCT created_at) FROM tag_days").fetchone() == (3,)
    q = Query(parse_group_by("tag,label.team"), from_ms=T0, to_ms=T0 + 3 * DAY)
    assert comparable(Analytics(store).usage(q)) == comparable(
        Analytics(AnalyticsStore(engine, raw_only=True)).usage(q))
    again.close()
    engine.dispose()


def test_local_days_of_many_tags_are_answered_by_the_columnar_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(9)
    fill(engine, random_records(rng, 600), rng, feedback=10)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    for dims, source in [("tag_level.3,time.day", "columnar"), ("tag,time.month", "columnar"),
                         ("tag_level.1,time.day", "tags"), ("tag_level.2,time.hour", "tags")]:
        q = Query(parse_group_by(dims), from_ms=T0 + 7 * HOUR + 5, to_ms=T0 + 3 * DAY - 11, tz="America/New_York")
        got = Analytics(store).usage(q)
        assert got["plan"]["source"] == source, dims
        assert comparable(got) == comparable(raw.usage(q)), dims
    engine.dispose()


def test_whole_months_are_read_from_the_month_roll_up_and_answer_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(43)
    october = T0 - 31 * DAY  # records from 1 October (its first day too) to 3 November
    records = random_records(rng, 1200, start=october, span=34 * DAY)
    records[0] = msgspec.structs.replace(records[0], created_at=october + 5)
    fill(engine, records, rng, feedback=40)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    store = AnalyticsStore(engine, columnar=copy)
    store.sync()
    cur = copy._cursor()
    months = "SELECT month FROM rolled_months ORDER BY month"
    assert cur.execute(months).fetchall() == [(october,), (T0,)]  # November's days are past too
    assert cur.execute("SELECT created_at, sum(n), sum(cost_hi * 4294967296 + cost_lo) FROM tag_months GROUP BY 1 "
                       "ORDER BY 1").fetchall() == \
        cur.execute(f"SELECT CASE WHEN created_at < {T0} THEN {october} ELSE {T0} END, sum(n), "
                    "sum(cost_hi * 4294967296 + cost_lo) FROM tag_days GROUP BY 1 ORDER BY 1").fetchall()
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    columnar = Analytics(store)
    ranges = [(october, T0), (october - DAY, T0 + 2 * DAY + 7), (october + 3 * HOUR + 1, T0 + DAY), (None, None)]
    for dims, filters in QUESTIONS:
        for lo, hi in ranges:
            q = Query(parse_group_by(dims), from_ms=lo, to_ms=hi, **filters)  # type: ignore[arg-type]
            got = columnar.usage(q)
            assert got["plan"]["source"] == "columnar", (dims, filters)
            assert comparable(got) == comparable(raw.usage(q)), (dims, filters, lo, hi)
    assert spans.whole_months([(october - DAY, T0)], {october}, None, "UTC") == [(october, T0)]
    assert spans.whole_months([(october, T0)], {october}, "day", "UTC") == []  # days are finer than the month's rows
    for labels in ({}, {"team": "a"}):
        q = Query(labels=labels, from_ms=october, to_ms=T0 + DAY)
        assert _tree(columnar.tree(None, None, q)) == _tree(raw.tree(None, None, q)), labels

    # a late record in a rolled-up month takes the month (and its day) out until the next sync
    late = msgspec.structs.replace(random_records(random.Random(5), 1)[0], id="late-oct", tags=("US/CA", "prod"),
                                   created_at=october + 9 * DAY + 7)
    fill(engine, [late], rng, feedback=0)
    store.sync()
    assert cur.execute(months).fetchall() == [(october,), (T0,)]  # rolled up again
    q = Query(parse_group_by("tag,label.team"), from_ms=october, to_ms=T0)
    assert comparable(columnar.usage(q)) == comparable(raw.usage(q))
    copy.close()
    engine.dispose()


def test_the_trees_totals_are_all_records_less_the_untagged_rows_of_the_roll_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(47)
    fill(engine, random_records(rng, 900), rng, feedback=30)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    store = AnalyticsStore(engine, columnar=copy)
    store.sync()
    raw = AnalyticsStore(engine, raw_only=True)
    ranges = [(T0, T0 + 3 * DAY), (T0 + 5 * HOUR + 17, T0 + 2 * DAY + 7 * HOUR), (T0 - DAY, T0 + 4 * DAY)]

    def same() -> None:
        for dims, tz in (("", "UTC"), ("time.day", "UTC"), ("time.month", "America/New_York")):
            for labels in ({"team": "a"}, {"env": "prod"}):
                for lo, hi in ranges:
                    q = Query(parse_group_by(dims), labels=labels, from_ms=lo, to_ms=hi, tz=tz)
                    got = store.tagged_by_time(q, filtered=True)
                    want = raw.tagged_by_time(q, filtered=True)
                    assert {k: a.v for k, a in got.items()} == {k: a.v for k, a in want.items()}, (dims, labels, lo)

    question = ColumnarQuestion(Query(labels={"team": "a"}), T0, T0 + 3 * DAY, tagged=True)
    assert question.rollable()
    sql, _ = question.sql(feedback=True, rolled=[(T0, T0 + 3 * DAY)])
    assert "tg IS NULL" in sql and "len(tags) > 0" not in sql  # no tag list read on whole days
    # the records of whole days held by the hour roll-up: its rows, no record (`same` checks the sums)
    sql, _ = question.sql(feedback=True, rolled=[(T0, T0 + 3 * DAY)], rolled_usage=[(T0, T0 + 2 * DAY)])
    assert "FROM usage_hours" in sql and f"created_at >= {T0 + 2 * DAY}" in sql
    same()
    # an untagged and a tagged record replayed late into a rolled-up day
    late = [msgspec.structs.replace(r, id=f"late-t{i}", tags=tags, created_at=T0 + DAY + 3 * HOUR + i)
            for i, (r, tags) in enumerate(zip(random_records(random.Random(6), 2), [(), ("US/CA",)], strict=True))]
    fill(engine, late, rng, feedback=0)
    store.sync()
    same()
    copy.close()
    engine.dispose()


def test_a_local_month_is_its_utc_months_row_less_the_days_around_its_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(53)
    october = T0 - 31 * DAY
    records = random_records(rng, 1200, start=october - 2 * DAY, span=36 * DAY)
    fill(engine, records, rng, feedback=40)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    store = AnalyticsStore(engine, columnar=copy)
    store.sync()
    assert (october,) in copy._cursor().execute("SELECT month FROM rolled_months").fetchall()
    # Kathmandu's November starts at 18:15 UTC on 31 October: October's row less its 31st
    assert spans.split_months(october - DAY, T0 + DAY, {october}, "month", "Asia/Kathmandu") == [
        (october, T0, october, [(T0 - DAY, T0)])]
    # New York's November starts at 04:00 UTC on 1 November: its 1st is cut, the rest of it is one month
    assert spans.split_months(october, T0 + DAY, {october}, "month", "America/New_York") == [
        (october, T0, october + DAY, [(october, october + DAY)])]
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    questions = [("tag,time.month", {"tz": "Asia/Kathmandu"}),
                 ("tag_level.2,time.month,label.team", {"tz": "Asia/Kolkata"}),
                 ("tag_level.1,time.month", {"tz": "America/New_York", "provider": "p1"}),
                 ("model,time.month", {"tz": "Pacific/Chatham", "tag": "US"})]
    ranges = [(october - 2 * DAY, T0 + 2 * DAY + 7), (october, T0), (october + 5, T0 + 3 * HOUR)]

    def same() -> None:
        for dims, filters in questions:
            for lo, hi in ranges:
                q = Query(parse_group_by(dims), from_ms=lo, to_ms=hi, **filters)  # type: ignore[arg-type]
                got = Analytics(store).usage(q)
                assert got["plan"]["source"] == "columnar", (dims, filters)
                assert comparable(got) == comparable(raw.usage(q)), (dims, filters, lo, hi)
        q = Query(parse_group_by("time.month"), labels={"team": "a"}, from_ms=october - DAY, to_ms=T0 + DAY,
                  tz="Asia/Kathmandu")
        assert {k: a.v for k, a in store.tagged_by_time(q, filtered=True).items()} == {
            k: a.v for k, a in raw.store.tagged_by_time(q, filtered=True).items()}

    same()
    # late records into a cut day and into another day of the month
    late = [msgspec.structs.replace(r, id=f"late-m{i}", tags=tags, created_at=at)
            for i, (r, tags, at) in enumerate(zip(random_records(random.Random(8), 2), [("US/CA",), ()],
                                                  [T0 - DAY + 19 * HOUR, october + 9 * DAY + 7], strict=True))]
    fill(engine, late, rng, feedback=0)
    store.sync()
    same()
    copy.close()
    engine.dispose()


def test_the_records_of_an_error_filter_are_kept_for_the_sums_and_the_histograms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without hour roll-up rows the sums and the histograms both read `src`: with a filter on errors
    (few rows) it is kept once (MATERIALIZED), else read twice; the answers stay the raw ledger's."""
    def kept(**filters: object) -> bool:
        q = Query(parse_group_by("provider,tag_level.1,time.day"), **filters)  # type: ignore[arg-type]
        sql, _ = ColumnarQuestion(q, T0, T0 + 3 * DAY).sql(feedback=False, rolled=[(T0, T0 + 3 * DAY)])
        return "src AS MATERIALIZED" in sql
    assert kept(status=429) and kept(status=500) and kept(error_code="upstream_rate_limited")
    assert not kept() and not kept(status=200)

    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(12)
    fill(engine, random_records(rng, 800), rng, feedback=20)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    for status in (429, 500, 200):
        q = Query(parse_group_by("provider,tag_level.1,time.day"), status=status, from_ms=T0 - DAY, to_ms=T0 + 3 * DAY)
        got = Analytics(store).usage(q)
        assert got["plan"]["source"] == "columnar", got["plan"]
        assert comparable(got) == comparable(raw.usage(q)), status
    engine.dispose()
