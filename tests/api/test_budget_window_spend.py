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
from sqlalchemy import create_engine, text

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


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_local_month_west_of_utc_is_loaded_exactly_from_the_utc_roll_ups(upstream: FakeUpstream, tmp_path: Path,
                                                                           db: str) -> None:
    """In America/New_York December begins at 05:00 UTC on 1 December and ends at 05:00 UTC on
    1 January: a process started in its last hours loads each month budget and key limit as
    the UTC December roll-up, less the hours before local midnight, plus January's first hours."""
    with _database(db) as url:
        config = {**standard_config(upstream), "reporting": {"timezone": "America/New_York"}}
        gw = Gateway(tmp_path, config, env={"TALLYGATE_FAKE_NOW": "2026-12-01T02:00:00+00:00"}, db_url=url).start()
        try:
            run = uuid.uuid4().hex[:8]
            status, _, key = gw.post_json("/v1/manage/apikey", {"name": "ny", "labels": {"team": run},
                                                                "monthly_limit": "1000"})
            assert status == 201 and key["window_start"] == "2026-11-01T04:00:00+00:00", key
            paths = ["/v1/manage/apikey/" + key["id"]]
            for kind, scope in {"key": {"key": key["id"]}, "label": {"label": {"team": run}},
                                "tag": {"tag": f"cust/{run}"}}.items():
                status, _, rec = gw.post_json("/v1/manage/budget", {"name": f"{kind}-month", "scope": scope,
                                                                    "monthly_limit": "1000"})
                assert status == 201, rec
                paths.append("/v1/manage/budget/" + rec["id"])
            for now in ("2026-12-01T02:00:00+00:00", "2026-12-15T12:00:00+00:00", "2027-01-01T02:00:00+00:00"):
                if now != "2026-12-01T02:00:00+00:00":  # November's last local hours, then December's
                    gw.stop()
                    gw.env["TALLYGATE_FAKE_NOW"] = now
                    gw.start()
                for i in range(2):
                    status, _, body = gw.post_json("/v1/chat/completions", {
                        "model": "priced", "max_tokens": 5, "request_tags": [f"cust/{run}/x"],
                        "messages": [{"role": "user", "content": f"count me {now} {i}"}]}, key=key["key"])
                    assert status == 200, body
            gw.stop()
            gw.start()  # a new process at 21:00 on 31 December, New York time
            engine = create_engine(gw.db_url)
            try:
                with engine.connect() as conn:
                    pico = conn.execute(text("SELECT sum(cost_pico) FROM requests WHERE key_id = :k "
                                             "AND created_at >= :s"),
                                        {"k": key["id"], "s": 1796101200000}).scalar()  # 2026-12-01T05:00Z
            finally:
                engine.dispose()
            for path in paths:
                status, rec = gw.get(path)
                assert rec["window_start"] == "2026-12-01T05:00:00+00:00", rec
                assert rec["window_end"] == "2027-01-01T05:00:00+00:00", rec
                assert Decimal(rec["monthly_spend"]) * 10**12 == int(pico), (path, rec, pico)
        finally:
            gw.stop()
