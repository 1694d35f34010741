"""Anthropic Messages -> OpenAI chat and back, against recorded wire data; what comes out is
checked against the official `anthropic` SDK's own types."""

from __future__ import annotations

from pathlib import Path

import anthropic
import orjson
import pydantic
import pytest

from tallygate.errors import InvalidRequest
from tallygate.providers.anthropic_translate import to_anthropic
from tallygate.providers.messages_translate import ChatToMessagesStream, chat_to_message, messages_to_chat
from tallygate.types import Usage

FIXTURES = Path(__file__).parent / "fixtures"
EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)


def fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


def chat_chunks(name: str) -> list[dict]:
    frames = (FIXTURES / name).read_bytes().strip().split(b"\n\n")
    return [orjson.loads(f[6:]) for f in frames if f != b"data: [DONE]"]


def test_request_round_trips_through_both_translations() -> None:
    """Messages -> chat -> Messages gives the original request back (what both APIs share)."""
    original = fixture("anthropic/anthropic_request_tools.json")
    chat = messages_to_chat(original, "gpt-4o-mini")
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert chat["user"] == "user-8d41" and chat["tool_choice"] == "auto"
    back = to_anthropic(chat, original["model"])
    for field in ("system", "max_tokens", "temperature", "stop_sequences", "tools", "metadata", "stream"):
        assert back[field] == original[field], field
    assert back["messages"][1:] == original["messages"][1:]
    assert back["messages"][0]["content"][0]["text"] == original["messages"][0]["content"][0]["text"]


def test_document_and_disabled_thinking_translate_cache_control_is_dropped() -> None:
    chat = messages_to_chat({"max_tokens": 10, "thinking": {"type": "disabled"}, "messages": [
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
            {"type": "text", "text": "summarise", "cache_control": {"type": "ephemeral"}}]}]}, "m")
    [user] = chat["messages"]
    assert user["content"][0] == {"type": "file", "file": {"filename": "document.pdf",
                                                           "file_data": "data:application/pdf;base64,JVBE"}}
    assert user["content"][1] == {"type": "text", "text": "summarise"}


def test_claude_code_request_translates_system_turns_in_place() -> None:
    """What Claude Code sends for a model name it does not know: a `system` message mid-way,
    adaptive thinking, an effort, a context edit that clears thinking, a deferred tool."""
    chat = messages_to_chat({
        "max_tokens": 32000, "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "tools": [{"name": "Read", "input_schema": {"type": "object"}},
                  {"name": "DeferredToolPlaceholder", "input_schema": {"type": "object"}, "defer_loading": True}],
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                              {"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok",
                                          "is_error": False, "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "reminder"}]}, "gpt-4o-mini")
    assert [(m["role"], m.get("content")) for m in chat["messages"]] == [
        ("system", "You are Claude Code."), ("user", "hello"), ("system", "# Environment"),
        ("assistant", None), ("tool", "ok"), ("system", "reminder")]
    assert [t["function"]["name"] for t in chat["tools"]] == ["Read"]
    assert not {"thinking", "reasoning_effort", "output_config", "context_management"} & set(chat)


def test_system_message_content_must_be_text() -> None:
    with pytest.raises(InvalidRequest) as err:
        messages_to_chat({"max_tokens": 5, "messages": [
            {"role": "system", "content": [{"type": "image", "source": {}}]}]}, "m")
    assert err.value.param == "messages[0].content[0]"


def test_output_config_schema_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = messages_to_chat({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                             "output_config": {"format": {"type": "json_schema", "schema": schema}}}, "m")
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


@pytest.mark.parametrize(("field", "body"), [
    ("context_management.edits[0].type", {"context_management": {"edits": [
        {"type": "clear_tool_uses_20250919"}]}}),
    ("top_k", {"top_k": 5}),
    ("tools[0].type", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
    ("messages[0].content[0].type", {"messages": [{"role": "user", "content": [
        {"type": "search_result", "source": "x", "title": "t", "content": []}]}]}),
])
def test_untranslatable_fields_are_named_in_a_400(field: str, body: dict) -> None:
    request = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(InvalidRequest) as err:
        messages_to_chat(request, "gpt-4o-mini")
    assert err.value.param == field and err.value.status == 400


def test_completion_becomes_a_valid_message_with_anthropic_usage() -> None:
    data = fixture("openai/chat_completion_tool_call.json")
    usage = Usage.from_openai(data["usage"])
    message = chat_to_message(data, usage, "req_1", "gpt-4o-mini")
    parsed = anthropic.types.Message.model_validate(message)
    assert parsed.stop_reason == "tool_use"
    assert parsed.content[1].input == {"city": "Paris"}
    # Anthropic's input_tokens leave out cache reads
    assert (parsed.usage.input_tokens, parsed.usage.cache_read_input_tokens) == (312 - 256, 256)


def test_chat_stream_becomes_valid_message_events_in_order() -> None:
    chunks = chat_chunks("openai/chat_stream_tool_call.sse")
    translator = ChatToMessagesStream("req_1", "gpt-4o-mini")
    events = [ev for chunk in chunks for ev in translator.feed(chunk)]
    events += translator.finish(Usage.from_openai(chunks[-1]["usage"]))
    for name, data in events:
        assert EVENT.validate_python(data).type == name
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    args = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert orjson.loads("".join(args)) == {"city": "Paris"}
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["cache_read_input_tokens"] == 256
