"""Codex's tools on the chat translation: namespace and custom tools round-trip, hosted web
search is left out, other built-in tools are a 400 naming the tool; the items that come back
are checked against the official `openai` SDK's types."""

from __future__ import annotations

import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tallygate.errors import InvalidRequest
from tallygate.providers.responses_translate import ChatToResponsesStream, chat_to_response, responses_to_chat
from tallygate.types import Usage

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
GRAMMAR = {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}
CODEX_TOOLS = [
    {"type": "function", "name": "exec_command", "strict": False,
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
    {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
        {"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}}]},
    {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": GRAMMAR},
    {"type": "web_search", "external_web_access": False},
]


def _request(**extra: object) -> dict:
    return {"model": "m", "input": "hi", "tools": CODEX_TOOLS, "tool_choice": "auto",
            "parallel_tool_calls": True, **extra}


def test_codex_default_tools_become_chat_functions() -> None:
    chat = responses_to_chat(_request(), "claude")
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names == ["exec_command", "multi_agent_v1__spawn_agent", "apply_patch"]
    patch = chat["tools"][2]["function"]
    assert patch["parameters"]["required"] == ["input"] and "start: /.+/" in patch["description"]
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is True


def test_only_web_search_offered_leaves_no_tools_and_no_tool_choice() -> None:
    chat = responses_to_chat({"model": "m", "input": "hi", "tools": [{"type": "web_search"}],
                              "tool_choice": "auto", "parallel_tool_calls": True}, "claude")
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(chat)


@pytest.mark.parametrize(("param", "body"), [
    ("tools[0].type", {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}),
    ("tools[0].tools[0].type", {"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "mcp"}]}]}),
    ("tool_choice", {"tools": CODEX_TOOLS, "tool_choice": {"type": "web_search"}}),
])
def test_untranslatable_tools_are_named_in_a_400(param: str, body: dict) -> None:
    with pytest.raises(InvalidRequest) as err:
        responses_to_chat({"model": "m", "input": "hi", **body}, "claude")
    assert err.value.param == param and err.value.status == 400


def test_namespaced_and_custom_calls_round_trip() -> None:
    """Earlier calls in the input become chat tool calls; the model's calls come back as
    Codex expects them: `namespace` apart, a custom tool's `input` as a string."""
    chat = responses_to_chat(_request(input=[
        {"type": "function_call", "call_id": "c1", "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "done"}]), "claude")
    calls = [m["tool_calls"][0]["function"] for m in chat["messages"] if m.get("tool_calls")]
    assert calls == [{"name": "multi_agent_v1__spawn_agent", "arguments": "{}"},
                     {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'}]
    completion = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "k1", "type": "function", "function": {"name": "multi_agent_v1__spawn_agent", "arguments": "{}"}},
            {"id": "k2", "type": "function", "function": {"name": "apply_patch",
                                                          "arguments": '{"input":"*** End Patch"}'}}]}}]}
    response = chat_to_response(completion, Usage(input_tokens=3, output_tokens=4), "req_1", "claude", _request())
    items = Response.model_validate(response).output
    assert (items[0].type, items[0].name, items[0].namespace) == ("function_call", "spawn_agent", "multi_agent_v1")  # type: ignore[union-attr]
    assert (items[1].type, items[1].input) == ("custom_tool_call", "*** End Patch")  # type: ignore[union-attr]


def test_streamed_custom_call_is_sent_whole_as_custom_tool_input_events() -> None:
    stream = ChatToResponsesStream("req_2", "claude", _request())
    head = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def chunk(call: dict, finish: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]},
                                     "finish_reason": finish}]}

    chunks = [chunk({"id": "k", "type": "function", "function": {"name": "apply_patch", "arguments": ""}}),
              chunk({"function": {"arguments": '{"input":'}}),
              chunk({"function": {"arguments": '"p"}'}}, "tool_calls")]
    events = [e for c in chunks for e in stream.feed(c)] + stream.finish(Usage(input_tokens=1, output_tokens=2))
    for _name, event in events:
        EVENT.validate_python(orjson.loads(orjson.dumps(event)))
    names = [n for n, _ in events]
    assert "response.function_call_arguments.delta" not in names
    done = next(e for n, e in events if n == "response.custom_tool_call_input.done")
    assert done["input"] == "p"
    assert events[-1][1]["response"]["output"][0]["input"] == "p"
