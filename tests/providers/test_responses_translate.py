"""OpenAI Responses -> chat and back, against recorded wire data; what comes out is checked
against the official `openai` SDK's own types."""

from __future__ import annotations

from pathlib import Path

import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tallygate.errors import InvalidRequest
from tallygate.providers.responses_translate import (
    ChatToResponsesStream,
    chat_to_response,
    responses_to_chat,
    responses_usage,
)
from tallygate.types import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


def chat_chunks(name: str) -> list[dict]:
    frames = (FIXTURES / name).read_bytes().strip().split(b"\n\n")
    return [orjson.loads(f[6:]) for f in frames if f != b"data: [DONE]"]


def test_request_items_become_chat_messages() -> None:
    chat = responses_to_chat(fixture("responses_request.json"), "claude-sonnet")
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    user = chat["messages"][1]["content"]
    assert user[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                          "detail": "low"}}
    assert chat["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                "arguments": '{"city":"Paris"}'}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "call_Xy12AbCd", "content": "18C, light rain"}
    assert chat["tools"][0]["function"]["strict"] is True
    assert (chat["max_tokens"], chat["user"], chat["reasoning_effort"]) == (300, "user-8d41", "low")
    assert "store" not in chat and "metadata" not in chat


@pytest.mark.parametrize(("field", "body"), [
    ("previous_response_id", {"previous_response_id": "resp_1"}),
    ("conversation", {"conversation": "conv_1"}),
    ("tools[0].type", {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
    ("input[0].type", {"input": [{"type": "item_reference", "id": "msg_1"}]}),
    ("input[0].content[0]", {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
])
def test_what_needs_stored_state_or_builtin_tools_is_a_400_naming_it(field: str, body: dict) -> None:
    with pytest.raises(InvalidRequest) as err:
        responses_to_chat({"input": "hi", **body}, "m")
    assert err.value.param == field


def test_completion_becomes_a_valid_response() -> None:
    data = fixture("chat_completion_tool_call.json")
    usage = Usage.from_openai(data["usage"])
    response = Response.model_validate(chat_to_response(data, usage, "req_1", "claude", {"input": "x"}))
    assert response.output_text == "Let me check."
    assert response.output[1].type == "function_call" and response.output[1].call_id == "call_Xy12AbCd"
    assert responses_usage(response.usage.model_dump()) == usage


def test_chat_stream_becomes_valid_response_events_in_order() -> None:
    chunks = chat_chunks("chat_stream_tool_call.sse")
    translator = ChatToResponsesStream("req_1", "claude", {"input": "x"})
    events = [ev for chunk in chunks for ev in translator.feed(chunk)]
    events += translator.finish(Usage.from_openai(chunks[-1]["usage"]))
    parsed = [EVENT.validate_python(data) for _, data in events]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    assert [e.type for e in parsed] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    final = parsed[-1].response  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert final.output[1].arguments == '{"city":"Paris"}'
    assert final.usage.input_tokens_details.cached_tokens == 256
