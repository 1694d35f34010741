"""Every hostile input an adversary found is a clear 400 naming the field (or is handled), on
SQLite and on PostgreSQL; records keep any text; the client sees what the ledger says; provider
secrets and internal addresses never reach a client."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway
from tests.postgres import postgres_server

HELLO = [{"role": "user", "content": "hi"}]
PROVIDER_KEY = "token-9f8e7d6c5b4a3210ffee"   # not shaped like sk-...: only by-value scrubbing finds it
PROVIDER_ORG = "org-internal-77775555"
AWS_LIKE = "AKIAIOSFODNN7EXAMPLE"


class LeakyUpstream(FakeUpstream):
    """A provider that quotes its credentials, internal URLs and a NUL back, and sends
    `retry-after` values no client should see."""

    async def _serve(self, request: web.Request, body: dict, api: str) -> web.StreamResponse:
        model = body.get("model", "")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if model == "leak-400":
            message = (f"invalid key {token} for {request.headers.get('X-Org')}; see "
                       f"http://10.1.2.3:8000/internal/debug ({AWS_LIKE})\x00 end")
            return web.json_response({"error": {"message": message, "type": "invalid_request_error"}},
                                     status=400)
        if model in ("inf-429", "huge-429"):
            return web.json_response({"error": {"message": "slow down"}}, status=429,
                                     headers={"retry-after": "inf" if model == "inf-429" else "1e308"})
        if model == "leak-200":
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"your key is {token}"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}})
        return await super()._serve(request, body, api)


@pytest.fixture(scope="module")
def leaky() -> Iterator[LeakyUpstream]:
    with LeakyUpstream() as up:
        yield up


def _config(upstream: FakeUpstream, leaky: LeakyUpstream) -> dict:
    cfg = standard_config(upstream)
    cfg["providers"]["leaky"] = {"type": "openai", "base_url": leaky.base_url, "api_key": "env:LEAKY_KEY",
                                 "headers": {"X-Org": "env:LEAKY_ORG"}}
    for name in ("leak-400", "inf-429", "huge-429", "leak-200"):
        cfg["models"][name] = {"provider": "leaky", "model": name}
    return cfg


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request, upstream, leaky, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    env = {"LEAKY_KEY": PROVIDER_KEY, "LEAKY_ORG": PROVIDER_ORG}
    if request.param == "sqlite":
        g = Gateway(tmp_path_factory.mktemp("hostile"), _config(upstream, leaky), env=env).start()
        yield g
        g.stop()
        return
    with postgres_server() as url:
        g = Gateway(tmp_path_factory.mktemp("hostile-pg"), _config(upstream, leaky),
                    env={**env, "TALLYGATE_DB_URL": url})
        g.db_url = url
        g.start()
        yield g
        g.stop()


def _chat(gw: Gateway, key: str, payload: object) -> tuple[int, dict[str, str], dict]:
    status, headers, body = gw.request("POST", "/v1/chat/completions", json.dumps(payload).encode(), key,
                                       {"Content-Type": "application/json"})
    return status, headers, json.loads(body)


def _limited_key(gw: Gateway) -> str:
    status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "limited", "monthly_limit": "100"})
    assert status == 201, rec
    return rec["key"]


def test_deeply_nested_chat_body_is_400_even_for_a_limited_key(gw: Gateway) -> None:
    key = _limited_key(gw)
    for depth in (300, 1000, 1020):  # json.dumps cannot even write these: build the bytes
        nested = b"[" * depth + b'"x"' + b"]" * depth
        raw = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ' + nested + b"}]}"
        status, _, body = gw.request("POST", "/v1/chat/completions", raw, key, {"Content-Type": "application/json"})
        assert status == 400 and json.loads(body)["error"]["code"] == "too_deeply_nested", body


@pytest.mark.parametrize("query, param", [
    ("/v1/logs?from=%C2%B2", "from"), ("/v1/logs?to=%D9%A3", "to"),
    ("/v1/logs?from=9999-12-31", "from"), ("/v1/logs?from=0001-01-01T00:00:00%2B23:59", "from"),
    ("/v1/analytics/usage?from=0001-01-01T00:00:00%2B23:59", "from"),
    ("/v1/analytics/usage?to=9999-12-31T23:59:59", "to"), ("/v1/analytics/usage?from=%C2%B2", "from"),
    ("/v1/analytics/tags/tree?from=999999999999999", "from"),
    ("/v1/analytics/export?month=9999-12", "month"),
    ("/v1/analytics/usage?group_by=tag_level.%C2%B2", "group_by"),
    ("/v1/logs?model=a%00b", "model"), ("/v1/logs?key=%00", "key"), ("/v1/logs?tag=a%00", "tag"),
    ("/v1/analytics/usage?key=%00", "key"), ("/v1/manage/apikey/%00", "path"), ("/v1/logs/req%00", "path"),
    ("/v1/logs?" + "&".join(f"label.l{i}=v" for i in range(1000)), "label."),
    ("/v1/manage/apikey?" + "&".join(f"label.l{i}=v" for i in range(1000)), "label."),
    ("/v1/analytics/usage?" + "&".join(f"label.l{i}=v" for i in range(1000)), "label."),
])
def test_bad_query_input_is_400_naming_the_field(gw: Gateway, query: str, param: str) -> None:
    status, headers, body = gw.request("GET", query)
    assert status == 400, (query, body[:300])
    assert json.loads(body)["error"]["param"] == param


def test_nul_in_feedback_is_400_naming_the_field(gw: Gateway) -> None:
    status, _, rid = gw.request("POST", "/v1/chat/completions",
                                json.dumps({"model": "gpt-4o-mini", "messages": HELLO}).encode(),
                                ADMIN_KEY, {"Content-Type": "application/json"})
    rid = json.loads(rid)["id"]
    for payload, param in (({"request_id": rid, "score": 1, "comment": "good\x00"}, "comment"),
                           ({"request_id": "req\x00", "score": 1}, "request_id")):
        status, _, body = gw.post_json("/v1/feedback", payload)
        assert status == 400 and body["error"]["param"] == param, body


def test_provider_text_with_nul_is_recorded_and_secrets_never_reach_the_client(gw: Gateway) -> None:
    status, headers, body = _chat(gw, ADMIN_KEY, {"model": "leak-400", "messages": HELLO})
    assert status == 400
    shown = json.dumps(body)
    record = gw.log_record(headers["x-request-id"])  # recorded: the NUL did not make the database refuse it
    for leaked in (PROVIDER_KEY, PROVIDER_ORG, "10.1.2.3", AWS_LIKE, "\\u0000"):
        assert leaked not in shown and leaked not in json.dumps(record), leaked
    assert "end" in record["error"]["message"]  # the rest of the provider's words are kept
    status, _, body = _chat(gw, ADMIN_KEY, {"model": "leak-200", "messages": HELLO})
    assert status == 200 and PROVIDER_KEY not in json.dumps(body)
    assert "[redacted]" in body["choices"][0]["message"]["content"]


@pytest.mark.parametrize("model", ["inf-429", "huge-429"])
def test_absurd_retry_after_is_capped_and_the_client_gets_what_the_ledger_says(gw: Gateway, model: str) -> None:
    status, headers, body = _chat(gw, ADMIN_KEY, {"model": model, "messages": HELLO})
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert headers.get("retry-after") in (None, "3600")
    record = gw.log_record(headers["x-request-id"])
    assert (record["status"], record["error"]["type"]) == (status, body["error"]["type"])


def test_client_status_and_error_type_equal_the_record_on_every_error_path(gw: Gateway) -> None:
    key = _limited_key(gw)
    small = gw.post_json("/v1/manage/apikey", {"name": "tiny", "monthly_limit": "0.000001"})[2]["key"]
    cases = [
        (key, {"model": "gpt-4o-mini", "messages": HELLO, "request_tags": ["bad//tag"]}),  # 400 tag
        (key, {"model": "no-such-model", "messages": HELLO}),  # 404
        (key, {"model": "gpt-4o-mini", "messages": "nope"}),  # 400 field
        (key, {"model": "fail-400", "messages": HELLO}),  # upstream 400
        (key, {"model": "fail-401", "messages": HELLO}),  # upstream auth -> 502
        (key, {"model": "fail-429", "messages": HELLO}),  # 429
        (key, {"model": "fail-500", "messages": HELLO}),  # 502
        (key, {"model": "slow-3000", "messages": HELLO}),  # 504
        (key, {"model": "reset", "messages": HELLO}),  # 502
        (key, {"model": "garbage", "messages": HELLO}),  # 502
        (key, {"model": "refused", "messages": HELLO}),  # 502 connect
        (small, {"model": "priced", "messages": HELLO}),  # 402
    ]
    seen = set()
    for secret, payload in cases:
        status, headers, body = _chat(gw, secret, payload)
        assert status >= 400, body
        record = gw.log_record(headers["x-request-id"])
        assert (record["status"], record["error"]["type"]) == (status, body["error"]["type"]), payload
        seen.add(status)
    assert seen >= {400, 402, 404, 429, 502, 504}


def test_partial_permissions_change_only_the_fields_named(gw: Gateway) -> None:
    status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "partial", "permissions": {"completions": "none"}})
    status, _, body = gw.request("PUT", f"/v1/manage/apikey/{rec['id']}",
                                 json.dumps({"permissions": {"manage": "read"}}).encode(), ADMIN_KEY,
                                 {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["permissions"] == {"completions": "none", "manage": "read"}


def test_a_key_cannot_change_its_own_labels_but_a_manager_can(gw: Gateway) -> None:
    status, _, manager = gw.post_json("/v1/manage/apikey", {"name": "mgr", "labels": {"team": "a"},
                                                            "permissions": {"manage": "write"}})
    status, _, other = gw.post_json("/v1/manage/apikey", {"name": "other-mgr", "permissions": {"manage": "write"}})
    change = json.dumps({"labels": {"team": "b"}}).encode()
    status, _, body = gw.request("PUT", f"/v1/manage/apikey/{manager['id']}", change, manager["key"],
                                 {"Content-Type": "application/json"})
    assert status == 403 and json.loads(body)["error"]["param"] == "labels"
    status, _, body = gw.request("PUT", f"/v1/manage/apikey/{manager['id']}", change, other["key"],
                                 {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["labels"] == {"team": "b"}
    status, _, body = gw.request("PUT", f"/v1/manage/apikey/{manager['id']}",
                                 json.dumps({"labels": {"team": "c"}}).encode(), ADMIN_KEY,
                                 {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["labels"] == {"team": "c"}


def test_past_the_grace_time_clients_get_the_503_the_ledger_records(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = standard_config(upstream)
    cfg["providers"]["openai"]["timeout_s"] = 30.0
    cfg["models"]["slowstream-3000"] = {"provider": "openai", "model": "slowstream-3000"}
    gw = Gateway(tmp_path, cfg, env={"TALLYGATE_SHUTDOWN_GRACE_S": "1"}).start()
    answers: list[tuple[int, dict[str, str], bytes]] = []
    try:
        for model, stream in (("slow-3000", False), ("slowstream-3000", True)):
            payload = json.dumps({"model": model, "messages": HELLO, "stream": stream}).encode()
            t = threading.Thread(target=lambda p=payload: answers.append(gw.request(
                "POST", "/v1/chat/completions", p, ADMIN_KEY, {"Content-Type": "application/json"})))
            t.start()
            time.sleep(0.5)
            gw.stop(signal.SIGTERM)
            t.join(10)
            gw.start()
        plain, streamed = answers
        assert plain[0] == 503 and json.loads(plain[2])["error"]["code"] == "request_cancelled"
        assert streamed[0] == 200 and b"request_cancelled" in streamed[2]
        for _, headers, _ in answers:
            record = gw.log_record(headers["x-request-id"])
            assert record["status"] == 503 and record["error"]["type"] == "server_error"
    finally:
        gw.stop()
    assert "Internal Server Error" not in plain[2].decode()


def test_quoted_path_with_nul_does_not_reach_the_database(gw: Gateway) -> None:
    status, _, body = gw.request("DELETE", "/v1/manage/apikey/" + quote("\x00"))
    assert status == 400 and json.loads(body)["error"]["param"] == "path"
