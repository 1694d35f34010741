"""Provider-run tools (web search, file search, code containers) are metered from what the
provider reports, priced per use into the ledger and the client's `usage.cost` alike, and their
worst case is reserved before the request is sent, with the bound the gateway sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tallygate.pipeline.tool_fees import DEFAULT_TOOL_CALLS
from tests.conftest import standard_config
from tests.fakes.server_tools import RESULT_TOKENS
from tests.fakes.upstream import FakeUpstream
from tests.fakes.wire import count_prompt_tokens
from tests.gateway import ADMIN_KEY, InProcessGateway

CLAUDE = {"input_per_mtok": "3", "output_per_mtok": "15", "web_search_per_call": "0.01",
          "code_session_per_call": "0.05"}
GPT = {"input_per_mtok": "2", "output_per_mtok": "8", "web_search_per_call": "0.01",
       "file_search_per_call": "0.0025", "code_session_per_call": "0.03"}
FEES_ONLY = {"input_per_mtok": "0.001", "output_per_mtok": "0.001", "web_search_per_call": "1",
             "file_search_per_call": "1"}
TEN = {"input_per_mtok": "10", "output_per_mtok": "10", "web_search_per_call": "0.01"}
SEARCH = {"type": "web_search_20250305", "name": "web_search"}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    cfg = standard_config(upstream)
    models = cfg["models"]
    window = {"context_window": 200000}  # what results may fill: each pass reads no more
    models["claude-tools"] = {"provider": "anthropic", "model": "hosted-3", "pricing": CLAUDE, **window}
    models["gpt-tools"] = {"provider": "openai", "model": "hosted-3", "pricing": GPT, **window}
    models["claude-fees"] = {"provider": "anthropic", "model": "hosted-2", "pricing": FEES_ONLY, **window}
    models["gpt-fees"] = {"provider": "openai", "model": "hosted-2", "pricing": FEES_ONLY, **window}
    # each search brings 60,000 tokens of results: no provider bounds them, but a pass reads 100,000 at most
    models["claude-big"] = {"provider": "anthropic", "model": "hosted-2-results-60000", "pricing": TEN,
                            "context_window": 100000}
    models["gpt-big"] = {"provider": "openai", "model": "hosted-2-results-60000", "pricing": TEN,
                         "context_window": 100000}
    models["gpt-nowindow"] = {"provider": "openai", "model": "hosted-2", "pricing": GPT}  # its window unknown
    models["gpt-audio"] = {"provider": "openai", "model": "gpt-audio"}  # list prices, audio ones included
    models["search"] = {"provider": "openai", "model": "gpt-4o-mini-search-preview"}  # list prices
    gw = InProcessGateway(tmp_path_factory.mktemp("toolfees"), cfg).start()
    yield gw
    gw.stop()


def _cost(rate: dict[str, str], input_tokens: int, output_tokens: int, **uses: int) -> Decimal:
    """Hand arithmetic: USD of tokens at $/Mtok plus each use at its price."""
    usd = (Decimal(rate["input_per_mtok"]) * input_tokens + Decimal(rate["output_per_mtok"]) * output_tokens) \
        / 10**6
    return usd + sum((Decimal(rate[f"{k}_per_call"]) * n for k, n in uses.items()), Decimal(0))


ASK = [{"role": "user", "content": "what happened in the news today?"}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_web_searches_and_code_container_are_metered_at_their_price(
        gateway: InProcessGateway, upstream: FakeUpstream, stream: bool) -> None:
    tools = [SEARCH, {"type": "code_execution_20250825", "name": "code_execution"}]
    client = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    upstream.clear()
    if stream:
        events = list(client.messages.create(model="claude-tools", max_tokens=200, messages=ASK,  # type: ignore[arg-type]
                                             tools=tools, stream=True))  # type: ignore[arg-type]
        request_id = next(e.message.id for e in events if e.type == "message_start")
        told = Decimal(str(next(e.usage.cost for e in events if e.type == "message_delta")))  # type: ignore[attr-defined]
    else:
        message = client.messages.create(model="claude-tools", max_tokens=200, messages=ASK, tools=tools)  # type: ignore[arg-type]
        assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 2
        assert message.container is not None
        request_id, told = message.id, Decimal(str(message.usage.cost))  # type: ignore[attr-defined]
    sent = upstream.requests[-1]["body"]
    record = gateway.log_record(request_id)
    # hosted-3 over [search, code]: search, code, search: 2 searches, 1 container, 3 results read back
    prompt = count_prompt_tokens(sent) + 3 * RESULT_TOKENS
    assert record["usage"]["input_tokens"] == prompt
    expected = _cost(CLAUDE, prompt, record["usage"]["output_tokens"], web_search=2, code_session=1)
    assert Decimal(record["cost"]) == expected == told


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_responses_built_in_tool_calls_are_metered_at_their_price(gateway: InProcessGateway, stream: bool) -> None:
    tools = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
             {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    raw = client.responses.with_raw_response.create(model="gpt-tools", input="look it up", tools=tools,  # type: ignore[arg-type]
                                                    stream=stream)
    parsed = raw.parse()
    final = list(parsed)[-1].response if stream else parsed  # type: ignore[union-attr, call-overload]
    kinds = [item.type for item in final.output]
    assert kinds[:3] == ["web_search_call", "file_search_call", "code_interpreter_call"]
    assert final.usage is not None
    told = Decimal(str(final.usage.cost))
    cost = Decimal(gateway.log_record(raw.headers["x-request-id"])["cost"])
    expected = _cost(GPT, final.usage.input_tokens, final.usage.output_tokens, web_search=1, file_search=1,
                     code_session=4)  # a 4 GB container is four 1 GB units
    assert final.usage.input_tokens > 3 * RESULT_TOKENS
    assert cost == expected == told


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_search_model_bills_its_search_at_the_list_price(gateway: InProcessGateway, stream: bool) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    if stream:
        chunks = list(client.chat.completions.create(model="search", messages=ASK, web_search_options={},  # type: ignore[arg-type]
                                                     stream=True, stream_options={"include_usage": True}))
        request_id, usage = chunks[0].id, chunks[-1].usage
    else:
        answer = client.chat.completions.create(model="search", messages=ASK, web_search_options={})  # type: ignore[arg-type]
        request_id, usage = answer.id, answer.usage
    assert usage is not None
    record = gateway.log_record(request_id)
    # gpt-4o-mini's list price: $0.15 / $0.60 per Mtok, $10 per 1,000 searches (genai-prices)
    expected = (Decimal("0.15") * usage.prompt_tokens + Decimal("0.6") * usage.completion_tokens) / 10**6 \
        + Decimal("0.01")
    assert Decimal(record["cost"]) == expected == Decimal(str(usage.cost))  # type: ignore[attr-defined]


def test_a_limited_request_sends_the_tool_bounds_it_reserved_for(gateway: InProcessGateway,
                                                                 upstream: FakeUpstream) -> None:
    key = gateway.create_key("tools", monthly_limit="100")
    upstream.clear()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    client.messages.create(model="claude-fees", max_tokens=50, messages=ASK, tools=[SEARCH])  # type: ignore[arg-type, list-item]
    assert upstream.requests[-1]["body"]["tools"][0]["max_uses"] == DEFAULT_TOOL_CALLS
    oai = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    oai.responses.create(model="gpt-fees", input="look it up", tools=[{"type": "web_search"}])
    assert upstream.requests[-1]["body"]["max_tool_calls"] == DEFAULT_TOOL_CALLS
    oai.responses.create(model="gpt-fees", input="look it up", tools=[{"type": "web_search"}], max_tool_calls=1)
    assert upstream.requests[-1]["body"]["max_tool_calls"] == 1
    # as Codex sends it, to a model served through the chat translation (no search there): served
    codex = [{"type": "function", "name": "shell", "parameters": {"type": "object"}}, {"type": "web_search"}]
    answer = oai.responses.create(model="claude", input="[[no tools]] hi", tools=codex)  # type: ignore[arg-type]
    assert answer.status == "completed"
    assert [t["name"] for t in upstream.requests[-1]["body"]["tools"]] == ["shell"]


def test_the_reservation_refuses_when_the_tool_fees_could_pass_the_limit(gateway: InProcessGateway,
                                                                         upstream: FakeUpstream) -> None:
    """$1 a search under a $3 limit: 2 searches fit, 4 (or the gateway's default of 5) would not."""
    key = gateway.create_key("tools", monthly_limit="3")
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    oai = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    upstream.clear()
    for tools in ([{**SEARCH, "max_uses": 4}], [SEARCH]):
        with pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(model="claude-fees", max_tokens=50, messages=ASK, tools=tools)  # type: ignore[arg-type]
        assert refused.value.status_code == 402
    with pytest.raises(openai.APIStatusError) as too_many:
        oai.responses.create(model="gpt-fees", input="look it up", tools=[{"type": "web_search"}])
    assert too_many.value.status_code == 402
    assert upstream.requests == []  # refused before any provider saw them
    served = client.messages.create(model="claude-fees", max_tokens=50, messages=ASK,  # type: ignore[arg-type]
                                    tools=[{**SEARCH, "max_uses": 2}])  # type: ignore[list-item]
    assert served.usage.server_tool_use is not None and served.usage.server_tool_use.web_search_requests == 2
    spend = gateway.spend_when_settled(key)
    assert Decimal("2") < spend == Decimal(str(served.usage.cost)) <= Decimal("3")  # type: ignore[attr-defined]
    with pytest.raises(openai.APIStatusError) as spent:  # $1 left: one more search would not fit
        oai.responses.create(model="gpt-fees", input="look it up", tools=[{"type": "web_search"}], max_tool_calls=1)
    assert spent.value.status_code == 402


def test_an_unmetered_hosted_tool_is_refused_on_a_limited_request(gateway: InProcessGateway,
                                                                   upstream: FakeUpstream) -> None:
    """image_generation is billed outside the usage a response reports: a key under a limit gets a
    400 naming the tool, before any provider sees it."""
    key = gateway.create_key("tools", monthly_limit="100")
    upstream.clear()
    oai = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="gpt-fees", input="draw it",
                             tools=[{"type": "web_search"}, {"type": "image_generation"}])  # type: ignore[list-item]
    assert refused.value.body["param"] == "tools[1].type" and "image_generation" in refused.value.body["message"]  # type: ignore[index]
    assert upstream.requests == []


def test_anthropics_advisor_tool_is_refused_on_a_limited_request(gateway: InProcessGateway,
                                                                  upstream: FakeUpstream) -> None:
    """Anthropic's advisor tool runs another model (an Opus) over the whole transcript at that
    model's prices, reported apart from the message's usage: neither reserved at its price nor
    metered, so a key under a limit gets a 400 naming the tool (before: served at the executor's
    price)."""
    key = gateway.create_key("tools", monthly_limit="100")
    upstream.clear()
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model="claude-fees", max_tokens=200, messages=ASK, tools=[  # type: ignore[arg-type]
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 1},
                {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-8", "max_uses": 3}])
    assert "tools[1].type" in refused.value.message and "advisor" in refused.value.message
    assert upstream.requests == []


def test_audio_output_is_refused_on_a_limited_request(gateway: InProcessGateway, upstream: FakeUpstream) -> None:
    """Audio output tokens cost several times text ones, at prices the gateway does not meter."""
    key = gateway.create_key("tools", monthly_limit="100")
    upstream.clear()
    oai = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    for extra in ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
                  {"audio": {"voice": "alloy", "format": "wav"}}):
        with pytest.raises(openai.BadRequestError) as refused:
            oai.chat.completions.create(model="gpt-fees", messages=[{"role": "user", "content": "say hi"}],
                                        **extra)  # type: ignore[call-overload]
        assert refused.value.body["param"] == "modalities"  # type: ignore[index]
    assert upstream.requests == []
    served = oai.chat.completions.create(model="gpt-fees", messages=[{"role": "user", "content": "say hi"}],
                                         modalities=["text"])
    assert served.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_search_results_of_any_size_cannot_take_a_limited_request_past_its_limit(
        gateway: InProcessGateway, path: str, stream: bool) -> None:
    """Two searches of 60,000 tokens each ($1.20 at $10 / Mtok): a $0.50 key was served and
    charged them; now each further pass is reserved at the model's whole context window (100,000
    tokens: $2.02 in all; up to $4.03 on Claude, whose prompt tokens may be 1-hour cache writes at
    2 times the input price), so the $0.50 key is refused and a $5 key is served within its limit."""
    body = {"model": "claude-big", "max_tokens": 50, "messages": ASK, "tools": [{**SEARCH, "max_uses": 2}]} \
        if path == "/v1/messages" else \
        {"model": "gpt-big", "input": "look it up", "tools": [{"type": "web_search"}], "max_tool_calls": 2,
         "max_output_tokens": 50}
    payload = json.dumps({**body, "stream": stream}).encode()
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    for limit, expected in (("0.5", 402), ("5", 200)):
        key = gateway.create_key("tools", monthly_limit=limit)
        status, _, answer = gateway.request("POST", path, payload, key, headers)
        assert status == expected, answer[:300]
        spent = gateway.spend_when_settled(key)
        assert spent <= Decimal(limit), spent
        assert expected == 402 or spent >= Decimal("1.2"), spent  # the results were billed


def test_a_search_on_a_model_of_unknown_context_window_is_refused_for_a_limited_key(
        gateway: InProcessGateway, upstream: FakeUpstream) -> None:
    """Nothing bounds its results: a 400 naming the tool, before any provider sees it; a key
    under no limit is served."""
    upstream.clear()
    key = gateway.create_key("tools", monthly_limit="100")
    oai = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="gpt-nowindow", input="look it up", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools[0].type", refused.value.body  # type: ignore[index]
    assert upstream.requests == []
    free = openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    assert free.responses.create(model="gpt-nowindow", input="look it up", tools=[{"type": "web_search"}]).usage


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_audio_output_of_a_key_under_no_limit_is_priced_at_the_audio_price(gateway: InProcessGateway,
                                                                            stream: bool) -> None:
    """gpt-audio's list prices (genai-prices): $2.50 / $10 per Mtok of text, $64 per Mtok of audio
    output; the answer's audio tokens (`completion_tokens_details.audio_tokens`, 1,000 from the
    fake) are priced at the audio price, in the ledger and the `usage.cost` the client reads."""
    oai = openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0)
    audio = {"voice": "alloy", "format": "pcm16" if stream else "wav"}
    if stream:
        chunks = list(oai.chat.completions.create(model="gpt-audio", messages=ASK, modalities=["text", "audio"],  # type: ignore[call-overload]
                                                  audio=audio, stream=True, stream_options={"include_usage": True}))
        rid, usage = chunks[-1].id, chunks[-1].usage
    else:
        answer = oai.chat.completions.create(model="gpt-audio", messages=ASK, modalities=["text", "audio"],  # type: ignore[call-overload]
                                             audio=audio)
        rid, usage = answer.id, answer.usage
    assert usage is not None and usage.completion_tokens_details.audio_tokens == 1000
    text = usage.completion_tokens - 1000
    expected = (Decimal("2.5") * usage.prompt_tokens + Decimal("10") * text + Decimal("64") * 1000) / 10**6
    assert Decimal(gateway.log_record(rid)["cost"]) == expected == Decimal(str(usage.cost))  # type: ignore[attr-defined]


def test_anthropic_tool_search_is_reserved_for_every_pass_of_the_server_loop(gateway: InProcessGateway) -> None:
    """Each tool search is another sampling pass, reading up to the whole window (100,000 tokens,
    $1 at $10 / Mtok), 10 at most: a $3 key is refused before any provider sees it."""
    tools = [{"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"}]
    body = json.dumps({"model": "claude-big", "max_tokens": 50, "tools": tools,
                       "messages": [{"role": "user", "content": "[[no tools]] find a tool"}]}).encode()
    status, _, answer = gateway.request("POST", "/v1/messages", body, gateway.create_key("tools", monthly_limit="3"),
                                        {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
    assert status == 402, answer[:300]
