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
