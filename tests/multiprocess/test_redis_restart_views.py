"""Redis killed (its state lost: no persistence) and started again mid-burst, under three
`tallygate serve` processes on one PostgreSQL: spend passes a limit by at most the documented
bound, and right afterwards every view of spend (the key, the budget, `/v1/key`) is rebuilt from
the ledger, never a silent 0, and then equals it (settles queued across the restart are not
counted twice); the drift metric reads 0."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.multiprocess.budgets import (
    HOLD_TTL_S,
    burst,
    counter_drift,
    every_answer_recorded,
    ledger_spend,
    make_budget,
    make_key,
    worst_case,
)
from tests.postgres import PostgresInstance
from tests.redis import RedisServer, redis_server

LIMIT = Decimal("0.40")
ALLOWANCE = Decimal("0.10")  # TALLYGATE_BUDGETS_OPEN_ALLOWANCE: served unenforced per scope and process
CONCURRENCY = 20


@pytest.fixture()
def rds() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _views(gws: list[Gateway], key: dict, budget_id: str) -> list[str | None]:
    """Every view of the key's spend on every process (the budget binds this key alone)."""
    seen = []
    for gw in gws:
        seen.append(gw.get("/v1/manage/apikey/" + key["id"])[1]["monthly_spend"])
        seen.append(gw.get("/v1/manage/budget/" + budget_id)[1]["monthly_spend"])
        seen.append(gw.get("/v1/key", key=key["key"])[1]["monthly_spend"])
    return seen


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_redis_restarted_mid_burst_bounds_spend_and_views_are_rebuilt(
        upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer, tmp_path: Path, mode: str) -> None:
    config = standard_config(upstream)
    for provider in config["providers"].values():
        provider["timeout_s"] = 15.0
    env = {"TALLYGATE_HOLD_TTL_S": str(HOLD_TTL_S), "TALLYGATE_BUDGETS_OPEN_ALLOWANCE": str(ALLOWANCE)}
    gws: list[Gateway] = []
    try:
        for i in range(3):
            (tmp_path / str(i)).mkdir()
            gws.append(Gateway(tmp_path / str(i), config, env=env, db_url=pg.url,
                               args=("--redis", rds.url, "--budgets-unavailable", mode)).start())
        run = uuid.uuid4().hex[:8]
        key = make_key(gws[0], f"restart-{run}", {"team": run}, limit=str(LIMIT))
        budget = make_budget(gws[1], {"label": {"team": run}}, str(LIMIT))
        out = burst(gws, [key["key"]], 300, concurrency=CONCURRENCY, during=lambda: rds.restart(down_s=0.5),
                    pace_s=0.01)
        right_after = _views(gws, key, budget["id"])
        assert out.status(200) >= 10 and 503 not in [s for s, _ in out.answered[-60:]]
        if mode == "closed":
            assert out.status(503) > 0  # refused while Redis was away: the restart fell inside the burst
        every_answer_recorded(pg, out)
        ledger = ledger_spend(pg, [key["id"]])
        # The documented bound: the holds of requests in flight when Redis lost its state, and with
        # `open` the allowance served unenforced by each process (docs/deploy.md).
        bound = LIMIT + CONCURRENCY * worst_case(out) + (len(gws) * ALLOWANCE if mode == "open" else 0)
        assert ledger <= bound
        assert ledger > 0 and None not in right_after and "0" not in right_after, right_after
        deadline = time.monotonic() + 15  # settles in flight, the ledger's writers, the rebuild's second pass
        while True:  # every view on every process equals the ledger once settled
            views, ledger = _views(gws, key, budget["id"]), ledger_spend(pg, [key["id"]])  # (abandoned ones come late)
            if {None if v is None else Decimal(v) for v in views} == {ledger}:
                break
            assert time.monotonic() < deadline, (views, ledger)
            time.sleep(0.2)
        assert counter_drift(gws[2]) == 0  # the reconciliation: no counter above or below the ledger
    finally:
        for gw in gws:
            gw.stop()
