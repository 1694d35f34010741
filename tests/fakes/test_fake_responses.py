"""The fake upstream's Responses API, tool calls and token counting, checked with the official
SDKs pointed straight at it (so gateway tests rest on a faithful fake)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.fakes.upstream import FakeUpstream

TOOL = {"type": "function", "name": "search", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture()
def oai(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def test_response_json_validates_as_the_sdk_type(oai: openai.OpenAI, up: FakeUpstream) -> None:
    response = oai.responses.create(model="cached-30", input="hello fake", instructions="be brief")
    Response.model_validate(response.model_dump())
    assert response.output_text == "Echo: hello fake"
    assert response.usage.input_tokens_details.cached_tokens == 30
    raw = up.requests[-1]
    assert raw["path"] == "/v1/responses"


def test_response_stream_events_validate_in_sequence(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-4o-mini", input="stream it", stream=True))
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(event.model_dump())
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Echo: stream it"


def test_response_tool_call_and_unknown_parameter(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o-mini", input="find", tools=[TOOL])  # type: ignore[list-item]
    [call] = response.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"query": "Echo: find"}
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model="gpt-4o-mini", input="x", extra_body={"request_tags": ["a"]})
    assert err.value.body["param"] == "request_tags"


def test_anthropic_tool_use_and_count_tokens(up: FakeUpstream) -> None:
    with anthropic.Anthropic(base_url=up.root_url, api_key="sk-ant", max_retries=0,
                             default_headers={"x-api-key": "sk-ant"}) as c:
        tools = [{"name": "search", "input_schema": {"type": "object"}}]
        message = c.messages.create(model="claude", max_tokens=50, tools=tools,  # type: ignore[list-item]
                                    messages=[{"role": "user", "content": "find"}])
        assert message.stop_reason == "tool_use" and message.content[0].input == {"query": "Echo: find"}
        with c.messages.stream(model="claude", max_tokens=50, tools=tools,  # type: ignore[list-item]
                               messages=[{"role": "user", "content": "find"}]) as stream:
            assert stream.get_final_message().content[0].input == {"query": "Echo: find"}
        count = c.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "x" * 40}])
        assert count.input_tokens == 10
