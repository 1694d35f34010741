"""The columnar copy costs nothing until a question needs it: a gateway over an empty ledger starts
without importing duckdb or creating the copy's file; the first question no roll-up holds opens it;
and a sync that finds nothing new writes nothing to the copy."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from tallygate.analytics.columnar import DuckDBColumnar
from tallygate.analytics.mirror import SETTLED_MS, Mirror
from tallygate.store.db import migrate, open_engine
from tests.analytics.ledgers import fill, random_records
from tests.gateway import Gateway


def _maps_duckdb(pid: int) -> bool:
    """Whether process `pid` has duckdb's extension module mapped (it is imported)."""
    return "duckdb" in Path(f"/proc/{pid}/maps").read_text()


def test_a_gateway_starts_without_duckdb_and_opens_it_for_the_first_question_that_needs_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    gw = Gateway(tmp_path, None, env=env).start()
    try:
        assert gw.proc is not None
        copy = Path(f"{gw.db_path}.analytics.duckdb")
        status, _ = gw.get("/v1/analytics/usage?group_by=model")  # the roll-ups answer: no copy needed
        assert status == 200
        assert not _maps_duckdb(gw.proc.pid) and not copy.exists()
        # the first question that needs the copy starts making it (in the background: meanwhile the
        # raw ledger answers), and a later one is answered by it
        gw.wait_columnar(30)
        assert _maps_duckdb(gw.proc.pid) and copy.exists()
    finally:
        gw.stop()


class CountingSink(DuckDBColumnar):
    """A DuckDB copy that counts the writes the mirror makes to it."""

    writes: list[str]

    def __init__(self) -> None:
        self.writes = []
        super().__init__()

    def replace_range(self, from_ms: int, to_ms: int, rows: list[tuple[Any, ...]]) -> None:
        self.writes.append("records")
        super().replace_range(from_ms, to_ms, rows)

    def set_meta(self, name: str, value: int) -> None:
        self.writes.append(name)
        super().set_meta(name, value)

    def set_feedback(self, rows: list[tuple[str, int]]) -> None:
        self.writes.append("feedback")
        super().set_feedback(rows)


def test_a_sync_with_nothing_new_writes_nothing_to_the_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(5)
    records = random_records(rng, 400)
    fill(engine, records, rng, feedback=20)
    sink = CountingSink()
    mirror = Mirror(engine, sink)
    now = max(r.created_at for r in records) + SETTLED_MS + 1
    assert mirror.sync(now) == len(records)
    assert "records" in sink.writes and "watermark" in sink.writes and "feedback" in sink.writes
    assert sink.count() == len(records)
    sink.writes.clear()
    for later in (now + 5_000, now + 86_400_000):  # time passes, nothing is recorded
        assert mirror.sync(later) == 0
        assert mirror.watermark == later - SETTLED_MS
    assert sink.writes == []
    assert sink.count() == len(records)
