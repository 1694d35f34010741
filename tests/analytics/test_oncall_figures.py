"""The on-call figures (`GET /v1/analytics/oncall`'s domain) against the raw ledger: per dimension
the groups of the last hours and those of the same hours on the previous days summed, exact to the
picodollar, read from the columnar copy in one scan per part (and the ledger for its last minutes),
and the minutes of every window, on a real SQLite ledger and DuckDB copy."""

from __future__ import annotations

import random
import time
from collections import Counter
from decimal import Decimal
from typing import Any

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.minutes import MinuteReader
from tallygate.analytics.oncall import OnCall
from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.db import migrate, open_engine
from tallygate.store.minutes import MinuteCounts
from tests.analytics.ledgers import fill, random_records

HOUR, DAY = 3_600_000, 86_400_000


def _figures(rows: list[dict[str, Any]], dim: str) -> dict[Any, tuple[int, int, Decimal]]:
    return {r["group"][dim]: (r["requests"], r["errors"], Decimal(r["cost"])) for r in rows}


def test_the_last_hours_and_the_previous_days_summed_are_the_raw_ledgers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/oncall.db")
    migrate(engine)
    rng = random.Random(25)
    now = int(time.time() * 1000)
    fill(engine, random_records(rng, 4000, start=now - 4 * DAY, span=4 * DAY), rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar(), sync_every_s=3600)
    store.sync()
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    to = now - now % 60_000 + 60_000
    dims = "tag_level.2,key,label.team,model"
    for hours, days in ((6, 3), (24, 1), (1, 2)):
        frm = to - hours * HOUR
        windows = [(frm - k * DAY, to - k * DAY) for k in range(days + 1)]
        assert (store.copied_until(windows[-1][0]) or 0) >= windows[1][1]  # the previous days: from the copy
        assert (store.copied_until(frm) or 0) < to  # the last minutes: from the ledger
        doc = OnCall(store, MinuteReader(store, MinuteCounts(engine))).compare(
            frm, to, days, parse_group_by(dims), "UTC", 1000, True)
        assert [(w["from"], w["to"]) for w in doc["windows"]] == windows
        for d in parse_group_by(dims):
            answers = [raw.usage(Query((d,), from_ms=a, to_ms=b), limit=1000)["data"] for a, b in windows]
            want_now = _figures(answers[0], d.name)
            summed: Counter[Any] = Counter()
            for rows in answers[1:]:
                for value, (n, e, c) in _figures(rows, d.name).items():
                    summed[(value, "n")] += n
                    summed[(value, "e")] += e
                    summed[(value, "c")] += c  # type: ignore[assignment]
            want_before = {v: (summed[(v, "n")], summed[(v, "e")], Decimal(summed[(v, "c")]))
                           for v in {v for v, _ in summed}}
            part = doc["groups"][d.name]
            assert _figures(part["now"]["data"], d.name) == want_now, (hours, days, d.name)
            assert _figures(part["before"]["data"], d.name) == want_before, (hours, days, d.name)
            assert part["now"]["row_count"] == len(want_now) and part["before"]["row_count"] == len(want_before)
            assert want_now and want_before
        for (a, b), got in zip(windows, doc["minutes"], strict=True):
            want = MinuteCounts(engine).between(a, b)
            assert [(m["minute"], m["requests"], m["errors"], Decimal(m["cost"])) for m in got] == [
                (m.start_ms, m.requests, m.errors, Decimal(m.cost_pico) / 10**12) for m in want]
    engine.dispose()
