"""A limited key cannot spend past its limit with a body that grows in translation: the
reservation bounds the body each target is sent (`pipeline/sent.py`), not only the client's.

The upstream here bills the whole body it receives, a token per byte (`bodytokens`: tools,
schemas, tool calls and wrappers included). Each request's client body fits its key's limit at
that rate; what the gateway sends does not. Before, each was served and left its key's spend
past the limit: a Responses namespace's name repeated on its 300 tools, or each custom tool
given a schema, for Anthropic (6 KB became 73 KB); a Messages tool_use input of empty arrays
become the text of its JSON for chat; chat tool results each wrapped in a Messages block."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.bedrock import API_KEY, REGION, FakeBedrock
from tests.fakes.gemini import KEY as GEMINI_KEY
from tests.fakes.gemini import FakeGemini
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway, InProcessGateway

PRICED = {"input_per_mtok": "1000", "output_per_mtok": "1000"}  # $0.001 a token


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = standard_config(upstream)
    config["models"].update({
        "gpt-bodies": {"provider": "openai", "model": "bodytokens", "pricing": PRICED},
        "claude-bodies": {"provider": "anthropic", "model": "bodytokens", "pricing": PRICED},
    })
    for provider in ("openai", "anthropic"):  # 70 KB bodies billed byte by byte in this process: not 1 s
        config["providers"][provider]["timeout_s"] = 30.0  # under CI load (a 504 in the CI of b9de067)
    gateway = InProcessGateway(tmp_path_factory.mktemp("gw-translation-budget"), config).start()
    yield gateway
    gateway.stop()


def _spent(gw: Gateway, key: str) -> Decimal:
    status, me = gw.get("/v1/key", key=key)
    assert status == 200, me
    assert me["monthly_reserved"] == "0"
    return Decimal(me["monthly_spend"])


@pytest.mark.parametrize("tools", [
    [{"type": "namespace", "name": "n" * 200, "description": "tools",
      "tools": [{"type": "function", "name": f"f{i}"} for i in range(300)]}],
    [{"type": "custom", "name": f"c{i}"} for i in range(300)],
], ids=["namespace", "custom"])
def test_responses_tools_translated_for_a_chat_only_provider_cannot_spend_past_the_limit(
        gw: Gateway, tools: list) -> None:
    key = gw.create_key("responses-tools", monthly_limit="30")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.responses.create(model="claude-bodies", input="hi", max_output_tokens=16, tools=tools)
    assert refused.value.status_code == 402, refused.value.body
    assert _spent(gw, key) <= 30


@pytest.mark.parametrize(("model", "tool_input"), [
    ("gpt-bodies", {"a": [[]] * 3000}),  # translated to chat: the input becomes its JSON text, 9 KB
    ("claude-bodies", {"a": [[]] * 3000}),  # native: Anthropic reads the input as that JSON text too
    ("claude-bodies", {"a": "\x01" * 3000}),  # a control character is six bytes of it (\\u0001): 18 KB
], ids=["translated", "native punctuation", "native escapes"])
def test_a_tool_use_input_cannot_spend_past_the_limit(gw: Gateway, model: str, tool_input: dict) -> None:
    """A tool_use input's JSON text, punctuation and escapes included, is reserved: the bound
    counted strings and keys only (3000 empty arrays as nothing, 3000 control characters as 3 KB)."""
    key = gw.create_key("tool-use", monthly_limit="4")
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t",
                                                   "input": tool_input}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}]
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0) as claude:
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude.messages.create(model=model, max_tokens=16, messages=messages,  # type: ignore[arg-type]
                                   tools=[{"name": "t", "input_schema": {"type": "object"}}])
    assert refused.value.status_code == 402, refused.value.body
    assert _spent(gw, key) <= 4


def test_chat_tool_results_translated_to_anthropic_cannot_spend_past_the_limit(gw: Gateway) -> None:
    key = gw.create_key("tool-results", monthly_limit="20")
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                      "function": {"name": "t", "arguments": "{}"}}]},
                *({"role": "tool", "tool_call_id": "c", "content": "x"} for _ in range(500))]
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="claude-bodies", max_tokens=16, messages=messages)  # type: ignore[arg-type]
    assert refused.value.status_code == 402, refused.value.body
    assert _spent(gw, key) <= 20


def test_a_body_that_grows_within_the_limit_is_served_and_costs_no_more_than_it(gw: Gateway) -> None:
    # the hold counts each prompt token at the dearest price it may be billed at: a Claude model's
    # 1-hour cache write, 2 times the input price (~124 USD here), so the limit leaves room for it
    key = gw.create_key("grows-within", monthly_limit="200")
    namespace = {"type": "namespace", "name": "n" * 200, "description": "tools",
                 "tools": [{"type": "function", "name": f"f{i}"} for i in range(300)]}
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        answer = client.responses.create(model="claude-bodies", input="hi", max_output_tokens=16,
                                         tools=[namespace])  # type: ignore[list-item]
    assert answer.usage is not None and answer.usage.input_tokens > 60_000  # billed the translated body
    assert 60 < _spent(gw, key) <= 100  # billed at the input price: no cache write was asked for


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Gemini and Bedrock (chat translated; Bedrock's Messages natively to Converse)."""
    with FakeGemini() as gemini, FakeBedrock() as bedrock:
        aws = {"type": "bedrock", "region": REGION, "base_url": bedrock.root_url, "api_key": API_KEY}
        config = {
            "providers": {"google": {"type": "gemini", "base_url": gemini.root_url, "api_key": GEMINI_KEY},
                          "aws": aws, "aws-claude": {**aws, "anthropic_messages": True}},
            "models": {"gemini-bodies": {"provider": "google", "model": "bodytokens", "pricing": PRICED},
                       "converse-bodies": {"provider": "aws", "model": "bodytokens", "pricing": PRICED},
                       "claude-on-aws": {"provider": "aws-claude", "model": "anthropic.bodytokens",
                                         "pricing": PRICED}},
        }
        gateway = InProcessGateway(tmp_path_factory.mktemp("gw-translation-clouds"), config).start()
        yield gateway
        gateway.stop()


@pytest.mark.parametrize("model", ["gemini-bodies", "converse-bodies"])
def test_responses_translated_for_gemini_or_converse_cannot_spend_past_the_limit(clouds: Gateway,
                                                                                 model: str) -> None:
    key = clouds.create_key(f"clouds-{model}", monthly_limit="30")
    namespace = {"type": "namespace", "name": "n" * 200, "description": "tools",
                 "tools": [{"type": "function", "name": f"f{i}"} for i in range(300)]}
    with openai.OpenAI(base_url=clouds.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.responses.create(model=model, input="hi", max_output_tokens=16,
                                    tools=[namespace])  # type: ignore[list-item]
    assert refused.value.status_code == 402, refused.value.body
    assert _spent(clouds, key) <= 30


def test_messages_sent_natively_as_converse_cannot_spend_past_the_limit(clouds: Gateway) -> None:
    key = clouds.create_key("converse-messages", monthly_limit="14.5")
    tools = [{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(400)]
    with anthropic.Anthropic(base_url=clouds.url, api_key=key, max_retries=0) as claude:
        with pytest.raises(anthropic.APIStatusError) as refused:
            claude.messages.create(model="claude-on-aws", max_tokens=16, tools=tools,  # type: ignore[arg-type]
                                   messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 402, refused.value.body
    assert _spent(clouds, key) <= Decimal("14.5")
