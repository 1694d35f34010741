"""The on-call chart's minutes are read from the columnar copy up to where it holds every record
and from the ledger after it (records past its watermark, a late record in a copied hour), and
equal the ledger's own minute counts exactly, on both columnar engines."""

from __future__ import annotations

import random
import time

from tallygate.analytics.clickhouse import ChdbClient, ClickHouseColumnar
from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.minutes import MinuteReader
from tallygate.analytics.mirror import ColumnarEngine
from tallygate.analytics.reader import AnalyticsStore
from tallygate.core.record import replace
from tallygate.store.db import migrate, open_engine
from tallygate.store.minutes import MinuteCounts
from tests.analytics.ledgers import HOUR, T0, fill, random_records


def _check(tmp_path, columnar: ColumnarEngine) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(29)
    fill(engine, random_records(rng, 1500, span=6 * HOUR), rng, feedback=0)  # about 4 a minute
    # and one every 20 ms around where the sync's watermark will fall (10 minutes before it): the
    # minute it falls in is part copy, part ledger
    now = int(time.time() * 1000)
    around = random_records(rng, 8000, start=now - 700_000, span=160_000)
    fill(engine, [replace(r, id=f"near{i:05d}", created_at=now - 700_000 + 20 * i) for i, r in enumerate(around)],
         rng, feedback=0)
    store = AnalyticsStore(engine, columnar=columnar, sync_every_s=3600)  # no sync while the test asks
    assert 1500 < store.sync() < 9500
    raw, minutes = MinuteCounts(engine), MinuteReader(store, MinuteCounts(engine))
    lo, hi = T0 + 17_017, T0 + 5 * HOUR + 3  # ragged to the millisecond
    assert store.copied_until(lo) == store.mirror.watermark > hi  # type: ignore[union-attr]
    assert [(m.start_ms, m.requests, m.errors, m.cost_pico) for m in raw.between(lo, hi)] == columnar.minutes(lo, hi)
    expected = raw.between(lo, hi)
    assert len(expected) > 250 and max(m.requests for m in expected) > 3
    assert minutes.between(lo, hi) == expected

    # records the copy does not hold: the last minutes (past its watermark, which is 10 minutes before
    # the sync: in the minute it falls in and after) and one that arrived late, in an hour the copy holds
    now = int(time.time() * 1000)
    late = [replace(r, id=f"late{i:04d}") for i, r in enumerate(random_records(rng, 200, start=now - 590_000,
                                                                                span=580_000))]
    late.append(replace(random_records(rng, 1)[0], id="late-hour", created_at=T0 + 3 * HOUR + 5))
    fill(engine, late, rng, feedback=0)
    assert store.copied_until(lo) == T0 + 3 * HOUR  # the late record's hour: from the ledger on
    assert minutes.between(lo, hi) == raw.between(lo, hi)
    mark = store.mirror.watermark  # type: ignore[union-attr]
    assert T0 + 3 * HOUR < mark < now
    assert minutes.between(now - 25 * HOUR, now + 60_000) == raw.between(now - 25 * HOUR, now + 60_000)
    engine.dispose()


def test_minutes_from_the_duckdb_copy_and_the_ledger_are_the_ledgers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _check(tmp_path, DuckDBColumnar())


def test_minutes_from_the_clickhouse_copy_and_the_ledger_are_the_ledgers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = ChdbClient(str(tmp_path / "ch"))
    _check(tmp_path, ClickHouseColumnar(client))
    client.close()
