"""The fake upstream's provider-run tools (hosted-<k>), read by the official SDKs pointed straight
at it: the blocks, items, events and usage parse as the SDKs' own types, and the bounds the real
APIs enforce (max_uses, max_tool_calls) hold."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent

from tests.fakes.server_tools import RESULT_TOKENS
from tests.fakes.upstream import FakeUpstream

ASK = [{"role": "user", "content": "what is new?"}]
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
CODE = {"type": "code_execution_20250825", "name": "code_execution"}


@pytest.fixture()
def claude(up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=up.root_url, api_key="sk-ant", max_retries=0,
                             default_headers={"x-api-key": "sk-ant"}) as c:
        yield c


def test_anthropic_server_tools_parse_as_sdk_blocks_and_honour_max_uses(claude: anthropic.Anthropic) -> None:
    plain = claude.messages.create(model="claude", max_tokens=50, messages=ASK)  # type: ignore[arg-type]
    message = claude.messages.create(model="hosted-5", max_tokens=50, messages=ASK, tools=[SEARCH, CODE])  # type: ignore[arg-type, list-item]
    Message.model_validate(message.model_dump())
    kinds = [b.type for b in message.content]
    assert kinds[:4] == ["server_tool_use", "web_search_tool_result", "server_tool_use",
                         "bash_code_execution_tool_result"]
    assert kinds[-1] == "text" and message.container is not None
    # 5 calls over [search, code]: searches 1, 3 and 5, the third past max_uses 2 (an error result)
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 2
    errors = [b for b in message.content if b.type == "web_search_tool_result" and not isinstance(b.content, list)]
    assert len(errors) == 1 and errors[0].content.error_code == "max_uses_exceeded"  # type: ignore[union-attr]
    assert message.usage.input_tokens == plain.usage.input_tokens + 4 * RESULT_TOKENS


def test_anthropic_server_tool_stream_parses_and_carries_usage_and_container(claude: anthropic.Anthropic) -> None:
    events = list(claude.messages.create(model="hosted-2", max_tokens=50, messages=ASK, tools=[SEARCH, CODE],  # type: ignore[arg-type, list-item]
                                         stream=True))
    adapter = pydantic.TypeAdapter(RawMessageStreamEvent)
    for event in events:
        adapter.validate_python(event.model_dump())
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.usage.server_tool_use is not None and delta.usage.server_tool_use.web_search_requests == 1
    assert delta.delta.container is not None
    with claude.messages.stream(model="hosted-2", max_tokens=50, messages=ASK, tools=[SEARCH, CODE]) as stream:  # type: ignore[arg-type, list-item]
        final = stream.get_final_message()
    assert [b.type for b in final.content][:2] == ["server_tool_use", "web_search_tool_result"]


def test_responses_built_in_calls_parse_as_sdk_items_and_honour_max_tool_calls(up: FakeUpstream) -> None:
    tools = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
             {"type": "code_interpreter", "container": {"type": "auto"}}]
    with openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0) as oai:
        response = oai.responses.create(model="hosted-5", input="look", tools=tools, max_tool_calls=4)  # type: ignore[arg-type]
        Response.model_validate(response.model_dump())
        assert [i.type for i in response.output] == ["web_search_call", "file_search_call", "code_interpreter_call",
                                                     "web_search_call", "message"]
        assert response.max_tool_calls == 4
        events = list(oai.responses.create(model="hosted-2", input="look", tools=tools, stream=True))  # type: ignore[arg-type]
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(event.model_dump())
    assert [e.sequence_number for e in events] == list(range(len(events)))
    names = [e.type for e in events]
    assert "response.web_search_call.searching" in names and "response.file_search_call.completed" in names
    final = events[-1].response  # type: ignore[union-attr]
    assert [i.type for i in final.output] == ["web_search_call", "file_search_call", "message"]
