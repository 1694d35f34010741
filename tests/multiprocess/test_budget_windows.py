"""Budget windows on real gateways with an injected clock (TALLYGATE_FAKE_NOW, run fast with
TALLYGATE_CLOCK_RATE): a daily and a monthly budget on one key both bind across two processes on
PostgreSQL + Redis, the day resets at local midnight (Europe/Berlin) while the month keeps
counting, and after Redis loses its state the counters are rebuilt equal to the ledger (drift 0);
on one SQLite process, a key's daily limit resets at local midnight and a rolling window forgets
spend as it ages."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.multiprocess.budgets import counter_drift
from tests.postgres import PostgresInstance
from tests.redis import RedisServer

PICO = Decimal(10) ** 12
BERLIN = dt.timezone(dt.timedelta(hours=1))  # Europe/Berlin in December
READER = {"completions": "write", "manage": "read"}  # its 402s name the budget that refused


class FakeClock:
    """The clock the gateways run on: `start` at the system instant `origin`, `rate` times as fast."""

    def __init__(self, start: dt.datetime, rate: float) -> None:
        self.start, self.rate = start, rate
        self.origin_ms = time.time_ns() // 1_000_000

    @property
    def env(self) -> dict[str, str]:
        return {"TALLYGATE_FAKE_NOW": f"{self.start.isoformat()}@{self.origin_ms}",
                "TALLYGATE_CLOCK_RATE": str(self.rate)}

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(milliseconds=(time.time_ns() // 1_000_000 - self.origin_ms) * self.rate)

    def wait_until(self, when: dt.datetime) -> None:
        left = (when - self.now()).total_seconds() / self.rate
        assert left > -5, f"the test ran late: {when} passed {-left:.1f}s ago"
        time.sleep(max(left, 0))


def _config(upstream: FakeUpstream) -> dict:
    return {**standard_config(upstream), "reporting": {"timezone": "Europe/Berlin"}}


def _ask(gw: Gateway, key: str) -> tuple[int, dict]:
    status, _, body = gw.post_json("/v1/chat/completions", {"model": "priced-bytes", "max_tokens": 4,
                                                            "messages": [{"role": "user", "content": "hi " * 8}]},
                                   key=key)
    return status, body


def _until_refused(gws: list[Gateway], key: str, most: int = 200) -> tuple[int, str]:
    """Requests spread over `gws` until one is refused after the holds of those before it were
    settled: (requests served, the 402's message). (Settles are sent off the request path: on a
    loaded machine the last request's worst-case hold may still count when the next one asks.)"""
    served = 0
    for i in range(most):
        status, body = _ask(gws[i % len(gws)], key)
        if status == 402:
            time.sleep(1.0)  # every settle sent
            status, body = _ask(gws[i % len(gws)], key)
            if status == 402:
                return served, body["error"]["message"]
        assert status == 200, body
        served += 1
    raise AssertionError(f"never refused in {most} requests")


def _ledger_spend(url: str, key_id: str, since: dt.datetime, until: dt.datetime | None = None) -> Decimal:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            pico = conn.execute(text("SELECT coalesce(sum(cost_pico), 0) FROM requests WHERE key_id = :k "
                                     "AND created_at >= :s AND created_at < :u"),
                                {"k": key_id, "s": int(since.timestamp() * 1000),
                                 "u": int((until or dt.datetime(2100, 1, 1, tzinfo=dt.UTC)).timestamp() * 1000)}
                                ).scalar()
            return Decimal(int(pico or 0)) / PICO
    finally:
        engine.dispose()


def _recorded(gw: Gateway, path: str, url: str, key_id: str, since: dt.datetime) -> Decimal:
    """A budget's spend in its window (`path`'s view) once the ledger holds every request it
    counts (the ledger writers flush every 250 ms): the two are equal."""
    deadline = time.monotonic() + 10
    while True:
        view = Decimal(gw.get(path)[1]["monthly_spend"])
        ledger = _ledger_spend(url, key_id, since)
        if view == ledger or time.monotonic() > deadline:
            assert view == ledger, (view, ledger)
            return view
        time.sleep(0.2)


def _budget(gw: Gateway, name: str, key_id: str, limit: str, period: object) -> dict:
    status, _, rec = gw.post_json("/v1/manage/budget", {"name": name, "scope": {"key": key_id},
                                                        "monthly_limit": limit, "period": period})
    assert status == 201, rec
    return rec


def test_a_daily_and_a_monthly_budget_bind_across_processes_and_the_day_resets_at_local_midnight(
        upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer, tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime(2026, 12, 8, 23, 56, tzinfo=BERLIN), rate=4)  # midnight in 60 s
    midnight = dt.datetime(2026, 12, 9, tzinfo=BERLIN)
    gws: list[Gateway] = []
    try:
        for i in range(2):
            (tmp_path / str(i)).mkdir()
            gws.append(Gateway(tmp_path / str(i), _config(upstream), env=clock.env, db_url=pg.url,
                               args=("--redis", rds.url)).start())
        status, _, key = gws[0].post_json("/v1/manage/apikey", {"name": f"pair-{uuid.uuid4().hex[:6]}",
                                                                 "permissions": READER})
        assert status == 201, key
        daily = _budget(gws[0], "daily", key["id"], "0.30", "day")
        monthly = _budget(gws[1], "monthly", key["id"], "0.45", "month")
        assert daily["period"] == "day" and daily["window_start"] == "2026-12-07T23:00:00+00:00"
        assert daily["window_end"] == "2026-12-08T23:00:00+00:00" and monthly["period"] == "month"
        assert monthly["window_start"] == "2026-11-30T23:00:00+00:00"  # local midnight too
        served, refusal = _until_refused(gws, key["key"])
        assert served >= 2 and "daily limit of $0.3" in refusal, refusal
        assert clock.now() < midnight - dt.timedelta(seconds=10), "the test ran late: midnight came first"
        before = _recorded(gws[0], "/v1/manage/budget/" + daily["id"], pg.url, key["id"],
                           midnight - dt.timedelta(days=1))
        assert Decimal("0.15") < before <= Decimal("0.30")  # refused once less than a hold (~$0.10) is left

        clock.wait_until(midnight + dt.timedelta(seconds=8))  # the day starts over; the month does not
        for gw in gws:
            status, rec = gw.get("/v1/manage/budget/" + daily["id"])
            assert rec["window_start"] == "2026-12-08T23:00:00+00:00" and Decimal(rec["monthly_spend"]) == 0, rec
            status, rec = gw.get("/v1/manage/budget/" + monthly["id"])
            assert Decimal(rec["monthly_spend"]) == before, rec
        served, refusal = _until_refused(gws, key["key"])
        assert served >= 1 and "monthly limit of $0.45" in refusal, refusal  # the month binds first now
        after = _recorded(gws[1], "/v1/manage/budget/" + daily["id"], pg.url, key["id"], midnight)
        assert after > 0 and before + after <= Decimal("0.45")

        rds.restart()  # no persistence: every counter and hold is gone
        for gw in gws:  # rebuilt from the ledger before anything reads them, per window
            status, rec = gw.get("/v1/manage/budget/" + daily["id"])
            assert status == 200 and Decimal(rec["monthly_spend"]) == after, rec
            status, rec = gw.get("/v1/manage/budget/" + monthly["id"])
            assert Decimal(rec["monthly_spend"]) == before + after, rec
        status, body = _ask(gws[1], key["key"])
        assert status == 402 and "monthly limit" in body["error"]["message"], body
        assert counter_drift(gws[0]) == 0 and counter_drift(gws[1]) == 0
    finally:
        for gw in gws:
            gw.stop()


def test_a_keys_daily_limit_resets_at_local_midnight_and_a_rolling_window_forgets(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """One process on SQLite, its clock 100 times as fast: local midnight in ~40 s, a rolling hour
    (24 slots of 150 s) aged out ~40 s later; restarted in between, it starts both windows from
    the ledger."""
    clock = FakeClock(dt.datetime(2026, 12, 8, 22, 50, tzinfo=BERLIN), rate=100)
    midnight = dt.datetime(2026, 12, 9, tzinfo=BERLIN)
    gw = Gateway(tmp_path, _config(upstream), env=clock.env).start()
    try:
        status, _, daily = gw.post_json("/v1/manage/apikey", {"name": "daily", "monthly_limit": "0.20",
                                                              "period": "day", "permissions": READER})
        assert status == 201 and daily["period"] == "day", daily
        assert daily["window_start"] == "2026-12-07T23:00:00+00:00", daily
        status, _, rolling = gw.post_json("/v1/manage/apikey", {"name": "rolling", "permissions": READER})
        budget = _budget(gw, "hourly", rolling["id"], "0.20", {"hours": 1})
        assert budget["period"] == {"hours": 1} and budget["window_end"] is None, budget
        _, refusal = _until_refused([gw], daily["key"])
        assert "daily limit" in refusal, refusal
        start = dt.datetime(2026, 12, 8, 23, 10, tzinfo=BERLIN)  # so that midnight falls inside the hour
        if clock.now() < start:
            clock.wait_until(start)
        _, refusal = _until_refused([gw], rolling["key"])
        assert "rolling 1-hour limit" in refusal, refusal
        refused_at = clock.now()
        spent = _recorded(gw, "/v1/manage/budget/" + budget["id"], gw.db_url, rolling["id"],
                          refused_at - dt.timedelta(hours=1))
        assert spent > Decimal("0.1")
        gw.stop()
        gw.start()  # a new process: both windows' spend from the ledger (SQLite)
        assert _ask(gw, daily["key"])[0] == 402 and _ask(gw, rolling["key"])[0] == 402
        assert Decimal(gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"]) == spent
        assert clock.now() < midnight - dt.timedelta(minutes=2), "the test ran late: midnight came first"

        clock.wait_until(midnight + dt.timedelta(minutes=1))
        assert _ask(gw, daily["key"])[0] == 200  # a new day
        status, rec = gw.get("/v1/manage/apikey/" + daily["id"])
        assert rec["window_start"] == "2026-12-08T23:00:00+00:00" and Decimal(rec["monthly_spend"]) > 0, rec
        status, body = _ask(gw, rolling["key"])  # the rolling hour knows no midnight
        assert status == 402 and "rolling 1-hour limit" in body["error"]["message"], body
        assert Decimal(gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"]) == spent

        clock.wait_until(refused_at + dt.timedelta(hours=1, minutes=6))  # every slot of then has aged out
        status, rec = gw.get("/v1/manage/budget/" + budget["id"])
        assert Decimal(rec["monthly_spend"]) == 0, rec
        assert _ask(gw, rolling["key"])[0] == 200
        assert Decimal(gw.get("/v1/manage/budget/" + budget["id"])[1]["monthly_spend"]) > 0
    finally:
        gw.stop()


def test_a_month_begins_at_local_midnight_and_its_spend_is_loaded_exactly_around_the_utc_month(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """One process on SQLite in Europe/Berlin, its clock 100 times as fast: a key's monthly limit
    starts over at local midnight on 1 January (23:00 UTC, an hour before the UTC month), and a
    monthly budget's spend loaded by a new process (the UTC month's roll-up, plus the local
    month's hour before it read raw) equals the ledger's since local midnight, before the UTC
    month begins and after."""
    clock = FakeClock(dt.datetime(2026, 12, 31, 23, 35, tzinfo=BERLIN), rate=100)
    midnight = dt.datetime(2027, 1, 1, tzinfo=BERLIN)
    gw = Gateway(tmp_path, _config(upstream), env=clock.env).start()
    try:
        status, _, capped = gw.post_json("/v1/manage/apikey", {"name": "capped", "monthly_limit": "0.20",
                                                               "permissions": READER})
        assert status == 201 and capped["period"] == "month", capped
        assert capped["window_start"] == "2026-11-30T23:00:00+00:00", capped
        assert capped["window_end"] == "2026-12-31T23:00:00+00:00", capped
        status, _, counted = gw.post_json("/v1/manage/apikey", {"name": "counted", "permissions": READER})
        budget = _budget(gw, "monthly", counted["id"], "1000", "month")
        assert budget["window_start"] == "2026-11-30T23:00:00+00:00", budget
        _, refusal = _until_refused([gw], capped["key"])
        assert "monthly limit" in refusal, refusal
        assert all(_ask(gw, counted["key"])[0] == 200 for _ in range(3))
        assert clock.now() < midnight - dt.timedelta(minutes=2), "the test ran late: midnight came first"

        clock.wait_until(midnight + dt.timedelta(minutes=2))  # 23:02 UTC: a new local month
        assert _ask(gw, capped["key"])[0] == 200
        status, rec = gw.get("/v1/manage/apikey/" + capped["id"])
        assert rec["window_start"] == "2026-12-31T23:00:00+00:00", rec
        assert all(_ask(gw, counted["key"])[0] == 200 for _ in range(3))
        path = "/v1/manage/budget/" + budget["id"]
        first = _recorded(gw, path, gw.db_url, counted["id"], midnight)
        capped_spend = _recorded(gw, "/v1/manage/apikey/" + capped["id"], gw.db_url, capped["id"], midnight)
        assert first > 0 and capped_spend > 0
        gw.stop()
        gw.start()  # a new process: the local month from the ledger (no UTC month roll-up of it yet)
        assert Decimal(gw.get(path)[1]["monthly_spend"]) == first
        assert Decimal(gw.get("/v1/manage/apikey/" + capped["id"])[1]["monthly_spend"]) == capped_spend
        assert clock.now() < midnight + dt.timedelta(minutes=50), "the test ran late: the UTC month came first"

        clock.wait_until(midnight + dt.timedelta(hours=1, minutes=2))  # the UTC month begins: nothing resets
        assert Decimal(gw.get(path)[1]["monthly_spend"]) == first
        assert all(_ask(gw, counted["key"])[0] == 200 for _ in range(3))
        both = _recorded(gw, path, gw.db_url, counted["id"], midnight)
        assert both > first
        gw.stop()
        gw.start()  # the UTC month's roll-up plus the local hour before it
        assert Decimal(gw.get(path)[1]["monthly_spend"]) == both
        assert Decimal(gw.get("/v1/manage/apikey/" + capped["id"])[1]["monthly_spend"]) == capped_spend
    finally:
        gw.stop()
