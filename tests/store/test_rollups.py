"""Roll-ups kept by the ledger writer agree with the raw ledger, whatever the batches look like."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from sqlalchemy import text

from tallygate.core.histogram import (
    BUCKETS,
    MAX_RELATIVE_ERROR,
    bucket,
    exact_percentile_ms,
    percentiles_ms,
)
from tallygate.core.record import LedgerRecord
from tallygate.core.tagpath import prefixes
from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tallygate.store.ledger import LedgerWriter
from tests.records import make_record

DAY = 86_400_000
T0 = 1_793_491_200_000  # 2026-11-01T00:00Z


def record(rid: str, created_at: int, tags: list[str], *, key: str | None = "k1", labels: dict | None = None,
           status: int = 200, cost: int = 5, latency_us: int = 120_000, ttft_us: int | None = None,
           model: str = "m") -> LedgerRecord:
    return make_record(id=rid, created_at=created_at, key_id=key, labels=labels or {"team": "a"}, tags=tags,
                       requested_model=model, served_model=model, status=status, stream=ttft_us is not None,
                       input_tokens=3, output_tokens=2, cached_tokens=1, cost_pico=cost, latency_us=latency_us,
                       ttft_us=ttft_us)


@pytest.fixture()
def engine(tmp_path):  # type: ignore[no-untyped-def]
    eng = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(eng)
    yield eng
    eng.dispose()


def sums(engine, sql: str) -> dict:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {tuple(r[:-2]): (r[-2], r[-1]) for r in conn.execute(text(sql))}


def test_replayed_and_partly_replayed_batches_do_not_double_count_rollups(engine) -> None:  # type: ignore[no-untyped-def]
    ingest = BatchIngest(engine)
    a = record("req_a", T0 + 1, ["US/CA/SF", "US/NYC"], cost=7)
    b = record("req_b", T0 + 2, ["US"], cost=11)
    c = record("req_c", T0 + 3, [], cost=13)
    assert ingest.write([a, b]) == 2
    assert ingest.write([a, b]) == 0  # the whole batch again
    assert ingest.write([b, c, c, a]) == 1  # old, new (twice), old
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), sum(cost_pico) FROM requests")).one() == (3, 31)
        for level in ("hour", "day", "month"):
            assert conn.execute(text(f"SELECT sum(requests), sum(cost_pico) FROM usage_rollup_{level}")).one() \
                == (3, 31)
        for level in ("day", "month"):
            under = dict(conn.execute(text(
                f"SELECT prefix, sum(requests) FROM tag_rollup_{level} GROUP BY prefix")).all())
            # req_a once under US although two of its tags are there; c has no tag
            assert under == {"": 2, "US": 2, "US/CA": 1, "US/CA/SF": 1, "US/NYC": 1}
            exact = dict(conn.execute(text(
                f"SELECT prefix, sum(requests) FROM tag_rollup_{level} WHERE is_tag GROUP BY prefix")).all())
            assert exact == {"US": 1, "US/CA/SF": 1, "US/NYC": 1}


def test_writer_replaying_a_batch_through_flush_keeps_rollups_exact(engine) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        writer = LedgerWriter(engine, flush_ms=10)
        await writer.start()
        for _ in range(3):
            writer.record(record("req_x", T0, ["team/a"], cost=3))
            await writer.flush()
        await writer.stop()

    asyncio.run(run())
    assert sums(engine, "SELECT 1, sum(requests), sum(cost_pico) FROM usage_rollup_day") == {(1,): (1, 3)}


def expected_from_raw(records: list[dict]) -> tuple[Counter, Counter, Counter]:
    """What the roll-ups must hold, computed the slow way: by key and model, by prefix, by exact tag."""
    usage, prefix, exact = Counter(), Counter(), Counter()
    for r in records:
        day = r.created_at - r.created_at % DAY
        usage[(day, r.key_id or "", r.requested_model, r.status)] += r.cost_pico
        if r.tags:
            prefix[(day, "")] += r.cost_pico
        for p in prefixes(tuple(r.tags)):
            prefix[(day, p)] += r.cost_pico
        for t in set(r.tags):
            exact[(day, t)] += r.cost_pico
    return usage, prefix, exact


def test_rollups_equal_the_raw_ledger_for_random_batches_and_overlapping_tags(engine) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    pool = ["US", "US/CA", "US/CA/SF", "US/NYC", "EU/FR/Paris", "team/x/y/z", "team/x", "prod", "a/b/c/d/e"]
    records = []
    for i in range(3000):
        tags = rng.sample(pool, rng.choice([0, 1, 1, 2, 3]))
        records.append(record(f"req_{i:06d}", T0 + rng.randrange(3 * DAY), tags, key=rng.choice(["k1", "k2", None]),
                              status=rng.choice([200, 200, 429, 502]), cost=rng.randrange(1, 10**9),
                              latency_us=rng.randrange(1, 10**8), model=rng.choice(["m1", "m2"]),
                              ttft_us=rng.choice([None, rng.randrange(1, 10**7)])))
    ingest = BatchIngest(engine)
    i = 0
    while i < len(records):
        n = rng.randrange(1, 700)
        ingest.write(records[i:i + n] + rng.sample(records[:i + n], min(5, i + n)))  # with some replays
        i += n
    usage, prefix, exact = expected_from_raw(records)
    assert sums(engine, "SELECT bucket, key_id, requested_model, status, 0, sum(cost_pico) "
                        "FROM usage_rollup_day GROUP BY 1, 2, 3, 4") == {k: (0, v) for k, v in usage.items()}
    assert sums(engine, "SELECT bucket, prefix, 0, sum(cost_pico) FROM tag_rollup_day GROUP BY 1, 2") \
        == {k: (0, v) for k, v in prefix.items()}
    assert sums(engine, "SELECT bucket, prefix, 0, sum(cost_pico) FROM tag_rollup_day WHERE is_tag GROUP BY 1, 2") \
        == {k: (0, v) for k, v in exact.items()}
    with engine.connect() as conn:
        for table in ("usage_rollup_hour", "usage_rollup_month", "tag_rollup_month"):
            where = " WHERE prefix = ''" if table.startswith("tag") else ""
            requests, hist, ttft = conn.execute(text(
                f"SELECT sum(requests), {' + '.join(f'sum(lat_{b:02d})' for b in range(BUCKETS))}, "
                f"{' + '.join(f'sum(ttft_{b:02d})' for b in range(BUCKETS))} FROM {table}{where}")).one()
            tagged = [r for r in records if r.tags] if where else records
            assert requests == hist == len(tagged)
            assert ttft == sum(r.ttft_us is not None for r in tagged)
        by_bucket = Counter(bucket(r.latency_us) for r in records)
        row = conn.execute(text(f"SELECT {', '.join(f'sum(lat_{b:02d})' for b in range(BUCKETS))} "
                                "FROM usage_rollup_month")).one()
        assert list(row) == [by_bucket[b] for b in range(BUCKETS)]


def test_label_sets_are_stored_once_and_keyed_by_content(engine) -> None:  # type: ignore[no-untyped-def]
    ingest = BatchIngest(engine)
    ingest.write([record("r1", T0, [], labels={"team": "a", "env": "prod"})])
    ingest.write([record("r2", T0, [], labels={"env": "prod", "team": "a"}),  # same set, other order
                  record("r3", T0, [], labels={"team": "b"})])
    fresh = BatchIngest(engine)  # a new process knows nothing yet
    fresh.write([record("r4", T0, [], labels={"team": "b"})])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM label_sets")).scalar_one() == 2
        per_set = dict(conn.execute(text("SELECT label_set, sum(requests) FROM usage_rollup_month "
                                         "GROUP BY label_set")).all())
    assert sorted(per_set.values()) == [2, 2]


def test_histogram_percentiles_stay_within_the_documented_error() -> None:
    rng = random.Random(11)
    for _ in range(50):
        values = sorted(int(rng.lognormvariate(rng.uniform(7, 15), rng.uniform(0.2, 2))) + 1000
                        for _ in range(rng.randrange(1, 3000)))
        counts = [0] * BUCKETS
        for v in values:
            counts[bucket(v)] += 1
        approx = percentiles_ms(counts, (0.5, 0.95, 0.99))
        for q, got in zip((0.5, 0.95, 0.99), approx, strict=True):
            exact = exact_percentile_ms(values, q)
            assert exact is not None and got is not None
            if exact < 1_048_576:  # below the open-ended last bucket
                assert abs(got - exact) / exact <= MAX_RELATIVE_ERROR + 1e-9, (q, got, exact)
    assert percentiles_ms([0] * BUCKETS, (0.5,)) == [None]


def test_backfill_rolls_up_records_written_before_the_rollups_existed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alembic import command
    from alembic.config import Config

    from tallygate.store import db

    eng = open_engine(f"sqlite:///{tmp_path}/old.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(db._MIGRATIONS))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        for rid, tags in (("r1", ["US/CA", "US/NY"]), ("r2", ["prod"])):
            conn.execute(text("INSERT INTO requests (id, created_at, key_id, key_name, labels, tags, endpoint, "
                              "requested_model, served_model, provider, status, stream, partial, input_tokens, "
                              "output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_pico, "
                              "latency_us, attempts) VALUES (:id, :ts, 'k', 'k', '{\"team\": \"a\"}', :tags, "
                              "'chat', 'm', 'm', 'p', 200, 0, 0, 1, 1, 0, 0, 0, 10, 1000, '[]')"),
                         {"id": rid, "ts": T0, "tags": str(tags).replace("'", '"')})
            given = set(tags)
            for p in prefixes(tuple(tags)):
                conn.execute(text("INSERT INTO request_tags VALUES (:r, :p, :d, :t, :ts)"),
                             {"r": rid, "p": p, "d": p.count("/") + 1, "t": p in given, "ts": T0})
    migrate(eng)
    with eng.connect() as conn:
        assert sorted(conn.execute(text("SELECT request_id, tag FROM request_tags")).all()) == [
            ("r1", "US/CA"), ("r1", "US/NY"), ("r2", "prod")]
        assert conn.execute(text("SELECT sum(requests), sum(cost_pico) FROM usage_rollup_day")).one() == (2, 20)
        assert dict(conn.execute(text("SELECT prefix, requests FROM tag_rollup_month")).all()) == {
            "": 2, "US": 1, "US/CA": 1, "US/NY": 1, "prod": 1}
    eng.dispose()


QUESTIONS = ["", "label.team", "label.env", "model,status", "key", "status", "served_model", "tag", "tag_level.1",
             "tag_level.2", "time.hour,label.team", "time.day,label.env", "time.hour,tag", "time.day,tag_level.2",
             "time.month,provider", "time.hour", "label.team,tag_level.1", "model,tag"]
RAGGED = {"from_ms": T0 + 3_600_000 + 1, "to_ms": T0 + 2 * DAY + 7_200_000 + 17}
# most of each end's day and hour: read as whole days and hours less the rest (`analytics/cover.py`)
MOSTLY = {"from_ms": T0 + 3_600_000 + 17, "to_ms": T0 + 2 * DAY + 20 * 3_600_000 + 2_700_000}
IN_ONE_DAY = {"from_ms": T0 + DAY + 3_600_000 + 1, "to_ms": T0 + DAY + 23 * 3_600_000 - 60_000}


@pytest.mark.parametrize("filters", [{}, {"tag": "US"}, {"labels": {"team": "b"}}, {"model": "m1"}, {"key_id": "k2"},
                                     {"labels": {"team": "a", "env": "prod"}}, RAGGED, {**RAGGED, "tag": "US/CA"},
                                     {**RAGGED, "labels": {"env": "dev"}}, {"tz": "Europe/Berlin"},
                                     {**RAGGED, "tz": "Asia/Kolkata"}, {**RAGGED, "tz": "Asia/Kathmandu", "tag": "US"},
                                     MOSTLY, {**MOSTLY, "tag": "US"}, {**MOSTLY, "tz": "Europe/Berlin"},
                                     {**MOSTLY, "labels": {"team": "a"}}, IN_ONE_DAY, {**IN_ONE_DAY, "model": "m2"},
                                     {"from_ms": T0, "to_ms": T0 + 2 * DAY}, {"tag": "US", "to_ms": T0 + DAY}])
def test_rollup_answers_equal_raw_ledger_answers(engine, filters: dict) -> None:  # type: ignore[no-untyped-def]
    from tallygate.analytics.query import Query, parse_group_by
    from tallygate.analytics.reader import AnalyticsStore
    from tallygate.analytics.service import Analytics
    from tallygate.errors import InvalidRequest

    rng = random.Random(8)
    pool = ["US", "US/CA", "US/CA/SF", "US/NYC", "EU/FR", "prod"]
    ingest = BatchIngest(engine)
    recs = [record(f"r{i:05d}", T0 + rng.randrange(3 * DAY), rng.sample(pool, rng.randrange(0, 3)),
                   key=rng.choice(["k1", "k2", None]),
                   labels=rng.choice([{"team": "a"}, {"team": "b"}, {"team": "a", "env": "prod"}, {"env": "dev"}, {}]),
                   status=rng.choice([200, 200, 500]), cost=rng.randrange(1, 10**9), model=rng.choice(["m1", "m2"]),
                   latency_us=rng.randrange(10**3, 10**7)) for i in range(1500)]
    for i in range(0, len(recs), 300):
        ingest.write(recs[i:i + 300])
    rolled, raw = Analytics(AnalyticsStore(engine)), Analytics(AnalyticsStore(engine, raw_only=True))

    def sums(doc: dict) -> tuple:
        return ({tuple(r["group"].items()): (r["requests"], r["errors"], r["cost"], r["output_tokens"])
                 for r in doc["data"]}, doc["totals"]["requests"], doc["totals"]["cost"])

    for dims in QUESTIONS:
        try:
            q = Query(parse_group_by(dims), **filters)
        except InvalidRequest:
            continue
        a, b = rolled.usage(q), raw.usage(q)
        assert b["plan"]["percentiles"] == "exact"
        assert sums(a) == sums(b), dims
        # a page of many groups by time reads the metrics of its buckets only (`Analytics._page`)
        a, b = rolled.usage(q, limit=7), raw.usage(q, limit=7)
        assert [(r["group"], r["requests"], r["cost"]) for r in a["data"]] == \
            [(r["group"], r["requests"], r["cost"]) for r in b["data"]], dims
        assert (a["row_count"], a["truncated"]) == (b["row_count"], b["truncated"]), dims
        if dims == "time.hour,tag" and filters.get("from_ms") == T0:
            assert a["plan"]["page"]["later_rows_counted"] > 0
        if q.tag is None and q.tag_dim is None and not q.labels and q.model is None and q.key_id is None \
                and sum(d.kind != "time" for d in q.dims) <= 1:
            assert a["plan"]["source"] == "dims", dims
    span = {k: v for k, v in filters.items() if k.endswith("_ms") or k == "tz"}
    tree_a, tree_b = rolled.tree(None, None, Query(**span)), raw.tree(None, None, Query(**span))
    strip = lambda nodes: [(n["tag"], n["requests"], n["cost"], strip(n["children"])) for n in nodes]  # noqa: E731
    assert strip(tree_a["data"]) == strip(tree_b["data"])


def test_cover_adds_up_to_the_planned_range_and_reads_less() -> None:
    from tallygate.analytics.cover import cover
    from tallygate.analytics.plan import USAGE_LEVELS, split

    rng = random.Random(3)
    hour = 3_600_000
    for _ in range(300):
        a = T0 + rng.randrange(40 * DAY)
        b = a + rng.choice([rng.randrange(1, hour), rng.randrange(1, 3 * DAY), rng.randrange(1, 40 * DAY)])
        levels = rng.choice([USAGE_LEVELS, ("day", "hour"), ("hour",)])
        planned = split(a, b, levels)
        pieces = cover(planned, levels, now_ms=T0 + 100 * DAY)
        points = sorted({a, b, *(p for _, s in pieces for p in (s.from_ms, s.to_ms))})
        for lo, hi in zip(points, points[1:], strict=False):  # each piece of the line: once inside, never outside
            mid = (lo + hi) / 2
            inside = sum(sign for sign, s in pieces if s.from_ms <= mid < s.to_ms)  # type: ignore[operator]
            assert inside == (1 if a <= mid < b else 0), (a, b, levels, pieces)
        raw = lambda segs: sum(s.to_ms - s.from_ms for s in segs if s.level == "raw")  # noqa: E731
        assert raw([s for _, s in pieces]) <= raw(planned)
        assert all(s.to_ms - s.from_ms <= hour // 2 for sign, s in pieces if s.level == "raw" and sign < 0)
    # a unit that ends within the settling time is read as planned
    planned = split(T0 + 17, T0 + DAY + 4 * hour + 59 * 60_000, USAGE_LEVELS)
    assert planned[-1].level == "raw"
    assert (1, planned[-1]) in cover(planned, USAGE_LEVELS, now_ms=T0 + DAY + 5 * hour)
    assert (1, planned[-1]) not in cover(planned, USAGE_LEVELS, now_ms=T0 + DAY + 6 * hour)
