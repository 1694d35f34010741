"""`/v1/responses` through a real gateway with the official `openai` SDK as the client: native
relay to an OpenAI provider, translation for the others, attribution, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway, InProcessGateway

PRICED = {"input_per_mtok": "2", "output_per_mtok": "8", "cached_input_per_mtok": "0.5"}
TOOLS = [{"type": "function", "name": "search", "description": "Search the docs",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def config(upstream: FakeUpstream) -> dict:
    cfg = standard_config(upstream)
    cfg["models"].update({
        "gpt-cached": {"provider": "openai", "model": "cached-40", "pricing": PRICED},
        "gpt-cut": {"provider": "openai", "model": "cut-stream", "pricing": PRICED},
        "gpt-stream-error": {"provider": "openai", "model": "stream-error", "pricing": PRICED},
        "claude-priced": {"provider": "anthropic", "model": "cached-40", "pricing": PRICED},
    })
    return cfg


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = InProcessGateway(tmp_path_factory.mktemp("gw-responses"), config(upstream)).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.create_key("codex", team="tools")


@pytest.fixture()
def oai(gw: Gateway, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as c:
        yield c


def test_native_response_is_attributed_and_priced_exactly(oai: openai.OpenAI, gw: Gateway,
                                                          upstream: FakeUpstream) -> None:
    upstream.clear()
    raw = oai.responses.with_raw_response.create(
        model="gpt-cached", input="Hello there, gateway", instructions="Be brief.",
        extra_body={"request_tags": ["team/search"]}, extra_headers={"X-Request-Tags": "agent/codex"})
    response = raw.parse()
    assert response.output_text == "Echo: Hello there, gateway"
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/responses" and "request_tags" not in sent["body"]
    assert sent["body"]["instructions"] == "Be brief."
    usage = response.usage
    assert usage.input_tokens_details.cached_tokens == 40
    expected = (Decimal(usage.input_tokens - 40) * 2 + 40 * Decimal("0.5") + usage.output_tokens * 8) / 10**6
    raw_cost = re.search(rb'"cost":([0-9.]+)', raw.http_response.content).group(1)
    assert Decimal(raw_cost.decode()) == expected
    record = gw.log_record(raw.headers["x-request-id"])
    assert record["endpoint"] == "responses" and record["provider"] == "openai"
    assert sorted(record["tags"]) == ["agent/codex", "team/search"]
    assert record["labels"] == {"team": "tools"} and Decimal(record["cost"]) == expected


@pytest.mark.parametrize("model", ["gpt-cached", "claude-priced"])
def test_stream_costs_the_same_as_unstreamed(oai: openai.OpenAI, gw: Gateway, model: str) -> None:
    plain = oai.responses.with_raw_response.create(model=model, input="same cost please")
    raw = oai.responses.with_raw_response.create(model=model, input="same cost please", stream=True)
    events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Echo: same cost please"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.output_text == plain.parse().output_text
    a, b = gw.log_record(plain.headers["x-request-id"]), gw.log_record(raw.headers["x-request-id"])
    assert b["stream"] is True and b["partial"] is False
    assert a["usage"] == b["usage"] and a["cost"] == b["cost"] != "0"
    assert Decimal(str(final.usage.model_extra["cost"])) == Decimal(b["cost"])


def test_translated_response_reaches_anthropic_provider(oai: openai.OpenAI, gw: Gateway,
                                                        upstream: FakeUpstream) -> None:
    upstream.clear()
    raw = oai.responses.with_raw_response.create(
        model="claude", instructions="Be brief.", max_output_tokens=40,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "translate me"}]}])
    response = raw.parse()
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["system"] == "Be brief."
    assert sent["body"]["max_tokens"] == 40
    assert response.output_text == "Echo: translate me" and response.id == raw.headers["x-request-id"]
    record = gw.log_record(response.id)
    assert record["endpoint"] == "responses" and record["provider"] == "anthropic"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_function_tools_round_trip(oai: openai.OpenAI, model: str) -> None:
    first = oai.responses.create(model=model, input="find pricing", tools=TOOLS)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "search" and json.loads(call.arguments) == {"query": "Echo: find pricing"}
    with oai.responses.stream(model=model, input="find pricing", tools=TOOLS) as stream:
        final = stream.get_final_response()
    [streamed] = [item for item in final.output if item.type == "function_call"]
    assert streamed.arguments == call.arguments
    answer = oai.responses.create(model=model, tools=TOOLS, input=[
        {"role": "user", "content": "find pricing"},
        {"type": "function_call", "call_id": call.call_id, "name": "search", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "$3"}])
    assert answer.output_text


def test_untranslatable_requests_get_a_400_naming_the_field(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as stored:
        oai.responses.create(model="claude", input="hi", previous_response_id="resp_123")
    assert stored.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as builtin:
        oai.responses.create(model="claude", input="hi", tools=[{"type": "file_search", "vector_store_ids": ["vs"]}])
    assert builtin.value.body["param"] == "tools[0].type" and "file_search" in builtin.value.body["message"]
    with pytest.raises(openai.BadRequestError) as empty:
        oai.responses.create(model="gpt-4o-mini", input=[])
    assert empty.value.body["param"] == "input"


def test_upstream_errors_keep_openai_shape_and_request_id(oai: openai.OpenAI, gw: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        oai.responses.create(model="fail-429", input="hi")
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.InternalServerError) as failed:
        oai.responses.create(model="fail-500", input="hi")
    assert failed.value.status_code == 502 and failed.value.body["type"] == "upstream_error"
    record = gw.log_record(failed.value.response.headers["x-request-id"])
    assert record["endpoint"] == "responses" and record["status"] == 502


@pytest.mark.parametrize("model", ["gpt-cut", "gpt-stream-error"])
def test_stream_failing_midway_is_recorded_partial(oai: openai.OpenAI, gw: Gateway, model: str) -> None:
    raw = oai.responses.with_raw_response.create(model=model, input="a story", stream=True)
    request_id = raw.headers["x-request-id"]
    events = list(raw.parse())
    assert events[-1].type == "error" and events[-1].code  # the Responses API's in-band error event
    assert [e.sequence_number for e in events] == list(range(len(events)))
    record = gw.log_record(request_id)
    assert record["partial"] is True and record["stream"] is True and record["status"] >= 500
    assert record["usage"]["input_tokens"] > 0 and record["cost"] != "0"
    assert record["pricing_source"].endswith("(estimated)")


def test_a_stream_cut_short_estimates_its_tools_too(oai: openai.OpenAI, gw: Gateway) -> None:
    """A coding agent's Responses request carries dozens of function tools, which the provider
    bills as prompt: a stream cut before its usage is estimated from the whole request (tools
    included, four characters a token), as an answer without usage is, not its input alone."""
    tools = [{"type": "function", "name": f"tool_{i}", "description": "Does one careful thing. " * 40,
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}} for i in range(30)]
    raw = oai.responses.with_raw_response.create(model="gpt-cut", input="a story", tools=tools,  # type: ignore[arg-type]
                                                 stream=True)
    events = list(raw.parse())
    assert events[-1].type == "error"
    record = gw.log_record(raw.headers["x-request-id"])
    assert record["partial"] is True and record["pricing_source"].endswith("(estimated)")
    assert record["usage"]["input_tokens"] >= sum(len(t["description"]) for t in tools) // 4, record["usage"]
