"""Random questions across the whole analytics grammar (usage with every dimension and filter, the
tag tree, logs walked to their end, invoices, minutes; ranges ragged to the millisecond, empty,
single-millisecond and future; every kind of zone), asked over HTTP of a real gateway and each
compared with a direct computation over the raw ledger (`tests/analytics/checker.py`), on SQLite
and on PostgreSQL, with records and feedback written after the columnar copy was made."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import msgspec
import pytest
from sqlalchemy import Engine

from tallygate.store.db import migrate, open_engine
from tallygate.store.keys import KeyStore
from tests.analytics.checker import check_logs, check_usage, http_get, run
from tests.analytics.ledgers import fill, random_records
from tests.analytics.oracle import Oracle
from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway

HOUR = 3_600_000
# (start, span): the turn of the year, Lord Howe's 30-minute spring change, London's and New York's
# autumn changes with the turn of the month between them, an ordinary mid-month day
WINDOWS = [(1767222000000, 4 * HOUR), (1791028800000, 8 * HOUR), (1792144800000, 30 * HOUR),
           (1792929600000, 60 * HOUR), (1794614400000, 20 * HOUR)]
LABELS = [{"team": "a", "env": "prod"}, {"team": "b"}, {"team": "a", "env": "dev"}, {"env": "prod"}]


def _records(engine: Engine, rng: random.Random, per_window: int, prefix: str,
             windows: list[tuple[int, int]] = WINDOWS) -> list[msgspec.Struct]:
    """Records of `tests/analytics/ledgers.py` on this ledger's keys (their labels as recorded)."""
    keys = KeyStore(engine)
    stored = sorted((k for k in keys.all() if k.name.startswith("chk-")), key=lambda k: k.name)
    if not stored:
        stored = [keys.create(name=f"chk-{i}", labels=labels)[0] for i, labels in enumerate(LABELS)]
    out = []
    for start, span in windows:
        for r in random_records(rng, per_window, start, span):
            i = rng.randrange(len(stored) + 1)
            key = stored[i] if i < len(stored) else None
            out.append(msgspec.structs.replace(r, id=f"{prefix}{len(out):05d}", key_id=None if key is None else key.id,
                                               labels={} if key is None else dict(LABELS[i])))
    return out


def _ledger(engine: Engine, rng: random.Random) -> None:
    migrate(engine)
    fill(engine, _records(engine, rng, 400, "r"), rng, feedback=60)
    keys = KeyStore(engine)
    first = next(k for k in keys.all() if k.name == "chk-0")
    keys.update(first.id, {"labels": {"team": "b", "env": "prod"}})  # moved: labels=current differs


def _late(engine: Engine, rng: random.Random) -> None:
    """Records in hours the copy holds, a few in the last minutes, and scores, after the copy exists."""
    from tallygate.store.feedback import FeedbackStore

    now = int(time.time() * 1000)
    late = _records(engine, rng, 40, "late", [*WINDOWS, (now - 5 * 60_000, 4 * 60_000)])
    fill(engine, late, rng, feedback=20)
    scores = FeedbackStore(engine)
    for i in rng.sample(range(2000), 30):
        scores.put(f"r{i:05d}", rng.randrange(0, 1001), None)


def _caught_up(gw: Gateway, engine: Engine) -> None:
    """Wait until the columnar copy holds the late records and scores (it syncs at most every second,
    and in the background every few): a question it answers agrees with the ledger."""
    get = http_get(gw.url, ADMIN_KEY)
    oracle = Oracle(engine)
    deadline = time.monotonic() + 60
    question = {"group_by": "tag,label.team,status"}
    while check_usage(get, oracle, question):
        assert time.monotonic() < deadline, check_usage(get, oracle, question)
        time.sleep(0.2)


LOG_WALKS = [{"tz": "UTC", "limit": "7", "error_code": "upstream_rate_limited"},
             {"tz": "UTC", "limit": "50", "provider": "p1", "served_model": "m1-served"},
             {"tz": "Asia/Kolkata", "limit": "500", "error_code": "internal_error", "provider": "p2", "tag": "US"},
             {"tz": "UTC", "limit": "50", "served_model": "m2-served", "status": "502", "label.team": "a"},
             {"tz": "UTC", "limit": "50", "provider": "nobody"}]


def _ask(gw: Gateway, engine: Engine, seed: int, n: int) -> None:
    rng = random.Random(seed)
    get = http_get(gw.url, ADMIN_KEY)
    gw.wait_columnar()  # the copy is made in the background from start-up
    _late(engine, rng)
    _caught_up(gw, engine)
    failures = run(get, engine, n, seed)
    oracle = Oracle(engine)
    for p in LOG_WALKS:  # besides the random draws: each filter on what a request ended as, walked to its end
        failures += [f"logs {p}: {bad}" for bad in check_logs(get, oracle, p)]
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def sqlite_gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway,
                                                                                                        Engine]]:
    workdir = tmp_path_factory.mktemp("questions")
    engine = open_engine(f"sqlite:///{workdir}/ledger.db")
    _ledger(engine, random.Random(41))
    gw = InProcessGateway(workdir, standard_config(upstream)).start()
    yield gw, engine
    gw.stop()
    engine.dispose()


def test_random_questions_over_http_match_the_raw_ledger_on_sqlite(sqlite_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, engine = sqlite_gateway
    _ask(gw, engine, seed=7, n=140)


def test_random_questions_over_http_match_the_raw_ledger_on_postgresql(upstream: FakeUpstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.postgres import postgres_server

    with postgres_server() as url:
        engine = open_engine(url)
        _ledger(engine, random.Random(43))
        gw = InProcessGateway(tmp_path, standard_config(upstream), db_url=url,
                              env={"TALLYGATE_ANALYTICS_COLUMNAR": str(tmp_path / "copy.duckdb")}).start()
        try:
            _ask(gw, engine, seed=8, n=50)
        finally:
            gw.stop()
            engine.dispose()
