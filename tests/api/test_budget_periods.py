"""Periods through the management API and the CLI on one gateway process (SQLite): a budget
and a key limit take a `period`, their views show the current window, a bad period is a 400
naming `period`, and changing the period of a budget that binds the caller is loosening it."""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway


def _put(gateway: Gateway, path: str, body: dict, key: str = ADMIN_KEY) -> tuple[int, dict]:
    status, _, raw = gateway.request("PUT", path, json.dumps(body).encode(), key, {"Content-Type": "application/json"})
    return status, json.loads(raw)


def _key(gateway: Gateway, body: dict) -> dict:
    status, _, rec = gateway.post_json("/v1/manage/apikey", body)
    assert status == 201, rec
    return rec


def test_bad_periods_are_400s_naming_period(gateway: Gateway) -> None:
    key = _key(gateway, {"name": "periods"})
    for bad in ("year", {"hours": 0}, {"minutes": 5}, {"days": 1.5}, {"hours": 1, "days": 1}, None):
        for status, body in (gateway.post_json("/v1/manage/budget", {"name": "b", "scope": {"key": key["id"]},
                                                                     "monthly_limit": "1", "period": bad})[::2],
                             gateway.post_json("/v1/manage/apikey", {"name": "k", "period": bad})[::2],
                             _put(gateway, "/v1/manage/apikey/" + key["id"], {"period": bad})):
            assert status == 400 and body["error"]["param"] == "period", (bad, body)


def test_views_show_the_period_and_its_current_window(gateway: Gateway) -> None:
    key = _key(gateway, {"name": "weekly", "monthly_limit": "3", "period": "week"})
    start = dt.datetime.fromisoformat(key["window_start"])
    end = dt.datetime.fromisoformat(key["window_end"])
    assert key["period"] == "week" and start.weekday() == 0 and end - start == dt.timedelta(days=7)  # UTC here
    assert start <= dt.datetime.now(dt.UTC) < end
    status, _, budget = gateway.post_json("/v1/manage/budget", {"name": "rolling", "scope": {"key": key["id"]},
                                                                "monthly_limit": "1", "period": {"days": 2}})
    assert status == 201 and budget["period"] == {"days": 2} and budget["window_end"] is None, budget
    assert dt.timedelta(hours=46) <= dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(budget["window_start"]) \
        <= dt.timedelta(days=2)
    status, moved = _put(gateway, "/v1/manage/budget/" + budget["id"], {"period": "day"})
    assert status == 200 and moved["period"] == "day" and moved["window_end"] is not None, moved
    plain = _key(gateway, {"name": "plain"})
    assert plain["period"] == "month" and plain["window_start"][:10] == dt.datetime.now(dt.UTC).strftime("%Y-%m-01")


def test_a_bound_key_cannot_change_the_period_of_a_budget_that_binds_it_nor_its_own(gateway: Gateway) -> None:
    bound = _key(gateway, {"name": "bound", "monthly_limit": "5",
                           "permissions": {"completions": "write", "manage": "write"}})
    status, _, budget = gateway.post_json("/v1/manage/budget", {"name": "daily", "scope": {"key": bound["id"]},
                                                                "monthly_limit": "1", "period": "day"})
    assert status == 201, budget
    status, body = _put(gateway, "/v1/manage/budget/" + budget["id"], {"period": "month"}, bound["key"])
    assert status == 403 and body["error"]["param"] == "period", body
    status, body = _put(gateway, "/v1/manage/apikey/" + bound["id"], {"period": "day"}, bound["key"])
    assert status == 403 and body["error"]["param"] == "period", body


def test_the_cli_takes_a_period(gateway: Gateway) -> None:
    key = _key(gateway, {"name": "cli-period"})
    out = gateway.cli("budgets", "create", "--name", "six-hours", "--key", key["id"], "--limit", "2",
                      "--period", "hours:6")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["period"] == {"hours": 6}
    out = gateway.cli("budgets", "list")
    assert out.returncode == 0 and 'six-hours' in out.stdout and 'per hours:6 since' in out.stdout, out.stdout
    out = gateway.cli("keys", "update", key["id"], "--limit", "1", "--period", "week")
    assert out.returncode == 0, out.stderr
    assert gateway.get("/v1/manage/apikey/" + key["id"])[1]["period"] == "week"
    out = gateway.cli("keys", "list")  # periods read as --period takes them, not as JSON
    assert out.returncode == 0 and "per week since" in out.stdout and 'per "' not in out.stdout, out.stdout
    out = gateway.cli("budgets", "create", "--name", "x", "--key", key["id"], "--limit", "2", "--period", "fortnight")
    assert out.returncode != 0 and "--period" in out.stderr, out.stderr


@pytest.mark.parametrize("period", ["hours:9999", "days:0", "days:367"])
def test_the_cli_names_the_range_of_a_rolling_period_as_it_takes_it(gateway: Gateway, period: str) -> None:
    """A rolling period out of range is refused by the CLI in its own syntax (`hours:N`, N from 1
    to 744), not with the API's JSON (`{"hours": N}`) the user never typed."""
    out = gateway.cli("keys", "create", "--name", "out-of-range", "--limit", "1", "--period", period)
    assert out.returncode != 0
    assert "--period" in out.stderr and "hours:N (N from 1 to 744)" in out.stderr, out.stderr
    assert "days:N (N from 1 to 366)" in out.stderr and '{"hours"' not in out.stderr, out.stderr


def test_a_bound_key_cannot_give_a_key_a_limit_that_resets_sooner_than_its_own(gateway: Gateway) -> None:
    bound = _key(gateway, {"name": "bound-monthly", "monthly_limit": "5",
                           "permissions": {"completions": "write", "manage": "write"}})
    for period in ("day", "week", {"hours": 24}, {"days": 30}):  # $5 a day is up to $155 in a month
        status, _, body = gateway.post_json("/v1/manage/apikey", {"name": "child", "monthly_limit": "5",
                                                                  "period": period}, key=bound["key"])
        assert status == 403 and body["error"]["param"] == "period", (period, body)
    status, _, child = gateway.post_json("/v1/manage/apikey", {"name": "child", "monthly_limit": "5"}, key=bound["key"])
    assert status == 201 and child["period"] == "month", child
    status, body = _put(gateway, "/v1/manage/apikey/" + child["id"], {"period": "day"}, bound["key"])
    assert status == 403 and body["error"]["param"] == "period", body
    status, _, child = gateway.post_json("/v1/manage/apikey", {"name": "slow", "monthly_limit": "5",
                                                               "period": {"days": 40}}, key=bound["key"])
    assert status == 201, child  # resets later than the month: as tight


def test_a_period_changed_with_a_request_in_flight_counts_it_in_the_new_window(gateway: Gateway) -> None:
    """A key's limit and a budget moved from the month to the day while a request of theirs is
    in flight (a stream whose events come 400 ms apart): once it has ended, the day's spend of each
    is the ledger's, that request included (their new windows started from the ledger, which did
    not hold it yet)."""
    key = _key(gateway, {"name": "moving", "monthly_limit": "100"})
    status, _, budget = gateway.post_json("/v1/manage/budget", {"name": "moving", "scope": {"key": key["id"]},
                                                                "monthly_limit": "100"})
    assert status == 201, budget
    with ThreadPoolExecutor(1) as pool:
        body = {"model": "slowstream", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        slow = pool.submit(gateway.request, "POST", "/v1/chat/completions", json.dumps(body).encode(), key["key"],
                           {"Content-Type": "application/json"})
        time.sleep(0.3)  # reserved and streaming
        for path in ("/v1/manage/apikey/" + key["id"], "/v1/manage/budget/" + budget["id"]):
            status, moved = _put(gateway, path, {"period": "day"})
            assert status == 200 and moved["period"] == "day" and Decimal(moved["monthly_spend"]) == 0, moved
        assert not slow.done(), "the request ended before its period changed"
        status, _, raw = slow.result()
        assert status == 200 and b"[DONE]" in raw, raw
    deadline = time.monotonic() + 5  # the ledger writer flushes every 250 ms
    while not (rows := [r for r in gateway.ledger_rows() if r["key_id"] == key["id"]]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cost = Decimal(rows[0]["cost_pico"]) / 10**12
    assert cost > 0
    for path in ("/v1/manage/apikey/" + key["id"], "/v1/manage/budget/" + budget["id"]):
        assert Decimal(gateway.get(path)[1]["monthly_spend"]) == cost, path


def test_a_period_changed_before_the_ledger_holds_the_last_requests_counts_them_soon_after(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """One process, its ledger written every 1.5 s: a key's limit moved to the day just after a
    request was answered starts the day from a ledger without it, then reads it again: within a
    few seconds the day's spend is the ledger's."""
    gw = InProcessGateway(tmp_path, standard_config(upstream), env={"TALLYGATE_LEDGER_FLUSH_MS": "1500"}).start()
    try:
        key = _key(gw, {"name": "late", "monthly_limit": "100"})
        status, _, body = gw.post_json("/v1/chat/completions", {"model": "priced", "max_tokens": 5,
                                                                "messages": [{"role": "user", "content": "hi"}]},
                                       key["key"])
        assert status == 200, body
        status, moved = _put(gw, "/v1/manage/apikey/" + key["id"], {"period": "day"})
        assert status == 200 and moved["period"] == "day", moved
        deadline = time.monotonic() + 10
        while not (rows := [r for r in gw.ledger_rows() if r["key_id"] == key["id"]]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cost = Decimal(rows[0]["cost_pico"]) / 10**12
        while (spend := Decimal(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"])) != cost:
            assert time.monotonic() < deadline, (spend, cost)
            time.sleep(0.2)
    finally:
        gw.stop()
