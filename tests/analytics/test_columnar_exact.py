"""Every question the grammar allows is answered, and answered exactly: random dimensions, filters,
millisecond ranges and zones (UTC, whole-, half- and quarter-hour offsets, a 30-minute DST shift),
by the roll-ups, the columnar engine and a direct computation over the raw records alike."""

from __future__ import annotations

import random

import msgspec
import pytest

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.query import Query, parse_group_by
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.core.histogram import MAX_RELATIVE_ERROR
from tallygate.store.db import migrate, open_engine
from tests.analytics.ledgers import T0, comparable, fill, random_question, random_records


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("columnar")
    engine = open_engine(f"sqlite:///{path}/l.db")
    migrate(engine)
    rng = random.Random(11)
    fill(engine, random_records(rng, 2500), rng)
    columnar = AnalyticsStore(engine, columnar=DuckDBColumnar(path / "copy.duckdb"))
    assert columnar.sync() == 2500
    yield engine, columnar
    engine.dispose()


def _tree(nodes: list[dict]) -> list[tuple]:
    return [(n["tag"], n["requests"], n["errors"], n["cost"], n["input_tokens"], _tree(n["children"])) for n in nodes]


def test_random_questions_match_a_direct_computation_over_the_raw_records(ledger) -> None:  # type: ignore[no-untyped-def]
    engine, columnar = ledger
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    engines = {"columnar": Analytics(columnar), "roll-ups": Analytics(AnalyticsStore(engine))}
    rng = random.Random(5)
    asked = 0
    while asked < 120:
        q = random_question(rng)
        if q is None:
            continue
        asked += 1
        expected = raw.usage(q)
        assert expected["plan"]["percentiles"] == "exact"
        for name, analytics in engines.items():
            got = analytics.usage(q)
            assert comparable(got) == comparable(expected), (name, q)
            if got["plan"]["percentiles"] == "histogram" and expected["totals"]["requests"]:
                for p in ("p50", "p95", "p99"):
                    exact, approx = expected["totals"]["latency_ms"][p], got["totals"]["latency_ms"][p]
                    assert abs(approx - exact) <= exact * MAX_RELATIVE_ERROR + 0.5, (name, p, q)
        tree_q = Query(labels=q.labels, from_ms=q.from_ms, to_ms=q.to_ms, tz=q.tz)
        root = rng.choice([None, "US", "team/a"])
        depth = rng.choice([None, None, 0, 1, 2])  # depth=0 without a root: no level at all
        want = raw.tree(root, depth, tree_q)
        for name, analytics in engines.items():
            got = analytics.tree(root, depth, tree_q)
            assert (_tree(got["data"]), got["totals"]["cost"]) == (_tree(want["data"]), want["totals"]["cost"]), \
                (name, root, depth, q)


def test_questions_the_rollups_do_not_hold_are_answered_by_the_columnar_engine(ledger) -> None:  # type: ignore[no-untyped-def]
    engine, columnar = ledger
    analytics = Analytics(columnar)
    for dims, filters in [("tag_level.2,label.team", {}), ("model", {"tag": "US", "status": 500}),
                          ("time.hour", {"tz": "Asia/Kolkata"}), ("status", {"error_code": "internal_error"}),
                          ("provider,served_model", {"labels": {"team": "a"}, "tag": "US/CA"})]:
        doc = analytics.usage(Query(parse_group_by(dims), from_ms=T0, to_ms=T0 + 86_400_000, **filters))
        assert doc["plan"]["source"] == "columnar", dims
        assert doc["totals"]["requests"] > 0


def test_columnar_copy_repairs_an_hour_that_received_a_late_record(ledger, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/late.db")
    migrate(engine)
    rng = random.Random(3)
    fill(engine, random_records(rng, 300), rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    late = msgspec.structs.replace(random_records(random.Random(4), 1)[0], id="late-1",
                                   created_at=T0 + 5 * 3_600_000 + 7)
    fill(engine, [late], rng, feedback=0)  # a record replayed from the journal, long after its hour
    store.sync()
    q = Query(parse_group_by("tag_level.1,status"), from_ms=T0, to_ms=T0 + 86_400_000)
    got = Analytics(store).usage(q)
    assert got["plan"]["source"] == "columnar"
    assert comparable(got) == comparable(Analytics(AnalyticsStore(engine, raw_only=True)).usage(q))
    engine.dispose()


def test_the_same_records_give_identical_answers_on_sqlite_postgresql_and_the_columnar_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.postgres import postgres_server

    records = random_records(random.Random(31), 800)
    with postgres_server() as url:
        engines = {"sqlite": open_engine(f"sqlite:///{tmp_path}/l.db"), "postgresql": open_engine(url)}
        answers = {}
        for name, engine in engines.items():
            migrate(engine)
            fill(engine, records, random.Random(32), feedback=30)
            columnar = AnalyticsStore(engine, columnar=DuckDBColumnar())
            assert columnar.sync() == 800
            answers[f"{name} roll-ups"] = Analytics(AnalyticsStore(engine))
            answers[f"{name} columnar"] = Analytics(columnar)
        answers["postgresql raw"] = Analytics(AnalyticsStore(engines["postgresql"], raw_only=True))
        questions = random.Random(17)
        asked = 0
        while asked < 25:
            q = random_question(questions)
            if q is None:
                continue
            asked += 1
            docs = {name: comparable(a.usage(q)) for name, a in answers.items()}
            assert len(set(map(repr, docs.values()))) == 1, q
        for engine in engines.values():
            engine.dispose()


def test_a_page_of_columnar_rows_is_the_head_of_the_whole_answer(ledger) -> None:  # type: ignore[no-untyped-def]
    """With `limit`, the columnar engine returns only the first rows (in the API's order) and the
    count of all of them: the page, the row count and the totals are those of the whole answer."""
    engine, columnar = ledger
    analytics = Analytics(columnar)
    raw = Analytics(AnalyticsStore(engine, raw_only=True))
    rng = random.Random(8)
    cut = 0
    for dims in ["key,tag,status", "tag,label.team", "tag_level.3,model,time.hour", "time.day,tag,provider",
                 "status,label.env,tag_level.2", "tag,key,model"]:
        for tz in ("UTC", "Asia/Kolkata"):
            lo = T0 + rng.randrange(86_400_000)
            q = Query(parse_group_by(dims), from_ms=lo, to_ms=lo + rng.randrange(86_400_000, 2 * 86_400_000),
                      tz=tz, status=rng.choice([None, 200]))
            whole = raw.usage(q, limit=10_000)
            assert not whole["truncated"]
            for limit in (1, 7, 40):
                page = analytics.usage(q, limit=limit)
                assert page["plan"]["source"] == "columnar"
                assert page["row_count"] == whole["row_count"]
                assert page["truncated"] == (whole["row_count"] > limit)
                assert comparable(page) == comparable(
                    {**whole, "data": whole["data"][:limit], "truncated": page["truncated"]}), (q, limit)
                assert [r["group"] for r in page["data"]] == [r["group"] for r in whole["data"][:limit]]
                cut += page["truncated"]
    assert cut >= 20  # most pages were cut in SQL, not only short answers


def test_local_hours_across_30_and_60_minute_changes_at_quarter_hours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Lord Howe moves its clocks by 30 minutes, Chatham by an hour at :45. Every local hour ends after
    it starts (the hour after Lord Howe's spring change was found to start inside the hour before it,
    and a question over the change looped forever cutting the range); the hours every engine answers
    are the records' own wall-clock hours, counted here with `zoneinfo`."""
    from collections import Counter

    from tallygate.core import zones
    from tests.analytics.oracle import time_label
    from tests.records import make_record

    changes = {"Australia/Lord_Howe": [1775314800000, 1791041400000],  # 2026-04-04T15:00Z, 2026-10-03T15:30Z
               "Pacific/Chatham": [1775311200000, 1790431200000]}  # 2026-04-04T14:00Z, 2026-09-26T14:00Z
    for tz, when in changes.items():
        for change in when:
            for q in range(change - 3 * 3_600_000, change + 3 * 3_600_000, zones.QUARTER_MS):
                start = zones.floor(q, "hour", tz)
                assert start <= q < zones.after(q, "hour", tz) and zones.after(start, "hour", tz) > q, (tz, q)
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(21)
    records = [make_record(id=f"c{i:05d}", created_at=t + rng.randrange(-299_999, 300_000), tags=["US/CA"],
                           cost_pico=rng.randrange(10**9), latency_us=rng.randrange(10**6))
               for i, t in enumerate(t for when in changes.values() for change in when
                                     for t in range(change - 4 * 3_600_000, change + 4 * 3_600_000, 300_000))]
    fill(engine, records, rng, feedback=0)
    columnar = AnalyticsStore(engine, columnar=DuckDBColumnar())
    columnar.sync()
    engines = {"columnar": Analytics(columnar), "roll-ups": Analytics(AnalyticsStore(engine)),
               "raw": Analytics(AnalyticsStore(engine, raw_only=True))}
    for tz, when in changes.items():
        for change in when:
            lo = change - 3 * 3_600_000 + rng.randrange(3_600_000)
            hi = change + 3 * 3_600_000 - rng.randrange(3_600_000)
            want = Counter(time_label(r.created_at, "hour", tz)[1] for r in records if lo <= r.created_at < hi)
            for dims in ("time.hour", "time.hour,tag"):
                q = Query(parse_group_by(dims), from_ms=lo, to_ms=hi, tz=tz)
                for name, analytics in engines.items():
                    doc = analytics.usage(q)
                    got = Counter({r["group"]["time.hour"]: r["requests"] for r in doc["data"]})
                    assert got == want, (name, tz, dims, change)
    engine.dispose()


def test_a_late_record_in_the_hour_of_the_watermark_is_in_the_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The copy holds the watermark's own hour only up to the watermark: a record of that part that
    arrives after it was copied (a request longer than the settling time) is read from the ledger
    until the copy holds it too, never left out."""
    import time

    engine = open_engine(f"sqlite:///{tmp_path}/late.db")
    migrate(engine)
    rng = random.Random(5)
    now = int(time.time() * 1000)
    fill(engine, random_records(rng, 300, start=now - 3 * 3_600_000, span=3 * 3_600_000 - 700_000), rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    assert store.mirror is not None
    mark = store.mirror.watermark
    late = msgspec.structs.replace(random_records(random.Random(6), 1)[0], id="late-in-the-open-hour",
                                   created_at=mark - 1)
    fill(engine, [late], rng, feedback=0)  # recorded after its part of the hour was copied
    q = Query(parse_group_by("tag_level.1,status"), from_ms=now - 4 * 3_600_000, to_ms=now)
    raw = comparable(Analytics(AnalyticsStore(engine, raw_only=True)).usage(q))
    assert comparable(Analytics(store).usage(q)) == raw  # before the next sync
    store.sync()
    got = Analytics(store).usage(q)
    assert got["plan"]["source"] == "columnar"
    assert comparable(got) == raw  # and after it
    engine.dispose()


def test_a_sync_copying_the_next_chunk_leaves_the_watermarks_hour_to_the_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """While a sync copies, the copy's count of the watermark's hour runs ahead of the watermark (a
    chunk's records are counted before the watermark moves past them): that is not a late record,
    and the copy still answers up to the watermark."""
    import time

    engine = open_engine(f"sqlite:///{tmp_path}/ahead.db")
    migrate(engine)
    rng = random.Random(7)
    now = int(time.time() * 1000)
    fill(engine, random_records(rng, 200, start=now - 2 * 3_600_000, span=2 * 3_600_000 - 700_000), rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar())
    store.sync()
    mirror = store.mirror
    assert mirror is not None
    mark = mirror.watermark
    assert store.copied_until(now - 2 * 3_600_000) == mark
    nxt = msgspec.structs.replace(random_records(random.Random(8), 1)[0], id="next-chunk", created_at=mark)
    fill(engine, [nxt], rng, feedback=0)
    with engine.connect() as conn:
        assert mirror._copy(conn, mark, mark + 60_000) == 1  # the next chunk, the watermark not moved yet
    assert store.copied_until(now - 2 * 3_600_000) == mark  # not the top of its hour: nothing is late
    assert mirror.counts[mark - mark % 3_600_000] == mirror.open_hour[1] + 1
    engine.dispose()


def test_on_postgresql_the_copy_sums_the_usage_hours_of_a_ragged_range(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL sums the usage roll-up hours' 134 columns slowly: the copy answers label x model over
    ragged ends (and hours by label) when no key or model filter narrows the rows; SQLite keeps its
    roll-ups. Every answer is the raw ledger's."""
    from tests.postgres import postgres_server

    records = random_records(random.Random(41), 600)
    ragged = {"from_ms": T0 + 5 * 3_600_000 + 17 * 60_000, "to_ms": T0 + 2 * 86_400_000 + 11 * 3_600_000 + 42 * 60_000}
    asked = [(Query(parse_group_by("label.team,model"), **ragged), "columnar"),
             (Query(parse_group_by("label.env,provider,time.hour"), **ragged), "columnar"),
             (Query(parse_group_by("provider"), labels={"team": "a"}, **ragged), "columnar"),
             (Query(parse_group_by("label.team"), model="m1", **ragged), "usage"),
             (Query(parse_group_by("label.team,model"), from_ms=T0, to_ms=T0 + 2 * 86_400_000), "usage")]
    with postgres_server() as url:
        for name, url_ in (("postgresql", url), ("sqlite", f"sqlite:///{tmp_path}/l.db")):
            engine = open_engine(url_)
            migrate(engine)
            fill(engine, records, random.Random(42), feedback=20)
            store = AnalyticsStore(engine, columnar=DuckDBColumnar())
            assert store.sync() == 600
            raw = Analytics(AnalyticsStore(engine, raw_only=True))
            for q, source in asked:
                got = Analytics(store).usage(q)
                assert got["plan"]["source"] == (source if name == "postgresql" else "usage"), (name, q)
                assert got["totals"]["requests"] > 0
                assert comparable(got) == comparable(raw.usage(q)), (name, q)
            engine.dispose()
