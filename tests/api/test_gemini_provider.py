"""`type: gemini` through a real `tallygate serve` process, with the official openai and anthropic SDKs as clients
against the fake Gemini API: chat translated to generateContent (tools, images, thinking,
cachedContent), Messages and Responses through the chat translations; Google's prices from
genai-prices; streamed cost == unstreamed cost; Google's errors mapped."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.fakes.gemini import CACHED_TOKENS, KEY, THOUGHT_TOKENS, FakeGemini
from tests.gateway import ADMIN_KEY, Gateway

FLASH = {"input": Decimal("0.3"), "output": Decimal("2.5"), "cached": Decimal("0.03")}  # google's list, $/Mtok
PNG = "data:image/png;base64,iVBORw0KGgo="
VIDEO = {"type": "image_url", "image_url": {"url": "data:video/mp4;base64,AAAA"}}
QUERY = {"type": "object", "properties": {"query": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the docs", "parameters": QUERY}}]


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(gemini: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "providers": {
            "google": {"type": "gemini", "base_url": gemini.root_url, "api_key": KEY, "timeout_s": 2},
            "google-badkey": {"type": "gemini", "base_url": gemini.root_url, "api_key": "wrong"},
        },
        "models": {
            "flash": {"provider": "google", "model": "gemini-2.5-flash"},
            "throttled": {"provider": "google", "model": "fail-429"},
            "cut": {"provider": "google", "model": "cut-stream"},
            "badkey": {"provider": "google-badkey", "model": "gemini-2.5-flash"},
            "embed": {"provider": "google", "model": "gemini-embedding-001"},
            "long": {"provider": "google", "model": "long-3000",  # $0.001 a token
                     "pricing": {"input_per_mtok": "1000", "output_per_mtok": "1000"}},
            "embed-usage": {"provider": "google", "model": "gemini-embedding-001-usage",
                            "pricing": {"input_per_mtok": "0.15", "output_per_mtok": "0"}},
        },
    }
    gw = Gateway(tmp_path_factory.mktemp("gemini"), config).start()
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def priced(gateway: Gateway, request_id: str) -> tuple[Decimal, dict]:
    """The recorded cost, checked against Google's list price for the recorded usage."""
    record = gateway.log_record(request_id)
    u = record["usage"]
    expected = ((u["input_tokens"] - u["cached_tokens"]) * FLASH["input"] + u["cached_tokens"] * FLASH["cached"]
                + u["output_tokens"] * FLASH["output"]) / 10**6
    assert Decimal(record["cost"]) == expected > 0
    assert record["pricing_source"].startswith("genai-prices")
    return Decimal(record["cost"]), u


@pytest.mark.parametrize(("extra", "param"), [
    ({"cached_content": "cachedContents/docs"}, "cached_content"),  # a cache the request reads, unseen
    ({"messages": [{"role": "user", "content": [VIDEO]}]},
     "messages[0].content[0].image_url.url"),  # Gemini bills a video per second, not as one image
])
def test_a_limited_key_cannot_send_gemini_what_its_reservation_cannot_bound(gateway: Gateway, extra: dict,
                                                                            param: str) -> None:
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": f"gemini-limited-{param}", "monthly_limit": "1"})
    assert status == 201, key
    body = {"model": "flash", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}
    status, _, answer = gateway.post_json("/v1/chat/completions", body, key["key"])
    assert status == 400 and answer["error"]["param"] == param, answer


@pytest.mark.parametrize("extra", [{}, {"reasoning_effort": "low"}, {"cached_content": "cachedContents/docs"}])
def test_chat_streamed_and_not_costs_the_same_at_googles_price(client: openai.OpenAI, gateway: Gateway,
                                                               gemini: FakeGemini, extra: dict) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is Tallygate?"}]
    gemini.clear()
    completion = client.chat.completions.create(model="flash", messages=messages, extra_body=extra)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="flash", messages=messages, stream=True,  # type: ignore[arg-type]
                                                 extra_body=extra))
    assert completion.choices[0].message.content == "Echo: What is Tallygate?"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: What is Tallygate?"
    sent = gemini.requests[0]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    streamed = gemini.requests[1]
    assert streamed["path"].endswith(":streamGenerateContent") and streamed["query"] == {"alt": "sse"}
    assert sent["headers"]["x-goog-api-key"] == KEY
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    json_cost, usage = priced(gateway, completion.id)
    stream_cost, _ = priced(gateway, chunks[0].id)
    assert json_cost == stream_cost
    assert usage["reasoning_tokens"] == (THOUGHT_TOKENS if "reasoning_effort" in extra else 0)
    assert usage["cached_tokens"] == (CACHED_TOKENS if "cached_content" in extra else 0)


def test_tool_calls_and_images_round_trip(client: openai.OpenAI, gemini: FakeGemini) -> None:
    gemini.clear()
    first = client.chat.completions.create(model="flash", tools=TOOLS, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": [{"type": "text", "text": "find this"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]}])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "search"
    assert gemini.requests[-1]["body"]["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    second = client.chat.completions.create(model="flash", tools=TOOLS, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "find this"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"hits": 3}'}])
    assert second.choices[0].finish_reason == "stop"
    assert gemini.requests[-1]["body"]["contents"][-1] == {
        "role": "user", "parts": [{"functionResponse": {"name": "search", "response": {"hits": 3}}}]}


def test_messages_are_translated_to_gemini(gateway: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    ask = {"model": "flash", "max_tokens": 50, "system": "Be brief.",
           "messages": [{"role": "user", "content": "hi from claude code"}]}
    message = client.messages.create(**ask)  # type: ignore[arg-type]
    with client.messages.stream(**ask) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert message.content[0].type == "text" and final.content[0].type == "text"
    assert priced(gateway, message.id)[0] == priced(gateway, final.id)[0]
    tools = client.messages.create(**ask, tools=[{"name": "search", "input_schema": {"type": "object"}}])  # type: ignore[arg-type]
    assert tools.stop_reason == "tool_use" and tools.content[-1].type == "tool_use"


def test_responses_are_translated_to_gemini(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.responses.with_raw_response.create(model="flash", input="hello there")
    assert raw.parse().output_text == "Echo: hello there"
    with client.responses.with_streaming_response.create(model="flash", input="hello there", stream=True) as streamed:
        assert b"response.completed" in streamed.read()
    assert priced(gateway, raw.headers["x-request-id"])[0] == priced(gateway, streamed.headers["x-request-id"])[0]


def test_google_errors_map_to_gateway_statuses(client: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model="throttled", messages=[{"role": "user", "content": "hi"}])
    assert throttled.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.APIStatusError) as refused:  # Gemini's 400 API_KEY_INVALID: our key, not the caller's
        client.chat.completions.create(model="badkey", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502 and refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as web_image:
        client.chat.completions.create(model="flash", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert web_image.value.body["param"] == "messages[0].content[0].image_url.url"  # type: ignore[index]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="cut", messages=[{"role": "user", "content": "a b c d e"}],
                                            stream=True))


def test_a_stream_cut_short_estimates_gemini_chunks_by_their_text(client: openai.OpenAI, gateway: Gateway) -> None:
    """Gemini streams many tokens a chunk: a chat stream it cut short is estimated by the text
    relayed, about four characters a token (as on /v1/messages and /v1/responses), not a token
    per chunk, which is how only OpenAI-compatible servers stream."""
    word = "Pneumonoultramicroscopicsilicov"  # one chunk of the fake's echo
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="cut", stream=True,
                                                    messages=[{"role": "user", "content": word + " is long"}]):
            received.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "Echo: " + word  # the answer's first two chunks, then the cut
    record = gateway.log_record(received[0].id)
    assert record["partial"] is True and record["pricing_source"].endswith("(estimated)")
    assert record["usage"]["output_tokens"] == math.ceil(len(text) / 4), record["usage"]

@pytest.mark.parametrize("model", ["embed", "embed-usage"])
def test_embeddings_through_batch_embed_contents_priced_by_googles_token_count(
        client: openai.OpenAI, gateway: Gateway, gemini: FakeGemini, model: str) -> None:
    """Gemini's embeddings answer has no token count: the gateway asks countTokens for the same
    texts (or reads usageMetadata when the answer has it) and prices that at $0.15/Mtok."""
    gemini.clear()
    raw = client.embeddings.with_raw_response.create(model=model, input=["hello there", "bye"], dimensions=16)
    answer = raw.parse()
    assert [len(d.embedding) for d in answer.data] == [16, 16] and answer.usage.prompt_tokens == 2 + 1
    calls = [r["path"].rsplit(":", 1)[1] for r in gemini.requests]
    assert calls == (["batchEmbedContents"] if model == "embed-usage" else ["batchEmbedContents", "countTokens"])
    assert gemini.requests[0]["body"]["requests"][1] == {
        "model": f"models/{gemini.requests[0]['path'].split('/')[-1].split(':')[0]}",
        "content": {"parts": [{"text": "bye"}]}, "outputDimensionality": 16}
    record = gateway.log_record(raw.headers["x-request-id"])
    assert Decimal(record["cost"]) == 3 * Decimal("0.15") / 10**6
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model=model, input="hi", dimensions=4000)
    assert bad.value.body["param"] == "dimensions"  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_a_null_max_completion_tokens_does_not_lift_the_cap_reserved_for(gateway: Gateway, stream: bool) -> None:
    """`max_tokens: 10` with `max_completion_tokens: null`: the reservation counts 10 output
    tokens, so Gemini is sent `maxOutputTokens: 10`, not no cap (Gemini 2.5's default is 65,536)."""
    key = gateway.create_key(f"gemini-null-cap-{stream}", monthly_limit="0.5")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        args: dict = {"model": "long", "messages": [{"role": "user", "content": "write"}], "max_tokens": 10,
                      "extra_body": {"max_completion_tokens": None}}
        if stream:
            chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(**args).usage
    assert usage is not None and usage.completion_tokens <= 10, usage
    assert gateway.spend_when_settled(key) <= Decimal("0.5")
