"""The columnar copy's hour roll-ups: `tag_hours` (tags by local hours, days and months in zones
whose days are not UTC days) and `usage_hours` (everything but tags, any filter, any zone). Every
group read from them (sums and both histograms, bucket by bucket) is the direct computation's over
the raw records, also after a late record or a score changed a rolled-up day, and in a copy made
before the roll-ups existed."""

from __future__ import annotations

import random

import msgspec

from tallygate.analytics import columnar_spans as spans
from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.segment_reader import SegmentReader, TagMode
from tallygate.store.db import migrate, open_engine
from tallygate.store.feedback import FeedbackStore
from tests.analytics.ledgers import DAY, HOUR, T0, fill, random_question, random_records

DIMS = ["tag,time.day", "tag_level.1,time.day", "tag_level.2,time.hour", "tag_level.3,time.month", "time.day",
        "tag_level.2"]
ZONES = ["America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham", "UTC"]
TAG_FILTERS = [None, "US", "team/a"]


def _vectors(groups: dict) -> dict:  # type: ignore[type-arg]
    return {k: list(a.v) for k, a in groups.items()}


def _check(copy: DuckDBColumnar, raw: AnalyticsStore, rng: random.Random, asked: int = 60) -> int:
    """Random hourly questions answered by the copy as by the raw records; how many read `tag_hours`."""
    hourly = 0
    for _ in range(asked):
        dims, tz, tag = rng.choice(DIMS), rng.choice(ZONES), rng.choice(TAG_FILTERS)
        if tag == "team/a" and "tag_level.1" in dims:
            continue
        tag = tag if "tag" in dims else tag or "US"  # a tag filter alone: the rows of its prefix
        lo = T0 + rng.randrange(-HOUR, 2 * DAY)
        hi = lo + rng.randrange(HOUR, 3 * DAY)
        q = Query(parse_group_by(dims), tag=tag, from_ms=lo, to_ms=hi, tz=tz)
        question = ColumnarQuestion(q, lo, hi)
        assert question.hourly()
        cur = copy._cursor()
        rolled = spans.in_buckets(copy._rolled(cur, lo, hi), question.time_unit, tz) if question.rollable() else []
        hourly += bool(spans.hour_spans(lo, hi, copy._hourly(cur, lo, hi), rolled, question.time_unit, tz))
        assert _vectors(copy.answer(question)) == _vectors(raw.collect(q).groups), (dims, tz, tag, lo, hi)
    for root in (None, "US"):  # the tree (by prefix) reads it too
        q = Query(from_ms=T0 + 5 * HOUR + 7, to_ms=T0 + 2 * DAY + 3)
        question = ColumnarQuestion(q, q.from_ms, q.to_ms, tree=True, root=root, max_depth=8)
        assert question.hourly()
        assert _vectors(copy.answer(question)) == _vectors(raw.collect_tree(root, 8, q).groups), root
    return hourly + _check_usage(copy, raw, rng, asked)


def _check_usage(copy: DuckDBColumnar, raw: AnalyticsStore, rng: random.Random, asked: int) -> int:
    """Random questions without tags (any dimension, filter, range and zone) answered by the copy as by
    the raw records; how many read `usage_hours`."""
    hourly = done = 0
    while done < asked:
        q = random_question(rng)
        if q is None or q.tag is not None or q.tag_dim is not None:
            continue
        done += 1
        q = raw.bounded(q)
        with raw._engine.connect() as conn:
            ctx = SegmentReader(q, conn, raw._label_sets(conn), raw.current_labels(conn) if q.current_labels else {},
                                TagMode())
        question = ColumnarQuestion(q, q.from_ms, q.to_ms, ctx.key_ids, ctx.set_ids)
        assert question.usage_hourly()
        held = copy._hourly(copy._cursor(), q.from_ms, q.to_ms, "usage_days")
        hourly += bool(spans.hour_spans(q.from_ms, q.to_ms, held, [], question.time_unit, q.tz))
        assert _vectors(copy.answer(question)) == _vectors(raw.collect(q).groups), q
    return hourly


def test_tags_by_local_time_are_read_from_the_hour_roll_up_and_answer_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(17)
    fill(engine, random_records(rng, 1500), rng, feedback=60)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    store = AnalyticsStore(engine, columnar=copy)
    assert store.sync() == 1500
    cur = copy._cursor()
    assert cur.execute(f"SELECT count(*) FROM hourly_days WHERE day < {T0 + 3 * DAY}").fetchone() == (3,)
    # each record once per distinct tag prefix (or once, untagged), as in the day roll-up; both histograms whole
    assert cur.execute("SELECT sum(n) FROM tag_hours").fetchone() == cur.execute(
        "SELECT sum(n) FROM tag_days").fetchone()
    assert cur.execute("SELECT sum(list_sum(lat_ns)) = sum(n) FROM tag_hours").fetchone() == (True,)
    assert cur.execute("SELECT sum(n), sum(list_sum(lat_ns)) FROM usage_hours").fetchone() == (1500, 1500)
    raw = AnalyticsStore(engine, raw_only=True)
    assert _check(copy, raw, random.Random(3)) > 80

    # a record replayed late into a rolled-up hour, and a score on a record of another day
    late = msgspec.structs.replace(random_records(random.Random(4), 1)[0], id="late-1", tags=("US/CA/SF", "prod"),
                                   created_at=T0 + DAY + 5 * HOUR + 7)
    fill(engine, [late], rng, feedback=0)
    scored = next(iter(cur.execute(f"SELECT id FROM records WHERE created_at >= {T0 + 2 * DAY} LIMIT 1").fetchone()))
    FeedbackStore(engine).put(str(scored), 999, None)
    store.sync()
    assert _check(copy, raw, random.Random(5)) > 80


def test_a_copy_made_before_the_hour_roll_up_gets_it_on_its_next_sync(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(23)
    fill(engine, random_records(rng, 800), rng, feedback=20)
    path = tmp_path / "copy.duckdb"
    copy = DuckDBColumnar(path)
    assert AnalyticsStore(engine, columnar=copy).sync() == 800
    # the layout of a copy made by main
    for table in ("tag_hours", "hourly_days", "usage_hours", "usage_days"):
        copy._cursor().execute(f"DROP TABLE {table}")
    copy.close()
    copy = DuckDBColumnar(path)
    store = AnalyticsStore(engine, columnar=copy)
    store.sync()
    cur = copy._cursor()
    assert cur.execute(f"SELECT count(*) FROM hourly_days WHERE day < {T0 + 3 * DAY}").fetchone() == (3,)
    assert cur.execute(f"SELECT count(*) FROM usage_days WHERE day < {T0 + 3 * DAY}").fetchone() == (3,)
    assert _check(copy, AnalyticsStore(engine, raw_only=True), random.Random(7), asked=20) > 20
