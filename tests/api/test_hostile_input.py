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
    _recorded_as_answered(gw, headers, status, body["error"])


def _recorded_as_answered(gw: Gateway, headers: dict[str, str], status: int, error: dict) -> dict:
    """The request's ledger record, asserting it holds the status, error type and code answered."""
    record = gw.log_record(headers["x-request-id"])
    got = (record["status"], record["error"]["type"], record["error"]["code"])
    assert got == (status, error["type"], error.get("code")), (got, error)
    return record


def _events(raw: bytes) -> list[tuple[str | None, dict]]:
    """(event name, data) of each SSE event with JSON data."""
    out = []
    for block in raw.decode().split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and line[6:] != "[DONE]":
                data = json.loads(line[6:])
        if data is not None:
            out.append((name, data))
    return out


_JSON = {"Content-Type": "application/json"}
_ANTHROPIC = {**_JSON, "anthropic-version": "2023-06-01"}
_BIG = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * (5 << 20) + b'"}]}'


def test_client_status_error_type_and_code_equal_the_record_on_every_error_path(gw: Gateway) -> None:
    key = _limited_key(gw)
    small = gw.post_json("/v1/manage/apikey", {"name": "tiny", "monthly_limit": "0.000001"})[2]["key"]
    no_completions = gw.post_json("/v1/manage/apikey",
                                  {"name": "reader", "permissions": {"completions": "none"}})[2]["key"]
    chat = [  # (key, raw body, headers) on /v1/chat/completions
        (key, {"model": "gpt-4o-mini", "messages": HELLO, "request_tags": ["bad//tag"]}, _JSON),  # 400 tag
        (key, {"model": "no-such-model", "messages": HELLO}, _JSON),  # 404
        (key, {"model": "gpt-4o-mini", "messages": "nope"}, _JSON),  # 400 field
        (key, {"messages": HELLO}, _JSON),  # 400 no model
        (key, b"{not json", _JSON),  # 400 invalid_json
        (key, b"", _JSON),  # 400 empty body
        (key, {"model": "gpt-4o-mini", "messages": HELLO}, {"Content-Type": "text/plain"}),  # 400 media type
        (key, _BIG, _JSON),  # 413
        (no_completions, {"model": "gpt-4o-mini", "messages": HELLO}, _JSON),  # 403
        (key, {"model": "fail-400", "messages": HELLO}, _JSON),  # upstream 400
        (key, {"model": "fail-401", "messages": HELLO}, _JSON),  # upstream auth -> 502
        (key, {"model": "fail-429", "messages": HELLO}, _JSON),  # 429
        (key, {"model": "fail-429", "messages": HELLO, "stream": True}, _JSON),  # 429 before the stream
        (key, {"model": "fail-500", "messages": HELLO}, _JSON),  # 502
        (key, {"model": "fail-503", "messages": HELLO, "stream": True}, _JSON),  # 503
        (key, {"model": "slow-3000", "messages": HELLO}, _JSON),  # 504
        (key, {"model": "reset", "messages": HELLO}, _JSON),  # 502
        (key, {"model": "garbage", "messages": HELLO}, _JSON),  # 502
        (key, {"model": "refused", "messages": HELLO}, _JSON),  # 502 connect
        (key, {"model": "claude-fail-429", "messages": HELLO}, _JSON),  # 429 from Anthropic, translated
        (small, {"model": "priced", "messages": HELLO}, _JSON),  # 402
    ]
    seen = set()
    for secret, payload, headers in chat:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, answer_headers, body = gw.request("POST", "/v1/chat/completions", raw, secret, headers)
        assert status >= 400, body[:300]
        _recorded_as_answered(gw, answer_headers, status, json.loads(body)["error"])
        seen.add(status)
    assert seen >= {400, 402, 403, 404, 413, 429, 502, 504}

    responses = [
        {"model": "gpt-4o-mini"},  # 400 input
        {"model": "no-such-model", "input": "hi"},  # 404
        {"model": "fail-429", "input": "hi"},  # 429, native
        {"model": "slow-3000", "input": "hi", "stream": True},  # 504 before the stream
        {"model": "claude-fail-500", "input": "hi"},  # 502, translated
        {"model": "refused", "input": "hi"},  # 502 connect
    ]
    for payload in responses:
        status, headers, body = gw.request("POST", "/v1/responses", json.dumps(payload).encode(), key, _JSON)
        assert status >= 400, body[:300]
        _recorded_as_answered(gw, headers, status, json.loads(body)["error"])

    messages = [  # Anthropic's error type for the status; the gateway's code, as recorded
        (key, {"model": "claude", "messages": HELLO}),  # 400 max_tokens
        (key, {"model": "no-such-model", "messages": HELLO, "max_tokens": 5}),  # 404
        (key, {"model": "claude-fail-429", "messages": HELLO, "max_tokens": 5}),  # 429, native
        (key, {"model": "claude-slow-3000", "messages": HELLO, "max_tokens": 5, "stream": True}),  # 504
        (key, {"model": "fail-500", "messages": HELLO, "max_tokens": 5}),  # 502, translated
        (no_completions, {"model": "claude", "messages": HELLO, "max_tokens": 5}),  # 403
        (small, {"model": "priced", "messages": HELLO, "max_tokens": 5}),  # 402
    ]
    anthropic_types = {400: "invalid_request_error", 402: "billing_error", 403: "permission_error",
                       404: "not_found_error", 429: "rate_limit_error", 502: "api_error", 504: "timeout_error"}
    for secret, payload in messages:
        status, headers, body = gw.request("POST", "/v1/messages", json.dumps(payload).encode(), secret, _ANTHROPIC)
        error = json.loads(body)["error"]
        assert error["type"] == anthropic_types[status], (status, error)
        record = gw.log_record(headers["x-request-id"])
        assert (record["status"], record["error"]["code"]) == (status, error.get("code")), (record, error)
        assert status == 400 or record["error"]["code"], record  # a code wherever the gateway has one

    # Failing midway: the HTTP status (200) was sent with the first bytes; the in-band error event
    # carries the type and code the record holds (its status says the stream failed, 502).
    for path, payload, headers in (
        ("/v1/chat/completions", {"model": "cut-stream", "messages": HELLO, "stream": True}, _JSON),
        ("/v1/responses", {"model": "cut-stream", "input": "hi", "stream": True}, _JSON),
        ("/v1/responses", {"model": "claude-cut-stream", "input": "hi", "stream": True}, _JSON),
        ("/v1/messages", {"model": "claude-cut-stream", "messages": HELLO, "max_tokens": 5, "stream": True},
         _ANTHROPIC),
        ("/v1/messages", {"model": "cut-stream", "messages": HELLO, "max_tokens": 5, "stream": True}, _ANTHROPIC),
    ):
        status, answer_headers, raw = gw.request("POST", path, json.dumps(payload).encode(), key, headers)
        assert status == 200, raw[:300]
        name, last = _events(raw)[-1]
        record = gw.log_record(answer_headers["x-request-id"])
        assert record["partial"] is True and record["status"] == 502, record
        if path == "/v1/responses":  # Responses' error event: {"type": "error", "code", "message"}
            assert name == "error" and last["code"] == record["error"]["code"], (last, record["error"])
        elif path == "/v1/messages":
            assert name == "error" and last["error"]["type"] == "api_error", last
            assert last["error"]["code"] == record["error"]["code"], (last, record["error"])
        else:
            error = last["error"]
            assert (error["type"], error["code"]) == (record["error"]["type"], record["error"]["code"]), error


def test_refusals_before_authentication_leave_no_record(gw: Gateway) -> None:
    """401s (no key, a wrong one) are answered before there is anyone to record them for."""
    ids = []
    for secret in (None, "tg-not-a-key", "sk-whatever"):
        for path in ("/v1/chat/completions", "/v1/messages"):
            status, headers, body = gw.request("POST", path, json.dumps({"model": "gpt-4o-mini", "messages": HELLO,
                                                                         "max_tokens": 5}).encode(), secret, _ANTHROPIC)
            assert status == 401, body[:300]
            ids.append(headers["x-request-id"])
    status, headers, _ = _chat(gw, ADMIN_KEY, {"model": "gpt-4o-mini", "messages": HELLO})
    gw.log_record(headers["x-request-id"])  # written after the 401s: they would be in by now
    for rid in ids:
        assert gw.get(f"/v1/logs/{rid}")[0] == 404, rid


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
            assert (record["status"], record["error"]["type"], record["error"]["code"]) == (
                503, "server_error", "request_cancelled"), record
        assert json.loads(plain[2])["error"]["type"] == "server_error"
    finally:
        gw.stop()
    assert "Internal Server Error" not in plain[2].decode()
    assert "Exception in ASGI" not in gw.log()  # answered and recorded: no crash logged


def test_quoted_path_with_nul_does_not_reach_the_database(gw: Gateway) -> None:
    status, _, body = gw.request("DELETE", "/v1/manage/apikey/" + quote("\x00"))
    assert status == 400 and json.loads(body)["error"]["param"] == "path"
