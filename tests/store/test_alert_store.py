"""The alert store on SQLite and PostgreSQL: an alert id is stored once whoever inserts it
(concurrent writers included), and pages come back newest first with filters and cursors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tallygate.store.alerts import AlertFilter, AlertStore
from tallygate.store.db import migrate, open_engine
from tests.postgres import postgres_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('alerts') / 'db.sqlite'}"
    else:
        with postgres_server() as url:
            yield url


def _event(i: int, kind: str = "threshold", subject: str = "k1") -> dict:
    return {"id": f"{kind}:{subject}:{i}", "kind": kind, "created_at_ms": 1_000 + i, "summary": "s",
            "subject": {"kind": "key", "id": subject, "name": "n"}}


def test_each_id_is_stored_once_even_from_concurrent_writers(db_url: str) -> None:
    engine = open_engine(db_url)
    migrate(engine)
    stores = [AlertStore(engine) for _ in range(4)]
    won: list[str] = []
    lock = threading.Lock()

    def insert(store: AlertStore) -> None:
        fresh = store.insert_new([_event(i) for i in range(20)])
        with lock:
            won.extend(e["id"] for e in fresh)

    threads = [threading.Thread(target=insert, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(_event(i)["id"] for i in range(20))  # each id won exactly once
    assert stores[0].insert_new([_event(3)]) == []
    engine.dispose()


def test_pages_are_newest_first_with_filters_and_cursor(db_url: str, tmp_path: Path) -> None:
    engine = open_engine(db_url)
    migrate(engine)
    store = AlertStore(engine)
    store.insert_new([_event(100 + i, "spend_spike", "label.team=a") for i in range(5)])
    first, cursor = store.page(AlertFilter(kind="spend_spike"), 3, None)
    assert [e["created_at_ms"] for e in first] == [1104, 1103, 1102] and cursor
    rest, end = store.page(AlertFilter(kind="spend_spike"), 3, cursor)
    assert [e["created_at_ms"] for e in rest] == [1101, 1100] and end is None
    window, _ = store.page(AlertFilter(subject="label.team=a", from_ms=1101, to_ms=1103), 10, None)
    assert [e["created_at_ms"] for e in window] == [1102, 1101]
    engine.dispose()
