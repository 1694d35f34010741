"""Roll-up hours grouped into local days by SQL (`analytics/sql.py` `local_bucket`): a whole-hour
zone's days are summed by the database, one row per local day, not one per UTC hour."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

from tallygate.analytics.plan import Segment
from tallygate.analytics.query import Dim
from tallygate.analytics.sql import local_bucket, summed_rows
from tallygate.core.metrics import REQUESTS, Agg
from tallygate.store.db import migrate, open_engine
from tallygate.store.schema import dim_rollups
from tests.analytics.ledgers import DAY, HOUR, T0, fill, random_records


def test_the_hours_of_new_york_days_are_summed_into_one_row_per_local_day(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(3)
    records = random_records(rng, 900)  # 1-3 November 2026: New York leaves DST on the 1st (a 25-hour day)
    fill(engine, records, rng, feedback=0)
    t, day = dim_rollups["hour"], Dim("time", "day")
    seg = Segment("hour", T0 + 4 * HOUR, T0 + 3 * DAY + 5 * HOUR)  # from NY midnight on the 1st to the 4th
    col = local_bucket(t, seg, day, "America/New_York")
    assert col is not t.c.bucket
    rows: list[tuple[int, ...]] = []
    out: dict[tuple[int, ...], Agg] = {}

    def key_of(row: tuple[int, ...]) -> tuple[int, ...]:
        rows.append(row)
        return row

    with engine.connect() as conn:
        summed_rows(conn, t, [col], [t.c.bucket >= seg.from_ms, t.c.bucket < seg.to_ms, t.c.dim == ""], out, key_of)
    ny = ZoneInfo("America/New_York")
    want: dict[int, int] = {}
    for r in records:
        if seg.from_ms is not None and seg.to_ms is not None and seg.from_ms <= r.created_at < seg.to_ms:
            local = dt.datetime.fromtimestamp(r.created_at / 1000, ny)
            start = int(dt.datetime(local.year, local.month, local.day, tzinfo=ny).timestamp() * 1000)
            want[start] = want.get(start, 0) + 1
    assert len(rows) == len(want) == 3  # one row per local day, whatever the hours
    assert {k[0]: agg.v[REQUESTS] for k, agg in out.items()} == want
    # rows as fine as the time unit keep their bucket
    assert local_bucket(t, seg, Dim("time", "hour"), "America/New_York") is t.c.bucket
    engine.dispose()


def test_local_buckets_with_a_rare_label_filter_are_read_from_the_columnar_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import msgspec

    from tallygate.analytics.columnar import DuckDBColumnar
    from tallygate.analytics.query import Query, parse_group_by
    from tallygate.analytics.reader import AnalyticsStore
    from tallygate.analytics.service import Analytics
    from tests.analytics.ledgers import comparable

    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(31)
    # forty customers' label sets beside the five of `LABELS`: one customer is a rare filter, a team is not
    records = [r if i % 2 else msgspec.structs.replace(r, labels={"customer": f"c{i % 40}", "team": "a"})
               for i, r in enumerate(random_records(rng, 1600))]
    fill(engine, records, rng, feedback=20)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar(tmp_path / "copy.duckdb"))
    store.sync()
    raw = Analytics(AnalyticsStore(engine, raw_only=True))

    def same() -> None:
        for dims, tz, labels, source in [("time.day", "Australia/Adelaide", {"customer": "c6"}, "columnar"),
                                         ("time.day,model", "America/New_York", {"customer": "c8"}, "columnar"),
                                         ("time.hour,label.team", "Europe/Berlin", {"customer": "c10"}, "columnar"),
                                         ("time.day", "America/New_York", {"team": "a"}, "dims")]:
            q = Query(parse_group_by(dims), labels=labels, from_ms=T0 + 3 * HOUR + 7, to_ms=T0 + 3 * DAY - 5, tz=tz)
            got = Analytics(store).usage(q)
            assert got["plan"]["source"] == source, (dims, labels, got["plan"])
            assert comparable(got) == comparable(raw.usage(q)), (dims, tz, labels)

    same()
    late = msgspec.structs.replace(random_records(random.Random(2), 1)[0], id="late-c6", created_at=T0 + DAY + 7,
                                   labels={"customer": "c6", "team": "a"})
    fill(engine, [late], rng, feedback=0)
    store.sync()
    same()
    engine.dispose()


def test_a_label_by_kolkata_day_seeks_the_label_rows_of_each_hour_and_skips_the_cut_hours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SQLite reads the roll-up hours by the key (bucket, dim, value), one seek per hour, not a range
    with a test per hole (the UTC hours cut by Kolkata's midnights, read raw) on every row; the label's
    rows and the '' rows (its requests without the label: every request less the label's) in one
    statement, one read of those hours; the answer stays the raw ledger's."""
    from sqlalchemy import event

    from tallygate.analytics.query import Query, parse_group_by
    from tallygate.analytics.reader import AnalyticsStore
    from tallygate.analytics.service import Analytics
    from tests.analytics.ledgers import comparable

    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(5)
    fill(engine, random_records(rng, 1200), rng, feedback=20)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    q = Query(parse_group_by("time.day,label.team"), from_ms=T0 - 5 * HOUR - 1_800_000,
              to_ms=T0 + 3 * DAY - 5 * HOUR - 1_800_000, tz="Asia/Kolkata")
    got = Analytics(AnalyticsStore(engine)).usage(q)
    hourly = [s for s in statements if "FROM dim_rollup_hour" in s]
    wheres = [s.split("WHERE")[1].split("GROUP BY")[0] for s in hourly]
    assert wheres and all("bucket IN (" in w and "bucket <" not in w for w in wheres), wheres
    assert len(hourly) == sum(s["level"] == "hour" for s in got["plan"]["segments"]), hourly  # one per segment
    assert any(row["group"]["label.team"] is None for row in got["data"])  # requests without the label
    assert comparable(got) == comparable(Analytics(AnalyticsStore(engine, raw_only=True)).usage(q))
    engine.dispose()


def test_the_hours_around_whole_days_are_seeked_not_read_as_a_range_with_a_hole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A ragged range's roll-up hours are two stretches around its whole days, one statement with the
    days as a hole: SQLite seeks those hours (tags, usage, one dimension), where the range read every
    row of the days between them too; answers stay the raw ledger's."""
    from sqlalchemy import event

    from tallygate.analytics.query import Query, parse_group_by
    from tallygate.analytics.reader import AnalyticsStore
    from tallygate.analytics.service import Analytics
    from tests.analytics.ledgers import comparable

    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(8)
    fill(engine, random_records(rng, 1500), rng, feedback=20)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    store, raw = Analytics(AnalyticsStore(engine)), Analytics(AnalyticsStore(engine, raw_only=True))
    for dims, table in (("tag_level.2", "tag_rollup_hour"), ("label.team,model", "usage_rollup_hour"),
                        ("key", "dim_rollup_hour")):
        statements.clear()
        q = Query(parse_group_by(dims), from_ms=T0 + 5 * HOUR + 17 * 60_000, to_ms=T0 + 3 * DAY + 11 * HOUR + 42)
        got = store.usage(q)
        wheres = [s.split("WHERE")[1] for s in statements if f"FROM {table}" in s]
        assert wheres and all(f"{table}.bucket IN (" in w and f"{table}.bucket <" not in w for w in wheres), wheres
        # and by the key: `dim = ?` alone would take the (dim, value, bucket) index, every hour's `key` rows
        assert table != "dim_rollup_hour" or all("dim_rollup_hour.dim || " in w for w in wheres), wheres
        assert comparable(got) == comparable(raw.usage(q)), dims
    engine.dispose()
