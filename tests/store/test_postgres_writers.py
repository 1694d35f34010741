"""Several ledger writers on one real PostgreSQL (as several gateway processes have): concurrent
batches that share roll-up rows never deadlock, and replays never count a record twice."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tallygate.store.db import migrate, open_engine
from tallygate.store.ingest import BatchIngest
from tests.postgres import postgres_server
from tests.records import make_record

WRITERS, BATCHES, SIZE = 4, 25, 60
T0 = 1_790_000_000_000


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        engine = open_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


def _batches(writer: int) -> list[list]:
    rng = random.Random(writer)
    tags = ["US/CA/SF", "US/NYC", "EU/FR", "team/search", "prod"]
    out = []
    for b in range(BATCHES):
        batch = [make_record(id=f"w{writer}-b{b}-{i}", created_at=T0 + rng.randrange(3) * 3_600_000,
                             key_id=rng.choice(["k1", "k2", "k3"]), labels={"team": rng.choice("abc")},
                             tags=rng.sample(tags, rng.randrange(0, 3)), requested_model=rng.choice("xyz"),
                             status=rng.choice([200, 200, 429]), cost_pico=rng.randrange(1, 10**9))
                 for i in range(SIZE)]
        rng.shuffle(batch)  # each writer meets the shared roll-up rows in its own order
        out.append(batch)
    return out


def test_concurrent_writers_never_deadlock_nor_double_count(pg_url: str) -> None:
    batches = {w: _batches(w) for w in range(WRITERS)}
    errors: list[BaseException] = []
    deadlocks: list[str] = []
    start = threading.Barrier(WRITERS)

    def write(w: int) -> None:
        engine = open_engine(pg_url)
        ingest = BatchIngest(engine)
        try:
            start.wait()
            for b, batch in enumerate(batches[w]):
                mine = batch
                if b % 5 == 4:  # replay a neighbour's batch too (a retried write)
                    mine = batch + batches[(w + 1) % WRITERS][b - 1]
                for _ in range(10):  # the ledger writer retries a failed batch the same way
                    try:
                        ingest.write(mine)
                        break
                    except DBAPIError as exc:
                        if "deadlock" in str(exc.orig).lower():
                            deadlocks.append(str(exc.orig))
                        else:
                            raise
                    except RuntimeError as exc:  # raced another writer on a replayed record
                        assert "raced another writer" in str(exc)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert deadlocks == []
    every = {r.id: r for w in batches.values() for batch in w for r in batch}
    engine = open_engine(pg_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT count(*), sum(cost_pico) FROM requests")).one()
            assert (raw[0], int(raw[1])) == (len(every), sum(r.cost_pico for r in every.values()))
            for level in ("hour", "day", "month"):
                got = conn.execute(text(f"SELECT sum(requests), sum(cost_pico), sum(errors) "
                                        f"FROM usage_rollup_{level}")).one()
                assert tuple(int(x) for x in got) == (
                    len(every), sum(r.cost_pico for r in every.values()),
                    sum(1 for r in every.values() if r.status >= 400)), level
            tagged = conn.execute(text("SELECT sum(requests), sum(cost_pico) FROM tag_rollup_day "
                                       "WHERE prefix = 'US'")).one()
            under_us = [r for r in every.values() if any(t.startswith("US/") for t in r.tags)]
            assert (int(tagged[0]), int(tagged[1])) == (len(under_us), sum(r.cost_pico for r in under_us))
    finally:
        engine.dispose()
