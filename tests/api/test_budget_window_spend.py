"""The spend of day and rolling windows read from the raw ledger (`store/window_spend.py`)
equals the month's read from the roll-ups, for key, label and tag budgets, on SQLite and
PostgreSQL: a tag budget counts each request once however many of its tags are under the path,
and never a sibling path that merely starts with the same text."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.postgres import postgres_server

PERIODS = ("month", "day", {"hours": 6})


@contextmanager
def _database(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
    else:
        with postgres_server() as url:
            yield url


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_windows_rebuilt_from_the_raw_ledger_equal_the_month_roll_ups(upstream: FakeUpstream, tmp_path: Path,
                                                                       db: str) -> None:
    with _database(db) as url:
        env = {"TALLYGATE_FAKE_NOW": "2026-12-08T12:00:00+00:00"}  # no midnight during the test
        gw = Gateway(tmp_path, standard_config(upstream), env=env, db_url=url).start()
        try:
            run = uuid.uuid4().hex[:8]
            status, _, key = gw.post_json("/v1/manage/apikey", {"name": "w", "labels": {"team": run}})
            assert status == 201, key
            scopes = {"key": {"key": key["id"]}, "label": {"label": {"team": run}}, "tag": {"tag": f"cust/{run}"}}
            budgets: dict[tuple[str, str], str] = {}
            for kind, scope in scopes.items():
                for period in PERIODS:
                    status, _, rec = gw.post_json("/v1/manage/budget", {"name": f"{kind}-{period}", "scope": scope,
                                                                        "monthly_limit": "1000", "period": period})
                    assert status == 201, rec
                    budgets[kind, str(period)] = rec["id"]
            for tags in ([f"cust/{run}/eu", f"cust/{run}"], [f"cust/{run}x"], [f"cust/{run}/us"], []):
                status, _, body = gw.post_json("/v1/chat/completions", {
                    "model": "priced", "max_tokens": 5, "request_tags": tags,
                    "messages": [{"role": "user", "content": "count me " + " ".join(tags)}]}, key=key["key"])
                assert status == 200, body

            def views() -> dict[tuple[str, str], Decimal]:
                return {k: Decimal(gw.get("/v1/manage/budget/" + bid)[1]["monthly_spend"])
                        for k, bid in budgets.items()}

            counted = views()  # as this process counted them, settle by settle
            gw.stop()  # the ledger writer writes everything before it exits
            gw.start()  # a new process: every window from the ledger
            assert views() == counted
            for kind in scopes:
                assert len({counted[kind, str(p)] for p in PERIODS}) == 1, (kind, counted)
            assert 0 < counted["tag", "month"] < counted["label", "month"] == counted["key", "month"]
        finally:
            gw.stop()
