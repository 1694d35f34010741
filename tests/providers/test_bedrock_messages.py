"""Anthropic Messages -> Converse and back (no I/O): prompt-cache breakpoints stay where the
client put them, Converse's cache counts come back as Anthropic's, and every event is one the
official `anthropic` SDK's types accept."""

from __future__ import annotations

import anthropic
import pydantic
import pytest

from tallygate.errors import InvalidRequest
from tallygate.providers.bedrock import foundation_model
from tallygate.providers.bedrock_messages import ConverseToMessagesStream, converse_to_message, messages_to_converse

EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
POINT, HOUR = {"cachePoint": {"type": "default"}}, {"cachePoint": {"type": "default", "ttl": "1h"}}
EPHEMERAL = {"type": "ephemeral"}


def test_cache_control_becomes_a_cache_point_right_after_its_block() -> None:
    converse = messages_to_converse({
        "max_tokens": 100, "system": [{"type": "text", "text": "rules", "cache_control": {**EPHEMERAL, "ttl": "1h"}},
                                      {"type": "text", "text": "today"}],
        "tools": [{"name": "search", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": EPHEMERAL},
                                         {"type": "text", "text": "question"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                              {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "3 hits",
                                          "is_error": True, "cache_control": EPHEMERAL}]}]})
    assert converse["system"] == [{"text": "rules"}, HOUR, {"text": "today"}]
    assert converse["toolConfig"] == {"tools": [{"toolSpec": {"name": "search", "inputSchema": {
        "json": {"type": "object"}}}}, POINT]}
    assert converse["messages"] == [
        {"role": "user", "content": [{"text": "doc"}, POINT, {"text": "question"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "search", "input": {"q": 1}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "3 hits"}],
                                                     "status": "error"}}, POINT]}]
    assert converse["inferenceConfig"] == {"maxTokens": 100}


@pytest.mark.parametrize(("body", "param"), [
    ({"top_k": 5, "model": "amazon.nova-pro-v1:0"}, "top_k"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "x"}}]}]},
     "messages[0].content[0].cache_control"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}]},
     "messages[0].content[0].source"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config.format"),
])
def test_what_converse_cannot_take_is_a_400_naming_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        messages_to_converse({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body})
    assert refused.value.param == param


def test_converse_answer_is_an_anthropic_message_with_its_cache_counts() -> None:
    message, usage = converse_to_message({
        "output": {"message": {"role": "assistant", "content": [{"text": "hi"}, {"toolUse": {
            "toolUseId": "t2", "name": "search", "input": {"q": "x"}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 115, "cacheReadInputTokens": 40,
                  "cacheWriteInputTokens": 60, "cacheDetails": [{"ttl": "1h", "inputTokens": 60}]}}, "m")
    parsed = anthropic.types.Message.model_validate({**message, "id": "msg_1"})
    assert parsed.stop_reason == "tool_use" and parsed.content[1].type == "tool_use"
    assert (parsed.usage.input_tokens, parsed.usage.cache_read_input_tokens,
            parsed.usage.cache_creation_input_tokens) == (10, 40, 60)
    assert parsed.usage.cache_creation is not None and parsed.usage.cache_creation.ephemeral_1h_input_tokens == 60
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens) == \
        (110, 40, 60, 60)


def test_converse_stream_becomes_anthropic_events_the_sdk_accepts() -> None:
    events = ConverseToMessagesStream("m")
    out = [e for kind, data in [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me"}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " look."}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 7, "cacheWriteInputTokens": 20}}),
    ] for e in events.feed(kind, data)]
    for _, event in out:
        EVENT.validate_python({**event, "message": {**event["message"], "id": "msg_1"}}
                              if event["type"] == "message_start" else event)
    assert [name for name, _ in out] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    delta = out[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["cache_creation_input_tokens"] == 20
    assert events.done and events.usage.input_tokens == 23


def test_claude_gets_top_k_and_the_beta_header_in_additional_fields_others_do_not() -> None:
    ask = {"max_tokens": 10, "top_k": 5, "messages": [{"role": "user", "content": "hi"}]}
    claude = messages_to_converse({**ask, "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
                                  {"anthropic-beta": "context-1m-2025-08-07, interleaved-thinking-2025-05-14"})
    assert claude["additionalModelRequestFields"] == {
        "top_k": 5, "anthropic_beta": ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]}
    nova = messages_to_converse({**ask, "top_k": None, "model": "amazon.nova-pro-v1:0"},
                                {"anthropic-beta": "context-1m-2025-08-07"})
    assert "additionalModelRequestFields" not in nova


@pytest.mark.parametrize(("model", "foundation"), [
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
     "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic.claude-3-5-haiku-20241022-v1:0"),
])
def test_count_tokens_asks_for_the_foundation_model_of_a_profile(model: str, foundation: str) -> None:
    assert foundation_model(model) == foundation
