"""Refusals are answered before any provider is called, and recorded as what they were: the
error code the client got, the model it named, and whether it asked for a stream; a request whose endpoint does not
match its model's kind is one of them (a 400 naming `model`)."""

from __future__ import annotations

import json

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway


def _post(gw: Gateway, key: str, path: str, body: dict) -> tuple[int, dict, str]:
    status, headers, raw = gw.request("POST", path, json.dumps(body).encode(), key=key,
                                      headers={"Content-Type": "application/json"})
    return status, json.loads(raw), headers["x-request-id"]


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "embed", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "embed", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "embed", "input": "hi"}),
    ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "hi"}),
], ids=["chat", "messages", "responses", "embeddings"])
def test_endpoint_that_does_not_match_the_model_kind_is_a_400_naming_model(
        gateway: Gateway, api_key: str, upstream: FakeUpstream, path: str, body: dict) -> None:
    upstream.clear()
    streamed = body if path == "/v1/embeddings" else {**body, "stream": True}
    status, answer, rid = _post(gateway, api_key, path, streamed)
    assert status == 400, answer
    error = answer["error"]  # OpenAI's shape names the param; Anthropic's (/v1/messages) has none
    assert error.get("param", "model") == "model" and repr(body["model"]) in error["message"]
    assert error["code"] == "model_kind_mismatch"
    assert upstream.requests == []  # refused before any provider saw it
    record = gateway.log_record(rid)
    assert record["status"] == 400 and record["error"]["code"] == "model_kind_mismatch"


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/v1/chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
     404, "model_not_found"),
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": []}, 400, "invalid_request"),
    ("/v1/messages", {"model": "claude", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]},
     400, "invalid_request"),
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                              "request_tags": ["bad//tag"]}, 400, "invalid_request_tag"),
], ids=["unknown-model", "no-messages", "messages-max-tokens", "bad-tag"])
def test_streamed_request_refused_is_recorded_as_a_stream_with_its_code(
        gateway: Gateway, api_key: str, path: str, body: dict, status: int, code: str) -> None:
    got, answer, rid = _post(gateway, api_key, path, {**body, "stream": True})
    assert got == status, answer
    record = gateway.log_record(rid)
    assert record["stream"] is True and record["status"] == status
    assert record["error"]["code"] == code
    assert record["requested_model"] == body["model"]  # the Logs' model filter finds it, bad tags or not


def test_budget_refusal_of_a_stream_is_recorded_as_a_stream(gateway: Gateway) -> None:
    status, _, created = gateway.post_json("/v1/manage/apikey", {"name": "tiny-stream", "monthly_limit": "0.000001"})
    assert status == 201, created
    got, answer, rid = _post(gateway, created["key"], "/v1/chat/completions", {
        "model": "gpt-4o-mini", "stream": True, "max_tokens": 4000, "messages": [{"role": "user", "content": "hi"}]})
    assert got == 402 and answer["error"]["code"] == "budget_exceeded"
    record = gateway.log_record(rid)
    assert record["stream"] is True and record["error"]["code"] == "budget_exceeded"
