"""No question waits for the columnar copy: over a ledger that holds records the gateway makes the
copy in the background from start-up, and until it is made the roll-ups and the raw ledger answer,
exactly, records that arrive meanwhile included. Once made, a record that arrives late in an hour
the copy holds is read from the ledger until the copy has it."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.query import Dim, Query
from tallygate.analytics.reader import AnalyticsStore
from tallygate.core.metrics import REQUESTS
from tallygate.store.db import migrate, open_engine
from tallygate.store.feedback import FeedbackStore
from tests.analytics.checker import check_usage, http_get
from tests.analytics.ledgers import DAY, HOUR, T0, fill, random_records
from tests.analytics.oracle import Oracle
from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, InProcessGateway

QUESTIONS = [
    {"group_by": "tag,label.team"},  # tags crossed with a label: no roll-up holds it
    {
        "group_by": "time.day,tag_level.1",
        "tz": "Asia/Kolkata",
        "from": str(T0 + 5 * HOUR + 17),
        "to": str(T0 + 2 * DAY + 3 * HOUR),
    },  # local days in a half-hour zone
    {"group_by": "model", "status": "502"},  # a record filter
]


class HeldCopy(DuckDBColumnar):
    """A DuckDB copy whose writes of records wait until the test lets them go, and whose first write
    of label sets takes `slow_labels_s`."""

    def __init__(self, path: str | Path = ":memory:", slow_labels_s: float = 0.0) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.slow_labels_s = slow_labels_s

    def set_labels(self, label_sets: dict[str, dict[str, Any]], key_labels: dict[str, dict[str, Any]]) -> None:
        time.sleep(self.slow_labels_s)
        self.slow_labels_s = 0.0
        super().set_labels(label_sets, key_labels)

    def replace_range(self, from_ms: int, to_ms: int, rows: list[tuple[Any, ...]]) -> None:
        self.entered.set()
        self.release.wait(60)
        super().replace_range(from_ms, to_ms, rows)


def _renamed(records: list[Any], prefix: str) -> list[Any]:
    return [msgspec.structs.replace(r, id=f"{prefix}{i:05d}") for i, r in enumerate(records)]


def test_a_question_is_answered_exactly_while_the_copy_is_made_in_the_background(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    rng = random.Random(17)
    fill(engine, random_records(rng, 1500), rng, feedback=30)
    held = HeldCopy()
    gw = InProcessGateway(tmp_path, standard_config(upstream))
    gw.columnar = lambda: held
    gw.start()
    try:
        assert held.entered.wait(30), "the copy was not started at start-up"
        # records that arrive while the copy is being made: late ones in its hours, and recent ones
        now = int(time.time() * 1000)
        fill(
            engine,
            _renamed(random_records(rng, 200), "late")
            + _renamed(random_records(rng, 20, now - 120_000, 60_000), "new"),
            rng,
            feedback=5,
        )
        get, oracle = http_get(gw.url, ADMIN_KEY), Oracle(engine)
        for p in QUESTIONS:
            assert check_usage(get, oracle, p) == [], p
            _, doc = get("/v1/analytics/usage?group_by=" + p["group_by"])
            assert doc["plan"]["source"] != "columnar"  # the copy is held: it did not answer
        assert held.count() == 0 and not held.release.is_set()  # answered without waiting for the copy
        held.release.set()
        gw.wait_columnar(60)
        for p in QUESTIONS:
            assert check_usage(get, oracle, p) == [], p
    finally:
        held.release.set()
        gw.stop()
        engine.dispose()


def test_after_a_restart_the_copy_answers_as_far_as_it_is_exact_while_it_catches_up(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    rng = random.Random(19)
    records = random_records(rng, 1500)
    fill(engine, records, rng, feedback=30)
    copy = DuckDBColumnar(tmp_path / "copy.duckdb")
    AnalyticsStore(engine, columnar=copy).sync()  # the copy a previous run made
    copy.close()
    # while the gateway was down: records replayed from a journal into hours the copy holds
    fill(engine, _renamed(random_records(rng, 40, T0 + DAY, DAY), "late"), rng, feedback=5)
    held = HeldCopy(tmp_path / "copy.duckdb", slow_labels_s=1.5)
    gw = InProcessGateway(tmp_path, standard_config(upstream))
    gw.columnar = lambda: held
    gw.start()
    try:
        get, oracle = http_get(gw.url, ADMIN_KEY), Oracle(engine)
        # asked while the copy is being opened (its labels copied first): the question waits for that,
        # a moment, not for the catch-up, and not for the raw ledger (minutes on a big one)
        assert get("/v1/analytics/usage?group_by=tag,label.team")[1]["plan"]["source"] == "columnar"
        assert held.entered.wait(30), "the copy was not brought up to date at start-up"  # it repairs those hours
        for p in QUESTIONS:
            assert check_usage(get, oracle, p) == [], p
        _, doc = get("/v1/analytics/usage?group_by=tag,label.team")
        assert doc["plan"]["source"] == "columnar" and doc["plan"]["copy"] == "catching up"
        # the copy up to the first late record's hour, then the ledger
        assert [s["level"] for s in doc["plan"]["segments"]] == ["columnar", "raw"]
        assert held.count() == 1500 and not held.release.is_set()
        early = next(r.id for r in records if r.created_at < T0 + DAY // 2)  # in the part the copy answers
        FeedbackStore(engine).put(early, 990, None)  # a score the copy has not got: the ledger answers
        for p in QUESTIONS:
            assert check_usage(get, oracle, p) == [], p
        held.release.set()
        gw.wait_columnar()
        for p in QUESTIONS:
            assert check_usage(get, oracle, p) == [], p
    finally:
        held.release.set()
        gw.stop()
        engine.dispose()


def test_a_shutdown_stops_the_background_copy_and_waits_for_it(upstream: FakeUpstream, tmp_path: Path) -> None:
    """A thread still inside DuckDB when the interpreter exits aborts the process ('terminate
    called without an active exception'): a SIGTERM during a first copy must end it first."""
    engine = open_engine(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    rng = random.Random(23)
    fill(engine, random_records(rng, 1500), rng, feedback=0)  # three days: a dozen chunks to copy
    held = HeldCopy()
    gw = InProcessGateway(tmp_path, standard_config(upstream))
    gw.columnar = lambda: held
    gw.start()
    try:
        assert held.entered.wait(30)
        threading.Timer(0.5, held.release.set).start()  # the chunk being copied ends after the stop began
        gw.stop()
        assert not [t for t in threading.enumerate() if t.name == "tallygate-columnar-warm"]
        assert held.count() < 1500  # it stopped after that chunk
    finally:
        held.release.set()
        gw.stop()
        engine.dispose()


def test_a_late_record_in_an_hour_the_copy_holds_is_counted_before_the_next_sync(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(3)
    records = random_records(rng, 600)
    fill(engine, records, rng, feedback=0)
    store = AnalyticsStore(engine, columnar=DuckDBColumnar(), sync_every_s=3600)  # no sync during the test
    store.sync()
    q = Query((Dim("model"),), from_ms=T0, to_ms=T0 + 3 * DAY, status=200)  # a record filter: the copy answers

    def answered() -> int:
        c = store.collect(q)
        assert c.family == "columnar"
        return sum(agg.v[REQUESTS] for agg in c.groups.values())

    assert answered() == sum(1 for r in records if r.status == 200)
    late = _renamed(random_records(rng, 30, T0 + 5 * HOUR, HOUR), "late")
    fill(engine, late, rng, feedback=0)
    assert answered() == sum(1 for r in records + late if r.status == 200)
    engine.dispose()
