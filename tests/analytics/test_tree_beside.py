"""The tag tree's totals are read beside the tree (unit test: the store's two reads meet at a barrier)."""

from __future__ import annotations

import random
import threading
from typing import Any

from tallygate.analytics.query import Query
from tallygate.analytics.reader import AnalyticsStore
from tallygate.analytics.service import Analytics
from tallygate.store.db import migrate, open_engine
from tests.analytics.ledgers import DAY, T0, fill, random_records


def test_the_tree_and_its_totals_are_read_side_by_side(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    rng = random.Random(3)
    fill(engine, random_records(rng, 300), rng, feedback=5)
    q = Query(labels={"team": "a"}, from_ms=T0, to_ms=T0 + 3 * DAY)
    expected = Analytics(AnalyticsStore(engine)).tree(None, None, q)

    store = AnalyticsStore(engine)
    both = threading.Barrier(2, timeout=5)  # one after the other: the first waits alone and fails
    tree, totals = store.collect_tree, store.tagged_by_time

    def met(read: Any) -> Any:
        def wait_then_read(*args: Any, **kwargs: Any) -> Any:
            both.wait()
            return read(*args, **kwargs)
        return wait_then_read

    store.collect_tree, store.tagged_by_time = met(tree), met(totals)  # type: ignore[method-assign]
    got = Analytics(store).tree(None, None, q)
    assert got["data"] and (got["data"], got["totals"]) == (expected["data"], expected["totals"])
    engine.dispose()
