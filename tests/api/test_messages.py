"""`/v1/messages` through a real gateway with the official `anthropic` SDK as the client: native
relay to an Anthropic provider, translation to an OpenAI-compatible one, attribution, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway, InProcessGateway

PRICED = {"input_per_mtok": "3", "output_per_mtok": "15", "cached_input_per_mtok": "0.3",
          "cache_write_per_mtok": "3.75"}
BARE = {"input_per_mtok": "3", "output_per_mtok": "15"}
TOOLS = [{"name": "search", "description": "Search the docs",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def config(upstream: FakeUpstream) -> dict:
    cfg = standard_config(upstream)
    cfg["models"].update({
        "claude-cached": {"provider": "anthropic", "model": "cached-40", "pricing": PRICED},
        "claude-cachewrite": {"provider": "anthropic", "model": "cachewrite-30", "pricing": PRICED},
        "claude-cachewrite-1h": {"provider": "anthropic", "model": "cachewrite1h-30",
                                 "pricing": {**PRICED, "cache_write_1h_per_mtok": "6"}},
        # no 1-hour write price given: Anthropic's, 8/5 of the 5-minute one (was the 5-minute one)
        "claude-cachewrite-1h-default": {"provider": "anthropic", "model": "cachewrite1h-30", "pricing": PRICED},
        # no write price given at all: Anthropic's, 1.25 and 2 times the input price (were 1 and 1)
        "claude-cachewrite-bare": {"provider": "anthropic", "model": "cachewrite-30", "pricing": BARE},
        "claude-cachewrite-1h-bare": {"provider": "anthropic", "model": "cachewrite1h-30", "pricing": BARE},
        "claude-cut": {"provider": "anthropic", "model": "cut-stream", "pricing": PRICED},
        "claude-stream-error": {"provider": "anthropic", "model": "stream-error", "pricing": PRICED},
        "claude-slowstream": {"provider": "anthropic", "model": "slowstream-400"},
        "gpt-cached": {"provider": "openai", "model": "cached-40", "pricing": PRICED},
        "gpt-cut": {"provider": "openai", "model": "cut-stream", "pricing": PRICED},
    })
    cfg["policies"] = {"agents": {"strategy": "fallback", "targets": ["claude-fail-500", "gpt-4o-mini"]}}
    return cfg


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = InProcessGateway(tmp_path_factory.mktemp("gw-messages"), config(upstream)).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.create_key("agents", team="platform")


@pytest.fixture()
def claude(gw: Gateway, key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=10,
                             default_headers={"X-Request-Tags": "agent/claude-code"}) as c:
        yield c


def ask(text: str = "Hello there, gateway") -> list[dict]:
    return [{"role": "user", "content": text}]


def test_native_message_is_attributed_priced_and_passes_anthropic_headers(
        claude: anthropic.Anthropic, gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.clear()
    raw = claude.messages.with_raw_response.create(
        model="claude-cached", max_tokens=64, messages=ask(),
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
        extra_body={"request_tags": ["team/search"]})
    message = raw.parse()
    assert message.id == raw.headers["x-request-id"]
    assert message.content[0].text == "Echo: Hello there, gateway"
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/messages" and "request_tags" not in sent["body"]
    assert sent["body"]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent["headers"]["x-api-key"] == "sk-ant-up"  # ours, never the client's key
    usage = message.usage
    assert usage.cache_read_input_tokens == 40
    # input at $3, cache reads at $0.30, output at $15 per million tokens
    expected = (Decimal(usage.input_tokens) * 3 + 40 * Decimal("0.3") + usage.output_tokens * 15) / 10**6
    raw_cost = re.search(rb'"cost":([0-9.]+)', raw.http_response.content).group(1)
    assert Decimal(raw_cost.decode()) == expected  # exact digits on the wire, never a float
    record = gw.log_record(message.id)
    assert record["endpoint"] == "messages" and record["provider"] == "anthropic"
    assert sorted(record["tags"]) == ["agent/claude-code", "team/search"]
    assert record["labels"] == {"team": "platform"}
    assert record["usage"]["cached_tokens"] == 40
    assert Decimal(record["cost"]) == expected


def test_every_message_role_is_relayed_natively_for_the_provider_to_judge(
        claude: anthropic.Anthropic, gw: Gateway, upstream: FakeUpstream) -> None:
    """Claude Code sends `role: "system"` mid-conversation for model names it does not know."""
    upstream.clear()
    turns = [*ask("first"), {"role": "system", "content": [{"type": "text", "text": "# Environment"}]}]
    message = claude.messages.create(model="claude", max_tokens=16, messages=turns)  # type: ignore[arg-type]
    assert upstream.requests[-1]["body"]["messages"] == turns
    assert gw.log_record(message.id)["status"] == 200
    translated = claude.messages.create(model="gpt-4o-mini", max_tokens=16, messages=turns)  # type: ignore[arg-type]
    assert upstream.requests[-1]["body"]["messages"][-1] == {"role": "system", "content": "# Environment"}
    assert translated.content[0].text == "Echo: first"


@pytest.mark.parametrize(("model", "write_price"), [("claude-cachewrite-1h", 6), ("claude-cachewrite-1h-default", 6),
                                                    ("claude-cachewrite-1h-bare", 6),
                                                    ("claude-cachewrite-bare", Decimal("3.75"))])
@pytest.mark.parametrize("stream", [False, True])
def test_cache_writes_are_priced_at_their_own_rate(claude: anthropic.Anthropic, gw: Gateway,
                                                   stream: bool, model: str, write_price: Decimal) -> None:
    """Each TTL's write at its price, Anthropic's where the model's pricing gives none: what the
    client is told (`usage.cost`) and what the ledger records."""
    body = {"model": model, "max_tokens": 16, "messages": ask("cache me for an hour")}
    if stream:
        with claude.messages.stream(**body) as s:  # type: ignore[arg-type]
            message = s.get_final_message()
    else:
        message = claude.messages.create(**body)  # type: ignore[arg-type]
    usage = message.usage
    assert usage.cache_creation_input_tokens == 30
    expected = (Decimal(usage.input_tokens) * 3 + 30 * write_price + usage.output_tokens * 15) / 10**6
    record = gw.log_record(message.id)
    assert record["usage"]["cache_write_tokens"] == 30 and Decimal(record["cost"]) == expected


def test_stream_costs_the_same_as_the_same_request_unstreamed(claude: anthropic.Anthropic, gw: Gateway) -> None:
    for model in ("claude-cachewrite", "claude-cached", "gpt-cached"):
        plain = claude.messages.create(model=model, max_tokens=64, messages=ask("same cost please"))
        with claude.messages.stream(model=model, max_tokens=64, messages=ask("same cost please")) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == plain.content[0].text == "Echo: same cost please"
        assert final.id.startswith("req_") and final.usage.output_tokens == plain.usage.output_tokens
        a, b = gw.log_record(plain.id), gw.log_record(final.id)
        assert b["stream"] is True and b["partial"] is False
        assert a["usage"] == b["usage"] and a["cost"] == b["cost"] != "0", model


def test_stream_sends_anthropic_event_sequence_with_cost(gw: Gateway, key: str) -> None:
    status, headers, body = gw.request(
        "POST", "/v1/messages", json.dumps({"model": "claude", "max_tokens": 32, "stream": True,
                                            "messages": ask()}).encode(),
        key=None, headers={"x-api-key": key, "Content-Type": "application/json"})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    names = re.findall(rb"^event: (\S+)", body, re.M)
    assert names[0] == b"message_start" and names[-2:] == [b"message_delta", b"message_stop"]
    assert b"ping" in names and b"content_block_delta" in names
    delta = json.loads(body.split(b"event: message_delta\ndata: ")[1].split(b"\n")[0])
    assert Decimal(str(delta["usage"]["cost"])) > 0
    assert headers["x-request-id"] in body.split(b"\n")[1].decode()


def test_translated_message_reaches_openai_provider_as_chat(claude: anthropic.Anthropic, gw: Gateway,
                                                            upstream: FakeUpstream) -> None:
    upstream.clear()
    message = claude.messages.create(model="gpt-4o-mini", max_tokens=50, system="Be brief.",
                                     messages=ask("translate me"), stop_sequences=["END"])
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["body"]["stop"] == ["END"] and sent["body"]["max_tokens"] == 50
    assert message.content[0].text == "Echo: translate me" and message.stop_reason == "end_turn"
    record = gw.log_record(message.id)
    assert record["endpoint"] == "messages" and record["provider"] == "openai"
    assert record["usage"]["input_tokens"] == message.usage.input_tokens > 0


@pytest.mark.parametrize("model", ["claude", "gpt-4o-mini"])
def test_tool_use_round_trip(claude: anthropic.Anthropic, model: str) -> None:
    first = claude.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=ask("find pricing"))
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "search" and call.input == {"query": "Echo: find pricing"}
    with claude.messages.stream(model=model, max_tokens=64, tools=TOOLS, messages=ask("find pricing")) as s:
        streamed = s.get_final_message()
    assert streamed.content[-1].input == call.input and streamed.stop_reason == "tool_use"
    answer = claude.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=[
        *ask("find pricing"), {"role": "assistant", "content": [c.model_dump() for c in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "$3"}]}])
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"


@pytest.mark.parametrize("model", ["claude", "gpt-4o-mini"])
def test_count_tokens(claude: anthropic.Anthropic, gw: Gateway, model: str) -> None:
    raw = claude.messages.with_raw_response.count_tokens(model=model, messages=ask("x" * 400))
    assert raw.parse().input_tokens >= 100
    record = gw.log_record(raw.headers["x-request-id"])
    assert record["endpoint"] == "count_tokens" and record["cost"] == "0"


def test_count_tokens_refuses_what_messages_refuses_on_a_translated_model(
        claude: anthropic.Anthropic, gw: Gateway) -> None:
    """A body `/v1/messages` answers with a 400 for a model behind an OpenAI-compatible provider
    gets the same 400 from count_tokens, not a count of a request that could never be sent."""
    bad = [{"role": "user", "content": 5}]
    with pytest.raises(anthropic.BadRequestError) as sent:
        claude.messages.create(model="gpt-4o-mini", max_tokens=8, messages=bad)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError) as counted:
        claude.messages.count_tokens(model="gpt-4o-mini", messages=bad)  # type: ignore[arg-type]
    assert counted.value.body == sent.value.body
    assert "messages[0].content" in counted.value.message
    record = gw.log_record(counted.value.response.headers["x-request-id"])
    assert record["endpoint"] == "count_tokens" and record["status"] == 400


def test_wrong_method_or_unknown_route_under_messages_is_anthropic_shaped(gw: Gateway, key: str) -> None:
    """An Anthropic client that reaches a route the gateway does not serve under /v1/messages
    (Message Batches, a GET) gets Anthropic's error shape, as on /v1/messages itself."""
    with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=10) as c:
        with pytest.raises(anthropic.NotFoundError) as missing:
            c.messages.batches.list()
    assert missing.value.body["type"] == "error", missing.value.body  # type: ignore[index]
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    status, headers, body = gw.request("GET", "/v1/messages", None, key)
    assert status == 405 and headers["allow"] == "POST"
    assert json.loads(body)["error"]["type"] == "invalid_request_error" and json.loads(body)["type"] == "error"


def test_policy_falls_back_from_native_anthropic_to_translated_openai(
        claude: anthropic.Anthropic, gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.clear()
    message = claude.messages.create(model="policy/agents", max_tokens=32, messages=ask("fall back"))
    assert message.content[0].text == "Echo: fall back"
    assert [r["path"] for r in upstream.requests] == ["/v1/messages", "/v1/chat/completions"]
    record = gw.log_record(message.id)
    assert [(a["target"], a["status"]) for a in record["attempts"]] == [("claude-fail-500", 502),
                                                                        ("gpt-4o-mini", 200)]
    assert record["provider"] == "openai" and record["endpoint"] == "messages"


def test_bearer_token_authenticates_like_x_api_key(gw: Gateway, key: str) -> None:
    with anthropic.Anthropic(base_url=gw.url, auth_token=key, api_key=None, max_retries=0) as c:
        assert c.messages.create(model="claude", max_tokens=8, messages=ask()).content


def test_two_different_keys_in_x_api_key_and_authorization_are_a_400_naming_both(gw: Gateway, key: str) -> None:
    """A client with ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN both set sends both headers: a
    stray token in Authorization was taken over the valid x-api-key (a 401 for a good key)."""
    with anthropic.Anthropic(base_url=gw.url, auth_token="sk-ant-oat01-stray", max_retries=0,
                             default_headers={"x-api-key": key}) as c:
        with pytest.raises(anthropic.BadRequestError) as both:
            c.messages.create(model="claude", max_tokens=8, messages=ask())
        with pytest.raises(anthropic.BadRequestError):
            c.messages.count_tokens(model="claude", messages=ask())
    error = both.value.body["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "conflicting_api_keys"
    assert "x-api-key" in error["message"] and "Authorization" in error["message"]
    with anthropic.Anthropic(base_url=gw.url, auth_token=key, max_retries=0,
                             default_headers={"x-api-key": key}) as same:
        assert same.messages.create(model="claude", max_tokens=8, messages=ask()).content


def test_errors_are_anthropic_shaped(gw: Gateway, claude: anthropic.Anthropic) -> None:
    with anthropic.Anthropic(base_url=gw.url, api_key="tg-wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            bad.messages.create(model="claude", max_tokens=8, messages=ask())
    assert auth.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "invalid API key", "code": "invalid_api_key"}}
    assert auth.value.response.headers["x-request-id"].startswith("req_")
    with pytest.raises(anthropic.BadRequestError) as missing:
        claude.messages.create(model="claude", messages=ask(), max_tokens=0)
    assert missing.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as untranslatable:
        claude.messages.create(model="gpt-4o-mini", max_tokens=8, messages=ask(), extra_body={"top_k": 5})
    assert "top_k" in untranslatable.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=ask())
    assert unknown.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="claude-fail-429", max_tokens=8, messages=ask())
    assert limited.value.body["type"] == "error" and limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(anthropic.InternalServerError) as failed:
        claude.messages.create(model="claude-fail-500", max_tokens=8, messages=ask())
    assert failed.value.status_code == 502 and failed.value.body["error"]["type"] == "api_error"
    record = gw.log_record(failed.value.response.headers["x-request-id"])
    assert record["endpoint"] == "messages" and record["status"] == 502


def test_budget_refusal_is_a_402_in_anthropic_shape(gw: Gateway) -> None:
    status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "tiny", "monthly_limit": "0.000001"})
    assert status in (200, 201), rec
    with anthropic.Anthropic(base_url=gw.url, api_key=rec["key"], max_retries=0) as c:
        with pytest.raises(anthropic.APIStatusError) as refused:
            c.messages.create(model="claude", max_tokens=4000, messages=ask())
    assert refused.value.status_code == 402
    assert refused.value.body["type"] == "error" and refused.value.body["error"]["type"] == "billing_error"
    assert refused.value.body["error"]["code"] == "budget_exceeded"


@pytest.mark.parametrize("model", ["claude-cut", "claude-stream-error", "gpt-cut"])
def test_stream_failing_midway_is_recorded_partial_with_usage_so_far(
        claude: anthropic.Anthropic, gw: Gateway, model: str) -> None:
    with pytest.raises(anthropic.APIError) as failed:
        with claude.messages.stream(model=model, max_tokens=64, messages=ask("a story")) as stream:
            request_id = stream.response.headers["x-request-id"]
            for _ in stream:
                pass
    assert failed.value.body["type"] == "error"
    record = gw.log_record(request_id)
    assert record["partial"] is True and record["stream"] is True and record["endpoint"] == "messages"
    assert record["status"] >= 500 and record["pricing_source"].endswith("(estimated)")
    assert record["usage"]["input_tokens"] > 0 and record["cost"] != "0"  # usage so far


def test_a_translated_stream_cut_short_estimates_its_system_prompt(claude: anthropic.Anthropic, gw: Gateway) -> None:
    """A coding agent's request is mostly its system prompt: a stream an OpenAI-compatible provider
    cut before reporting usage is estimated from the whole request (system prompt included, four
    characters a token), as an answer without usage is, not from its messages alone."""
    system = "You are a careful coding agent. " * 1000  # 32,000 characters: about 8,000 tokens
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(model="gpt-cut", max_tokens=64, system=system, messages=ask("a story")) as stream:
            request_id = stream.response.headers["x-request-id"]
            for _ in stream:
                pass
    record = gw.log_record(request_id)
    assert record["partial"] is True and record["pricing_source"].endswith("(estimated)")
    assert record["usage"]["input_tokens"] >= len(system) // 4, record["usage"]
