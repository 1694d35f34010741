"""Rate limits enforced by one gateway process (SQLite), over real HTTP: 429 in each API's shape
naming the limit, with `retry-after` and x-ratelimit-* headers that count down; refusals in the
ledger and the metrics; slots in flight released by upstream errors and client disconnects; and
the official SDKs, retries on, completing every request by backing off."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway

HELLO = [{"role": "user", "content": "hello rate limit"}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    config = standard_config(upstream)
    config["models"]["claude-searching"] = {"provider": "anthropic", "model": "hosted-3",  # 3 web searches
                                            "context_window": 200000}
    gw = InProcessGateway(tmp_path_factory.mktemp("rl"), config).start()
    yield gw
    gw.stop()


def _limited_key(gateway: Gateway, name: str, **limits: int) -> str:
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": name, "labels": {"rl": name}})
    assert status == 201, key
    status, _, rec = gateway.post_json("/v1/manage/ratelimit", {"name": name, "scope": {"key": key["id"]}, **limits})
    assert status == 201, rec
    return str(key["key"])


def _chat(gateway: Gateway, key: str, model: str = "gpt-4o-mini", **extra: object) -> tuple[int, dict, dict]:
    status, headers, raw = gateway.request("POST", "/v1/chat/completions",
                                           json.dumps({"model": model, "messages": HELLO, **extra}).encode(), key,
                                           {"Content-Type": "application/json"})
    return status, headers, json.loads(raw)


def test_requests_past_the_limit_get_an_openai_429_and_the_headers_count_down(gateway: Gateway) -> None:
    key = _limited_key(gateway, "rpm-two", requests_per_minute=2)
    remaining = []
    for _ in range(2):
        status, headers, _ = _chat(gateway, key)
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "2"
        remaining.append(headers["x-ratelimit-remaining-requests"])
        assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["1", "0"]
    status, headers, answer = _chat(gateway, key)
    assert status == 429, answer
    error = answer["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "'rpm-two'" in error["message"] and "2 requests per minute" in error["message"]
    assert 50 <= int(headers["retry-after"]) <= 60 and int(headers["retry-after-ms"]) > 50_000
    record = gateway.log_record(headers["x-request-id"])
    assert record["status"] == 429 and record["error"]["code"] == "rate_limit_exceeded"
    with gateway_metrics(gateway) as text:
        assert any(line.startswith("tallygate_refusals_total{") and 'code="rate_limit_exceeded"' in line
                   and 'endpoint="chat"' in line and not line.endswith(" 0.0") for line in text)


class gateway_metrics:  # noqa: N801 - reads like a function
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __enter__(self) -> list[str]:
        status, _, raw = self.gateway.request("GET", "/metrics")
        assert status == 200
        return raw.decode().splitlines()

    def __exit__(self, *exc: object) -> None:
        return None


def test_messages_refusal_is_anthropic_shaped(gateway: Gateway) -> None:
    key = _limited_key(gateway, "messages-one", requests_per_minute=1)
    body = json.dumps({"model": "claude", "max_tokens": 16, "messages": HELLO}).encode()
    statuses = []
    for _ in range(2):
        status, headers, raw = gateway.request("POST", "/v1/messages", body, None,
                                               {"x-api-key": key, "content-type": "application/json",
                                                "anthropic-version": "2023-06-01"})
        statuses.append(status)
    assert statuses == [200, 429]
    answer = json.loads(raw)
    assert answer["type"] == "error" and answer["error"]["type"] == "rate_limit_error"
    assert "'messages-one'" in answer["error"]["message"] and "retry-after" in headers
    assert gateway.log_record(headers["x-request-id"])["error"]["code"] == "rate_limit_exceeded"


def test_tokens_per_minute_refuses_a_request_larger_than_the_limit_and_settles_actual_usage(
        gateway: Gateway) -> None:
    key = _limited_key(gateway, "tpm", tokens_per_minute=2000)
    status, headers, answer = _chat(gateway, key, max_tokens=4000)
    assert status == 429 and answer["error"]["type"] == "tokens" and "retry-after" not in headers
    assert "max_tokens" in answer["error"]["message"]
    # Reserved as the worst case (1,000 output tokens and a token a byte of the body, ~1,060) while
    # in flight, settled to the few it used: many more than two such requests fit in the minute.
    for _ in range(4):
        status, headers, answer = _chat(gateway, key, max_tokens=1000)
        assert status == 200, answer
    assert int(headers["x-ratelimit-remaining-tokens"]) > 2000 - 1250


def test_provider_run_tools_count_their_passes_and_results_against_tokens_per_minute(gateway: Gateway) -> None:
    """A web search's results come back as input and every further pass reads the prompt again:
    the worst case admitted counts them, so no request's actual usage passes the limit."""
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": "tpm-tools"})
    assert status == 201, key
    status, _, rule = gateway.post_json("/v1/manage/ratelimit", {"name": "tpm-tools", "scope": {"key": key["id"]},
                                                                 "tokens_per_minute": 4000})
    assert status == 201, rule
    body = {"model": "claude-searching", "max_tokens": 100, "messages": HELLO,
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}
    status, _, answer = gateway.request("POST", "/v1/messages", json.dumps(body).encode(), key["key"],
                                        {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    assert status in (200, 429), answer[:300]
    status, usage = gateway.get(f"/v1/manage/ratelimit/usage?key={key['id']}")
    assert status == 200, usage
    [counted] = [lim["usage"]["tokens"] for lim in usage["limits"]]
    assert counted <= 4000, (counted, answer[:300])  # the fake billed 3 x 1,500 tokens of results


def test_slots_in_flight_are_released_by_upstream_errors_and_disconnects(gateway: Gateway) -> None:
    key = _limited_key(gateway, "one-at-a-time", max_concurrent=1)
    for _ in range(3):  # each failed upstream call gives its slot back
        status, _, answer = _chat(gateway, key, model="fail-500")
        assert status == 502, answer
    # A client that goes away in the middle of a slow stream gives its slot back too.
    body = json.dumps({"model": "slowstream", "stream": True, "messages": HELLO}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        status, _, answer = _chat(gateway, key)  # while it streams: refused
        assert status == 429 and "requests in flight" in answer["error"]["message"]
    deadline = time.monotonic() + 5
    while (status := _chat(gateway, key)[0]) == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_openai_sdk_with_retries_completes_every_request_by_backing_off(gateway: Gateway) -> None:
    key = _limited_key(gateway, "sdk-openai", max_concurrent=1)
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=10, timeout=10) as client:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: client.chat.completions.with_raw_response.create(
                model="priced-slow", messages=HELLO, max_tokens=5), range(4)))
    assert all(a.http_response.status_code == 200 for a in answers)
    assert sum(a.retries_taken for a in answers) >= 3  # they were refused, waited and came back


def test_anthropic_sdk_with_retries_completes_every_request_by_backing_off(gateway: Gateway) -> None:
    key = _limited_key(gateway, "sdk-anthropic", max_concurrent=1)
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=10, timeout=10) as client:
        def one(_: int) -> tuple[str, int]:
            with client.messages.with_streaming_response.create(
                    model="claude-slowstream", max_tokens=5, messages=HELLO, stream=True) as response:
                text = "".join(response.iter_text())
                return text, response.retries_taken

        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(one, range(3)))
    assert all("message_stop" in text for text, _ in answers)
    assert sum(retries for _, retries in answers) >= 2


def test_requests_per_second_refuse_within_the_second_and_the_sdk_backs_off_under_a_second(
        gateway: Gateway) -> None:
    key = _limited_key(gateway, "rps-two", requests_per_second=2, requests_per_minute=100)
    started = time.monotonic()
    answers = [_chat(gateway, key) for _ in range(4)]
    if time.monotonic() - started < 0.9:  # four sent within the second: two admitted
        assert [status for status, _, _ in answers] == [200, 200, 429, 429]
        status, headers, body = answers[2]
        assert body["error"]["code"] == "rate_limit_exceeded" and "2 requests per second" in body["error"]["message"]
        assert headers["retry-after"] == "1" and 0 < int(headers["retry-after-ms"]) <= 1000
        assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
    assert answers[1][1]["x-ratelimit-limit-requests"] == "2"  # the tightest: the second's, not the minute's
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=10, timeout=10) as client:
        served = [client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)
                  for _ in range(6)]
    assert all(a.http_response.status_code == 200 for a in served)
    assert sum(a.retries_taken for a in served) >= 1  # refused within a second, retried after it


def test_a_model_limit_binds_every_key_naming_the_model(gateway: Gateway) -> None:
    status, _, rec = gateway.post_json("/v1/manage/ratelimit", {
        "name": "local model", "scope": {"model": "local-llama"}, "requests_per_minute": 2})
    assert status == 201
    a, b = gateway.create_key("model-a"), gateway.create_key("model-b")
    assert [_chat(gateway, k, model="local-llama")[0] for k in (a, b, a)] == [200, 200, 429]
    assert _chat(gateway, a)[0] == 200  # another model is not limited
    gateway.request("DELETE", f"/v1/manage/ratelimit/{rec['id']}", key=ADMIN_KEY)


def _refusal(call: object) -> tuple[str, dict, object]:
    """The message, headers and whole body of the 429 an SDK call (retries off) raises."""
    try:
        call()  # type: ignore[operator]
    except (openai.RateLimitError, anthropic.RateLimitError) as err:
        return str(err.message), dict(err.response.headers), err.body
    raise AssertionError("the request was not refused")


def test_a_refusal_names_a_limit_only_to_callers_who_may_read_it(gateway: Gateway) -> None:
    # As budgets' 402 (issue 20): a key's own limit in full; a tag, label or model limit only
    # to `manage: read`; to anyone else only which part of the request a limit refused.
    status, _, rec = gateway.post_json("/v1/manage/ratelimit", {
        "name": "secret-tag-limit", "scope": {"tag": "rlsecret"}, "requests_per_minute": 1})
    assert status == 201, rec
    plain = gateway.create_key("rl-plain")
    status, _, reader = gateway.post_json("/v1/manage/apikey", {
        "name": "rl-reader", "permissions": {"completions": "write", "manage": "read"}})
    assert status == 201, reader
    tags = {"X-Request-Tags": "rlsecret/team"}
    anthropic_headers = {**tags, "anthropic-version": "2023-06-01"}
    try:
        with openai.OpenAI(base_url=gateway.base_url, api_key=plain, max_retries=0, timeout=10) as client:
            def chat() -> object:
                return client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,  # type: ignore[arg-type]
                                                      extra_headers=tags)
            chat()
            message, headers, body = _refusal(chat)
        for text in (message, json.dumps(body)):
            assert "secret-tag-limit" not in text and rec["id"] not in text and "rlsecret" not in text, text
        assert "a rate limit on this request's tags allows 1 requests per minute" in message
        assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-limit-requests"] == "1"
        with anthropic.Anthropic(base_url=gateway.url, api_key=plain, max_retries=0, timeout=10) as claude:
            message, headers, body = _refusal(lambda: claude.messages.create(
                model="claude", max_tokens=16, messages=HELLO, extra_headers=anthropic_headers))  # type: ignore[arg-type]
        assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error"
        assert "secret-tag-limit" not in json.dumps(body) and rec["id"] not in json.dumps(body)
        assert "this request's tags" in message and "retry-after" in headers
        # A caller with `manage: read` may read every rate limit: it is told which one, by id.
        with openai.OpenAI(base_url=gateway.base_url, api_key=reader["key"], max_retries=0, timeout=10) as client:
            message, _, _ = _refusal(lambda: client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, extra_headers=tags))  # type: ignore[arg-type]
        assert "'secret-tag-limit' (tag rlsecret)" in message and f"rate limit id {rec['id']}" in message
        with anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0, timeout=10) as claude:
            message, _, _ = _refusal(lambda: claude.messages.create(
                model="claude", max_tokens=16, messages=HELLO, extra_headers=anthropic_headers))  # type: ignore[arg-type]
        assert f"rate limit id {rec['id']}" in message and "secret-tag-limit" in message
    finally:
        gateway.request("DELETE", f"/v1/manage/ratelimit/{rec['id']}", key=ADMIN_KEY)
    # A key refused by a limit on itself reads that limit in full, with its id.
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": "own-key-limit"})
    assert status == 201, key
    own = key["key"]
    status, _, mine = gateway.post_json("/v1/manage/ratelimit", {
        "name": "own-key-limit", "scope": {"key": key["id"]}, "requests_per_minute": 1})
    assert status == 201, mine
    own_id = mine["id"]
    with openai.OpenAI(base_url=gateway.base_url, api_key=own, max_retries=0, timeout=10) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
        message, headers, _ = _refusal(lambda: client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO))  # type: ignore[arg-type]
    assert "'own-key-limit'" in message and f"rate limit id {own_id}" in message
    assert headers["x-ratelimit-remaining-requests"] == "0"
