"""Chat completions through the gateway with the official `openai` SDK as the client."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

import tallygate
from tests.gateway import Gateway


def test_completion_carries_gateway_id_cost_and_strips_tags(client: openai.OpenAI, gateway: Gateway,
                                                            upstream) -> None:
    upstream.clear()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there, gateway"}],
        extra_body={"request_tags": ["team/search", "US/California/SF"]})
    completion = raw.parse()
    assert completion.id == raw.headers["x-request-id"]
    assert completion.choices[0].message.content
    usage = completion.usage.model_dump()
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    forwarded = upstream.requests[-1]["body"]
    assert "request_tags" not in forwarded
    assert forwarded["model"] == "gpt-4o-mini"

    record = gateway.log_record(completion.id)
    assert record["tags"] == ["team/search", "US/California/SF"]
    assert record["labels"] == {"team": "growth", "env": "test"}
    assert record["status"] == 200 and record["provider"] == "openai"
    assert record["usage"]["input_tokens"] == usage["prompt_tokens"]
    # gpt-4o-mini from genai-prices: $0.15 / $0.60 per million tokens
    expected = (Decimal(usage["prompt_tokens"]) * Decimal("0.15")
                + Decimal(usage["completion_tokens"]) * Decimal("0.60")) / 10**6
    assert Decimal(record["cost"]) == expected
    assert Decimal(str(usage["cost"])) == expected
    assert record["pricing_source"].startswith("genai-prices")


def test_config_pricing_override_and_cached_tokens_are_exact(client: openai.OpenAI,
                                                             gateway: Gateway) -> None:
    completion = client.chat.completions.create(
        model="cached", messages=[{"role": "user", "content": "x" * 2000}])
    u = completion.usage
    cached = u.prompt_tokens_details.cached_tokens
    assert cached == 100
    expected = (Decimal(u.prompt_tokens - cached) * 2 + Decimal(cached) * Decimal("0.5")
                + Decimal(u.completion_tokens) * 8) / 10**6
    record = gateway.log_record(completion.id)
    assert Decimal(record["cost"]) == expected
    assert record["usage"]["cached_tokens"] == 100
    assert record["pricing_source"] == "config"


def test_stream_without_include_usage_hides_usage_but_meters_it(client: openai.OpenAI, gateway: Gateway,
                                                                upstream) -> None:
    upstream.clear()
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], stream=True,
        extra_body={"request_tags": ["feature/stream"]})
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    assert upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    record = gateway.log_record(ids.pop())
    assert record["stream"] is True and record["usage"]["output_tokens"] > 0
    assert Decimal(record["cost"]) > 0 and record["ttft_ms"] is not None


def test_stream_with_include_usage_gets_usage_chunk_with_cost(client: openai.OpenAI,
                                                              gateway: Gateway) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    cost = last.usage.model_dump()["cost"]
    record = gateway.log_record(last.id)
    assert Decimal(str(cost)) == Decimal(record["cost"]) > 0
    assert record["usage"]["output_tokens"] == last.usage.completion_tokens


def test_tags_header_is_merged_with_body_tags(gateway: Gateway, api_key: str) -> None:
    status, headers, body = gateway.post_json(
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
         "request_tags": ["production"]},
        key=api_key, headers={"X-Request-Tags": "team/a%2Cb, caf%C3%A9/x"})
    assert status == 200, body
    record = gateway.log_record(headers["x-request-id"])
    assert record["tags"] == ["production", "team/a,b", "café/x"]


def test_embeddings_and_models(client: openai.OpenAI, gateway: Gateway) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed", input=["one", "two"])
    result = raw.parse()
    assert len(result.data) == 2 and result.usage.prompt_tokens > 0
    record = gateway.log_record(raw.headers["x-request-id"])
    assert record["endpoint"] == "embeddings" and Decimal(record["cost"]) > 0
    names = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "claude", "embed"} <= names


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_provider_through_openai_sdk(client: openai.OpenAI, gateway: Gateway, upstream,
                                               stream: bool) -> None:
    upstream.clear()
    kwargs = dict(model="claude", max_tokens=50, temperature=0.5, stop=["END"],
                  messages=[{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Hello Claude"}])
    if stream:
        chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                     **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage, rid = chunks[-1].usage, chunks[-1].id
        assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    else:
        completion = client.chat.completions.create(**kwargs)
        text, usage, rid = completion.choices[0].message.content, completion.usage, completion.id
        assert completion.choices[0].finish_reason == "stop"
    assert text
    sent = upstream.requests[-1]
    assert sent["path"].endswith("/v1/messages")
    assert sent["body"]["system"] == "Be brief."
    assert sent["body"]["max_tokens"] == 50 and sent["body"]["stop_sequences"] == ["END"]
    assert sent["headers"]["x-api-key"] == "sk-ant-up"
    record = gateway.log_record(rid)
    assert record["provider"] == "anthropic" and record["served_model"] == "claude-3-5-haiku-latest"
    assert record["usage"]["input_tokens"] == usage.prompt_tokens > 0
    assert Decimal(record["cost"]) > 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_providers_see_the_gateways_user_agent_not_the_clients(client: openai.OpenAI, upstream, stream: bool) -> None:  # type: ignore[no-untyped-def]
    """Every provider call names the gateway (`tallygate/<version>`), JSON calls (pyreqwest) and
    streams (aiohttp) alike; the client's own User-Agent (the SDK's) is not passed on."""
    upstream.clear()
    messages = [{"role": "user", "content": "Hello"}]
    if stream:
        list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))  # type: ignore[arg-type]
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert upstream.requests[-1]["headers"]["user-agent"] == f"tallygate/{tallygate.__version__}"
