"""`type: azure` through a real `tallygate serve` process, with the official openai and anthropic SDKs as clients
against the fake Azure resource: chat and Responses natively, Messages translated, embeddings;
both URL styles; Azure's prices; streamed cost == unstreamed cost; Azure's errors mapped."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.fakes.azure import KEY, FakeAzure
from tests.gateway import ADMIN_KEY, Gateway

O4_MINI = (Decimal("1.1"), Decimal("4.4"))  # genai-prices' azure list, $/Mtok in and out


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzure]:
    with FakeAzure() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(azure: FakeAzure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "providers": {
            "az": {"type": "azure", "base_url": azure.root_url + "/openai/v1", "api_key": KEY, "timeout_s": 2},
            "az-dep": {"type": "azure", "base_url": azure.root_url, "api_key": KEY, "api_version": "2024-10-21"},
            "az-badkey": {"type": "azure", "base_url": azure.root_url, "api_key": "wrong"},
        },
        "models": {
            "o4-mini": {"provider": "az", "model": "o4-mini"},
            "o4-mini-dep": {"provider": "az-dep", "model": "o4-mini"},
            "embed": {"provider": "az-dep", "model": "text-embedding-3-small"},
            "throttled": {"provider": "az", "model": "fail-429"},
            "badkey": {"provider": "az-badkey", "model": "o4-mini"},
        },
    }
    gw = Gateway(tmp_path_factory.mktemp("azure"), config).start()
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def priced(gateway: Gateway, request_id: str) -> Decimal:
    record = gateway.log_record(request_id)
    u = record["usage"]
    assert Decimal(record["cost"]) == (u["input_tokens"] * O4_MINI[0] + u["output_tokens"] * O4_MINI[1]) / 10**6 > 0
    return Decimal(record["cost"])


@pytest.mark.parametrize(("model", "path"), [("o4-mini", "/openai/v1/chat/completions"),
                                             ("o4-mini-dep", "/openai/deployments/o4-mini/chat/completions")])
def test_chat_streamed_and_not_costs_the_same_at_azures_price(client: openai.OpenAI, gateway: Gateway,
                                                              azure: FakeAzure, model: str, path: str) -> None:
    messages = [{"role": "user", "content": "the same question twice"}]
    azure.clear()
    completion = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))  # type: ignore[arg-type]
    assert [r["path"] for r in azure.requests] == [path, path]
    assert azure.requests[0]["headers"]["api-key"] == KEY and "authorization" not in azure.requests[0]["headers"]
    assert priced(gateway, completion.id) == priced(gateway, chunks[0].id)


def test_responses_are_relayed_natively(client: openai.OpenAI, gateway: Gateway, azure: FakeAzure) -> None:
    azure.clear()
    raw = client.responses.with_raw_response.create(model="o4-mini-dep", input="hello")
    assert raw.parse().output_text
    with client.responses.with_streaming_response.create(model="o4-mini-dep", input="hello",
                                                         stream=True) as streamed:
        sse = streamed.read()
    assert b"response.completed" in sse
    assert [r["path"] for r in azure.requests] == ["/openai/responses"] * 2
    assert azure.requests[0]["query"] == {"api-version": "2024-10-21"}
    assert priced(gateway, raw.headers["x-request-id"]) == priced(gateway, streamed.headers["x-request-id"])


def test_messages_are_translated_to_azure_chat(gateway: Gateway, azure: FakeAzure) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    azure.clear()
    message = client.messages.create(model="o4-mini", max_tokens=50,
                                     messages=[{"role": "user", "content": "hi from claude code"}])
    with client.messages.stream(model="o4-mini", max_tokens=50,
                                messages=[{"role": "user", "content": "hi from claude code"}]) as stream:
        final = stream.get_final_message()
    assert message.content[0].type == "text"
    assert [r["path"] for r in azure.requests] == ["/openai/v1/chat/completions"] * 2
    assert priced(gateway, message.id) == priced(gateway, final.id)


def test_embeddings_use_the_deployment_url(client: openai.OpenAI, gateway: Gateway,
                                          azure: FakeAzure) -> None:
    azure.clear()
    raw = client.embeddings.with_raw_response.create(model="embed", input=["a", "b"])
    emb = raw.parse()
    assert len(emb.data) == 2
    assert azure.requests[-1]["path"] == "/openai/deployments/text-embedding-3-small/embeddings"
    record = gateway.log_record(raw.headers["x-request-id"])  # $0.02 per Mtok, genai-prices' azure list
    assert record["usage"]["input_tokens"] == emb.usage.prompt_tokens > 0
    assert Decimal(record["cost"]) == emb.usage.prompt_tokens * Decimal("0.02") / 10**6


def test_azure_throttling_is_a_429_with_retry_after_and_a_refused_key_a_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as throttled:
        client.chat.completions.create(model="throttled", messages=[{"role": "user", "content": "hi"}])
    assert throttled.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="badkey", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502 and KEY not in refused.value.response.text


@pytest.mark.parametrize(("provider", "message"), [
    ({"type": "azure", "api_key": "k"}, "providers.p: .*base_url is required for type: azure"),
    ({"type": "openai", "api_version": "2024-10-21"}, "providers.p: .*api_version applies to type: azure only"),
])
def test_bad_azure_config_is_an_error_naming_the_field(provider: dict, message: str) -> None:
    from tallygate.settings import ConfigError, parse_config

    with pytest.raises(ConfigError, match=message):
        parse_config({"providers": {"p": provider}, "models": {}}, env={})


PNG = "data:image/png;base64,iVBORw0KGgo="
QUERY = {"type": "object", "properties": {"query": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the docs", "parameters": QUERY}}]


def test_tools_and_images_pass_through_natively_at_azures_price(client: openai.OpenAI, gateway: Gateway,
                                                                 azure: FakeAzure) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "find this"},
                                             {"type": "image_url", "image_url": {"url": PNG}}]}]
    azure.clear()
    first = client.chat.completions.create(model="o4-mini", tools=TOOLS, messages=messages)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="o4-mini", tools=TOOLS, messages=messages,  # type: ignore[arg-type]
                                                 stream=True, stream_options={"include_usage": True}))
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "search"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert azure.requests[0]["body"]["messages"][0]["content"][1]["image_url"]["url"] == PNG
    assert priced(gateway, first.id) == priced(gateway, chunks[0].id)
    second = client.chat.completions.create(model="o4-mini", tools=TOOLS, messages=[  # type: ignore[arg-type]
        *messages, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"hits": 3}'}])
    assert second.choices[0].finish_reason == "stop"
    priced(gateway, second.id)
