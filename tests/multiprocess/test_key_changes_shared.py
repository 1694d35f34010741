"""A key revoked, or denied completions, through one gateway stops working on every gateway on
PostgreSQL + Redis for the next request: the request that found its process's keys stale (the
shared version moved) used to be served by the key as it was before the change."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.multiprocess.budgets import HELLO, burst, every_answer_recorded, make_gateway, make_key
from tests.postgres import PostgresInstance
from tests.redis import RedisServer


def _ask(gw: Gateway, key: str, path: str) -> tuple[int, dict]:
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": HELLO}
    status, _, answer = gw.post_json(path, body, key=key, headers={"x-api-key": key})
    return status, answer


def test_a_key_revoked_or_denied_on_one_gateway_is_refused_by_the_other_at_once(
        tmp_path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer) -> None:
    one = make_gateway(tmp_path / "one", upstream, pg, rds).start()
    two = make_gateway(tmp_path / "two", upstream, pg, rds).start()
    try:
        for trial, path in enumerate(("/v1/chat/completions", "/v1/messages") * 2):
            key = make_key(one, f"doomed-{trial}")
            for gw in (one, two, two):  # held in both processes' memory
                status, answer = _ask(gw, key["key"], path)
                assert status == 200, answer
            if trial < 2:
                status, _, raw = one.request("DELETE", f"/v1/manage/apikey/{key['id']}")
                want, code = 401, "revoked_api_key"
            else:
                status, _, raw = one.request("PUT", f"/v1/manage/apikey/{key['id']}",
                                             json.dumps({"permissions": {"completions": "none"}}).encode(),
                                             headers={"Content-Type": "application/json"})
                want, code = 403, "insufficient_permissions"
            assert status == 200, raw
            status, answer = _ask(two, key["key"], path)  # the first request after the change
            assert status == want, (path, answer)
            assert answer["error"]["code"] == code, answer
            if path == "/v1/messages":
                assert answer["type"] == "error", answer
    finally:
        one.stop()
        two.stop()


def test_a_key_revoked_on_one_gateway_cannot_read_or_manage_on_the_other_at_once(
        tmp_path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer) -> None:
    one = make_gateway(tmp_path / "one", upstream, pg, rds).start()
    two = make_gateway(tmp_path / "two", upstream, pg, rds).start()
    try:
        status, _, manager = one.post_json("/v1/manage/apikey", {
            "name": "manager", "permissions": {"completions": "write", "manage": "write"}})
        assert status == 201, manager
        for path in ("/v1/key", "/v1/manage/budget"):
            assert two.get(path, key=manager["key"])[0] == 200  # held in the other process's memory
        status, _, raw = one.request("DELETE", f"/v1/manage/apikey/{manager['id']}")
        assert status == 200, raw
        for path in ("/v1/key", "/v1/manage/budget"):
            status, body = two.get(path, key=manager["key"])
            assert status == 401 and body["error"]["code"] == "revoked_api_key", (path, body)
        status, _, body = two.post_json("/v1/manage/apikey", {"name": "escalated"}, key=manager["key"])
        assert status == 401, body
    finally:
        one.stop()
        two.stop()


def test_a_key_revoked_on_one_gateway_cannot_list_models_on_the_other_at_once(
        tmp_path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer) -> None:
    one = make_gateway(tmp_path / "one", upstream, pg, rds).start()
    two = make_gateway(tmp_path / "two", upstream, pg, rds).start()
    try:
        key = make_key(one, "lister")
        client = openai.OpenAI(base_url=two.base_url, api_key=key["key"], max_retries=0)
        assert [m.id for m in client.models.list()]  # held in the other process's memory
        status, _, raw = one.request("DELETE", f"/v1/manage/apikey/{key['id']}")
        assert status == 200, raw
        with pytest.raises(openai.AuthenticationError) as refused:
            client.models.list()
        assert refused.value.code == "revoked_api_key"
    finally:
        one.stop()
        two.stop()


def test_a_key_created_on_one_gateway_serves_a_burst_on_the_other_at_once(
        tmp_path: Path, upstream: FakeUpstream, pg: PostgresInstance, rds: RedisServer) -> None:
    """The other gateway does not hold the new key yet: the burst's first request looks it up and
    the rest wait for that answer; none is counted as a wrong key (the failed-key throttle
    allows 10 at once from an address, and used to answer the rest 429 too_many_failed_attempts)."""
    one = make_gateway(tmp_path / "one", upstream, pg, rds).start()
    two = make_gateway(tmp_path / "two", upstream, pg, rds).start()
    try:
        for trial in range(3):
            key = make_key(one, f"fresh-{trial}")
            out = burst([two], [key["key"]], 40, concurrency=40)
            assert [s for s, _ in out.answered] == [200] * 36 and out.abandoned == 4, out.bodies
            every_answer_recorded(pg, out)
    finally:
        one.stop()
        two.stop()
