"""A budget given another scope through one gateway binds every gateway on PostgreSQL + Redis by
the new scope's spend, at once: the shared counters held the old scope's."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.multiprocess.budgets import HELLO, make_gateway, make_key
from tests.postgres import PostgresInstance
from tests.redis import RedisServer


def _chat(gw: Gateway, key: str, tag: str) -> tuple[int, dict]:
    status, _, body = gw.post_json("/v1/chat/completions", {"model": "priced", "max_tokens": 10, "messages": HELLO,
                                                            "request_tags": [tag]}, key=key)
    return status, body


def _spend(gw: Gateway, tag: str) -> Decimal:
    status, doc = gw.get(f"/v1/analytics/usage?tag={tag}")
    assert status == 200, doc
    return Decimal(doc["totals"]["cost"])


def test_a_budget_moved_on_one_gateway_binds_the_other_by_the_new_scope(
        tmp_path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer) -> None:
    one = make_gateway(tmp_path / "one", upstream, pg, rds).start()
    two = make_gateway(tmp_path / "two", upstream, pg, rds).start()
    try:
        key = make_key(one, "mover")["key"]
        last = ""
        for tag, n in (("shared/quiet", 2), ("shared/busy", 20)):
            for i in range(n):
                status, body = _chat((one, two)[i % 2], key, tag)
                assert status == 200, body
                last = body["id"]
        for gw in (one, two):
            gw.log_record(last, timeout=10)
        quiet, busy = _spend(one, "shared/quiet"), _spend(one, "shared/busy")

        status, _, budget = one.post_json("/v1/manage/budget", {"name": "moving", "scope": {"tag": "shared/quiet"},
                                                                "monthly_limit": "0.15"})
        assert status == 201, budget
        status, _, raw = one.request("PUT", f"/v1/manage/budget/{budget['id']}",
                                     json.dumps({"scope": {"tag": "shared/busy"}}).encode(),
                                     headers={"Content-Type": "application/json"})
        assert status == 200, raw
        assert Decimal(json.loads(raw)["monthly_spend"]) == busy
        status, body = _chat(two, key, "shared/busy")  # the other process, at once
        assert status == 402, body
        status, seen = two.get(f"/v1/manage/budget/{budget['id']}")
        assert status == 200 and Decimal(seen["monthly_spend"]) == busy, seen
        assert _spend(one, "shared/busy") == busy
        assert quiet < busy
    finally:
        one.stop()
        two.stop()
