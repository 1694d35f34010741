"""The fake upstream against Anthropic's Messages wire format, with raw HTTP."""
from __future__ import annotations

import json

import pytest

from .raw_client import AN_HEADERS, AN_MSGS, anthropic_events, fetch, msg, post


def test_anthropic_json(up):
    status, headers, raw = post(up, "/v1/messages", msg("cached-50", system="You are terse."),
                                headers=AN_HEADERS)
    assert status == 200 and headers["request-id"]
    r = json.loads(raw)
    assert r["type"] == "message" and r["role"] == "assistant" and r["model"] == "cached-50"
    assert r["content"] == [{"type": "text", "text": "Echo: Say hello to the tests"}]
    assert r["stop_reason"] == "end_turn" and r["stop_sequence"] is None
    assert r["usage"]["input_tokens"] == (22 + 14) // 4
    assert r["usage"]["cache_read_input_tokens"] == 50
    assert r["usage"]["cache_creation_input_tokens"] == 0 and r["usage"]["output_tokens"] == 6


def test_anthropic_stream(up):
    status, headers, raw = fetch(up, "/v1/messages", msg("cachewrite-9", stream=True, max_tokens=3),
                                 headers=AN_HEADERS)
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    events = anthropic_events(raw)
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in raw
    names = [e for e, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["cache_creation_input_tokens"] == 9
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == "Echo: Say hello"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("headers,status,type_", [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
    ({"x-api-key": "k"}, 400, "invalid_request_error"),
    ({"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
])
def test_anthropic_headers_required(up, headers, status, type_):
    code, resp_headers, raw = post(up, "/v1/messages", msg(), headers=headers)
    r = json.loads(raw)
    assert code == status and r["type"] == "error" and r["error"]["type"] == type_
    assert resp_headers["request-id"] == r["request_id"]


@pytest.mark.parametrize("body,message", [
    ({"model": "m", "messages": AN_MSGS}, "max_tokens: Field required"),
    (msg(request_tags=["a"]), "request_tags: Extra inputs are not permitted"),
    (msg(stream_options={"include_usage": True}), "stream_options: Extra inputs are not permitted"),
])
def test_anthropic_strict_body(up, body, message):
    status, _, raw = post(up, "/v1/messages", body, headers=AN_HEADERS)
    r = json.loads(raw)
    assert status == 400 and r["error"] == {"type": "invalid_request_error", "message": message}


@pytest.mark.parametrize("code,type_", [(400, "invalid_request_error"), (401, "authentication_error"),
                                        (404, "not_found_error"), (429, "rate_limit_error"),
                                        (500, "api_error"), (503, "api_error"), (529, "overloaded_error")])
def test_anthropic_failures(up, code, type_):
    status, headers, raw = post(up, "/v1/messages", msg(f"fail-{code}"), headers=AN_HEADERS)
    r = json.loads(raw)
    assert status == code and r["type"] == "error" and r["error"]["type"] == type_
    assert headers.get("retry-after") == ("2" if code == 429 else None)
