"""Anthropic replies read as OpenAI Chat Completions (messages, streams, errors), checked against
fixtures shaped like Anthropic's wire data."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tallygate.errors import UpstreamHTTPError, UpstreamProtocolError
from tallygate.providers.anthropic_replies import AnthropicStreamTranslator, anthropic_error, from_anthropic

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-5-20250929"


def fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


def sse_events(name: str) -> list[tuple[str, dict]]:
    """(event, data) pairs from a recorded SSE body."""
    events = []
    for frame in (FIXTURES / name).read_text().strip().split("\n\n"):
        event, data = "", []
        for line in frame.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((event, orjson.loads("\n".join(data))))
    return events


def translate(name: str) -> tuple[AnthropicStreamTranslator, list[dict]]:
    tr = AnthropicStreamTranslator("chatcmpl-abc", 1700000000, "claude-sonnet")
    chunks = [chunk for event, data in sse_events(name) for chunk in tr.feed(event, data)]
    return tr, chunks


# ---------------------------------------------------------------- response


def test_text_message_becomes_chat_completion():
    completion, _ = from_anthropic(fixture("message_text.json"), "chatcmpl-1", 1700000000, "claude-sonnet")
    assert completion == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "claude-sonnet",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Paris is the capital of France.", "refusal": None}}],
        "usage": {"prompt_tokens": 2062, "completion_tokens": 9, "total_tokens": 2071,
                  "prompt_tokens_details": {"cached_tokens": 2048},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def test_cache_reads_and_writes_count_as_prompt_tokens():
    _, read = from_anthropic(fixture("message_text.json"), "id", 0, "m")
    got = (read.input_tokens, read.cached_tokens, read.cache_write_tokens, read.output_tokens)
    assert got == (2062, 2048, 0, 9)
    _, wrote = from_anthropic(fixture("message_tool_use.json"), "id", 0, "m")
    assert (wrote.input_tokens, wrote.cached_tokens, wrote.cache_write_tokens) == (1948, 0, 1536)


def test_tool_use_blocks_become_tool_calls_with_json_string_arguments():
    completion, _ = from_anthropic(fixture("message_tool_use.json"), "id", 0, "m")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll look up the weather in Paris."
    calls = choice["message"]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "function", "get_weather"),
        ("toolu_01B7dK3mXv2pQw8rTz6nYc4e", "function", "get_time"),
    ]
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}


def test_content_is_null_when_the_reply_is_only_tool_calls():
    resp = fixture("message_tool_use.json")
    resp["content"] = resp["content"][1:]
    completion, _ = from_anthropic(resp, "id", 0, "m")
    assert completion["choices"][0]["message"]["content"] is None


def test_thinking_blocks_never_leak_into_content():
    completion, usage = from_anthropic(fixture("message_thinking.json"), "id", 0, "m")
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "27 * 453 = 12,231.",
                                                   "refusal": None}
    assert usage.output_tokens == 188


@pytest.mark.parametrize("stop_reason, finish_reason", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
    (None, "stop"), ("something_new", "stop"),
])
def test_stop_reason_maps_to_openai_finish_reason(stop_reason, finish_reason):
    resp = {**fixture("message_text.json"), "stop_reason": stop_reason}
    completion, _ = from_anthropic(resp, "id", 0, "m")
    assert completion["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize("resp", [{}, {"type": "message", "content": None}, []])
def test_a_message_without_content_is_a_protocol_error(resp):
    with pytest.raises(UpstreamProtocolError):
        from_anthropic(resp, "id", 0, "m")


# ---------------------------------------------------------------- stream


def test_text_stream_emits_role_content_finish_then_usage_chunk():
    tr, chunks = translate("stream_text.sse")
    head = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "claude-sonnet"}
    assert chunks[0] == {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None}]}
    assert [c["choices"][0]["delta"] for c in chunks[1:4]] == [
        {"content": "Hello"}, {"content": "! How can I"}, {"content": " help you today?"}]
    assert chunks[4]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[5] == {**head, "choices": [], "usage": {
        "prompt_tokens": 1053, "completion_tokens": 12, "total_tokens": 1065,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 0}}}
    assert len(chunks) == 6 and tr.done


def test_stream_usage_takes_input_from_message_start_and_output_from_message_delta():
    tr = AnthropicStreamTranslator("id", 0, "m")
    events = sse_events("stream_text.sse")
    tr.feed(*events[0])
    assert (tr.usage.input_tokens, tr.usage.cached_tokens, tr.usage.output_tokens) == (1053, 1024, 1)
    for event, data in events[1:]:
        tr.feed(event, data)
    assert (tr.usage.input_tokens, tr.usage.output_tokens) == (1053, 12)


def test_tool_use_stream_emits_indexed_tool_call_deltas():
    tr, chunks = translate("stream_tool_use.sse")
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"}
               for c in calls if "id" not in c)
    args: dict[int, str] = {}
    for call in calls:
        args[call["index"]] = args.get(call["index"], "") + call["function"]["arguments"]
    assert orjson.loads(args[0]) == {"city": "Paris", "unit": "celsius"}
    assert orjson.loads(args[1]) == {"timezone": "Europe/Paris"}
    ids = [c["id"] for c in calls if "id" in c]
    assert ids == ["toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01Kq8VbS2mWc5RzP7nYx3fGh"]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check both."
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 89 and tr.done


def test_thinking_deltas_are_not_streamed_as_content():
    _, chunks = translate("stream_thinking.sse")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The greatest common divisor of 1071 and 462 is **21**."


@pytest.mark.parametrize("event, data", [
    ("ping", {"type": "ping"}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("content_block_start", {"type": "content_block_start", "index": 3, "content_block": {
        "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 3, "delta": {
        "type": "input_json_delta", "partial_json": "{\"query\": \"x\"}"}}),
    ("brand_new_event", {"type": "brand_new_event"}),
])
def test_events_without_openai_meaning_emit_nothing(event, data):
    assert AnthropicStreamTranslator("id", 0, "m").feed(event, data) == []


def test_stream_is_done_only_after_message_stop():
    tr = AnthropicStreamTranslator("id", 0, "m")
    for event, data in sse_events("stream_text.sse")[:-1]:
        tr.feed(event, data)
        assert not tr.done
    tr.feed("message_stop", {"type": "message_stop"})
    assert tr.done


def test_event_name_falls_back_to_the_data_type():
    chunks = AnthropicStreamTranslator("id", 0, "m").feed("", {
        "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})
    assert chunks[0]["choices"][0]["delta"] == {"content": "x"}


def test_mid_stream_overload_raises_retryable_upstream_error():
    tr = AnthropicStreamTranslator("id", 0, "m")
    events = sse_events("stream_error.sse")
    for event, data in events[:-1]:
        tr.feed(event, data)
    with pytest.raises(UpstreamHTTPError) as exc:
        tr.feed(*events[-1])
    assert (exc.value.upstream_status, exc.value.message, exc.value.retryable) == (
        503, "anthropic stream failed", True)  # a server error's text stays private
    assert not tr.done


@pytest.mark.parametrize("error_type, status", [
    ("overloaded_error", 503), ("rate_limit_error", 429), ("api_error", 500),
    ("invalid_request_error", 400), ("something_new", 500),
])
def test_stream_error_types_map_to_upstream_status(error_type, status):
    with pytest.raises(UpstreamHTTPError) as exc:
        AnthropicStreamTranslator("id", 0, "m").feed(
            "error", {"type": "error", "error": {"type": error_type, "message": "boom"}})
    assert exc.value.upstream_status == status


def test_stream_error_message_is_truncated():
    with pytest.raises(UpstreamHTTPError) as exc:
        AnthropicStreamTranslator("id", 0, "m").feed(
            "error", {"type": "error", "error": {"type": "invalid_request_error", "message": "x y" * 5000}})
    assert exc.value.message.startswith("anthropic stream failed: x y")
    assert len(exc.value.message) <= len("anthropic stream failed: ") + 300


# ---------------------------------------------------------------- errors


def test_overloaded_529_is_treated_as_503_and_retryable():
    err = anthropic_error(529, (FIXTURES / "error_overloaded.json").read_bytes())
    assert (err.upstream_status, err.status, err.retryable) == (503, 503, True)
    assert err.message == "anthropic returned HTTP 529"


def test_caller_error_keeps_its_status_and_message():
    body = (FIXTURES / "error_invalid_request.json").read_bytes()
    err = anthropic_error(400, body)
    assert (err.status, err.code, err.retryable) == (400, "upstream_rejected", False)
    assert err.message == "anthropic returned HTTP 400: " + orjson.loads(body)["error"]["message"]


def test_error_message_is_truncated_to_300_chars():
    message = "prompt is too long: " + "x " * 1000
    err = anthropic_error(400, orjson.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": message}}))
    assert err.message == "anthropic returned HTTP 400: " + message[:300]


def test_error_body_is_never_echoed():
    body = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": "Internal error"},
                         "request_id": "req_secret_123"})
    err = anthropic_error(500, body)
    assert "req_secret_123" not in err.body().decode()
    assert err.message == "anthropic returned HTTP 500"  # a server error's text stays private


def test_credentials_quoted_by_the_provider_are_redacted():
    body = orjson.dumps({"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "bad header Authorization: Bearer sk-ant-api03-SECRETSECRET, x-api-key=abc123"}})
    err = anthropic_error(400, body)
    assert "SECRET" not in err.message and "abc123" not in err.message and "[redacted]" in err.message
    assert "SECRET" not in anthropic_error(401, body).message


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b"[1, 2]", b'{"error": "flat"}',
                                  b'{"type": "error", "error": {"type": "api_error", "message": ""}}'])
def test_unreadable_error_bodies_get_a_generic_message(body):
    err = anthropic_error(502, body)
    assert (err.upstream_status, err.message) == (502, "anthropic returned HTTP 502")


def test_rate_limit_keeps_429():
    body = orjson.dumps({"type": "error", "error": {
        "type": "rate_limit_error",
        "message": "Number of request tokens has exceeded your per-minute rate limit"}})
    err = anthropic_error(429, body)
    assert (err.status, err.type, err.retryable) == (429, "rate_limit_error", True)
