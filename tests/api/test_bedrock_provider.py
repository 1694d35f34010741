"""`type: bedrock` through a real `tallygate serve` process, with the official openai and anthropic
SDKs as clients against the fake Bedrock Runtime: chat translated to Converse / ConverseStream
(SigV4 from the AWS credential chain, or a Bedrock API key), Messages and Responses through
the chat translations; Bedrock's own prices; streamed cost == unstreamed cost; AWS errors mapped."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tallygate.settings import ConfigError, parse_config
from tests.fakes.bedrock import ACCESS_KEY, API_KEY, REGION, SECRET_KEY, FakeBedrock
from tests.gateway import ADMIN_KEY, Gateway

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"  # a cross-region inference profile
PRICE = (Decimal("3.3"), Decimal("16.5"))  # genai-prices' aws list (Anthropic's own: 3 / 15)
CACHED = {"input_per_mtok": "3", "output_per_mtok": "15", "cached_input_per_mtok": "0.3",
          "cache_write_per_mtok": "3.75"}


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(bedrock: FakeBedrock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    common = {"type": "bedrock", "region": REGION, "base_url": bedrock.root_url, "timeout_s": 2}
    config = {
        "providers": {"aws": common, "aws-key": {**common, "api_key": API_KEY},
                      "aws-elsewhere": {**common, "region": "eu-west-1"},
                      "aws-claude": {**common, "anthropic_messages": True}},
        "models": {
            "sonnet": {"provider": "aws", "model": SONNET},
            "sonnet-key": {"provider": "aws-key", "model": SONNET},
            "sonnet-native": {"provider": "aws-claude", "model": SONNET},
            "cached": {"provider": "aws", "model": "cached-40", "pricing": CACHED},
            "cachewrite": {"provider": "aws", "model": "cachewrite-30", "pricing": CACHED},
            "throttled": {"provider": "aws", "model": "fail-429", "pricing": CACHED},
            "stream-error": {"provider": "aws", "model": "stream-error", "pricing": CACHED},
            "wrong-region": {"provider": "aws-elsewhere", "model": SONNET},
            "cacheable": {"provider": "aws", "model": SONNET, "pricing": CACHED},
            "titan": {"provider": "aws", "model": "amazon.titan-embed-text-v2:0"},
            "cohere": {"provider": "aws", "model": "cohere.embed-english-v3",
                       "pricing": {"input_per_mtok": "0.1", "output_per_mtok": "0"}},
        },
    }
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    gw = Gateway(tmp_path_factory.mktemp("bedrock"), config, env=env).start()
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def cost(gateway: Gateway, request_id: str, price: tuple[Decimal, Decimal] | None = PRICE) -> Decimal:
    record = gateway.log_record(request_id)
    if price is not None:
        u = record["usage"]
        assert Decimal(record["cost"]) == (u["input_tokens"] * price[0] + u["output_tokens"] * price[1]) / 10**6 > 0
    return Decimal(record["cost"])


@pytest.mark.parametrize("model", ["sonnet", "sonnet-key"])
def test_chat_streamed_and_not_costs_the_same_at_bedrocks_price(client: openai.OpenAI, gateway: Gateway,
                                                                bedrock: FakeBedrock, model: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello bedrock"}]
    bedrock.clear()
    completion = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True))  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Echo: hello bedrock"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello bedrock"
    assert [r["path"] for r in bedrock.requests] == [f"/model/{SONNET}/converse", f"/model/{SONNET}/converse-stream"]
    auth = bedrock.requests[0]["headers"]["authorization"]
    assert auth == f"Bearer {API_KEY}" if model == "sonnet-key" else auth.startswith("AWS4-HMAC-SHA256")
    assert cost(gateway, completion.id) == cost(gateway, chunks[0].id)


@pytest.mark.parametrize(("model", "field", "n"), [("cached", "cached_tokens", 40),
                                                   ("cachewrite", "cache_write_tokens", 30)])
def test_cache_reads_and_writes_land_in_the_ledger(client: openai.OpenAI, gateway: Gateway, model: str,
                                                  field: str, n: int) -> None:
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * 400}])
    chunks = list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * 400}],
                                                 stream=True))
    record = gateway.log_record(completion.id)
    assert record["usage"][field] == n and record["usage"]["input_tokens"] == 100 + n
    assert cost(gateway, completion.id, None) == cost(gateway, chunks[0].id, None) > 0


def test_tool_calls_round_trip(client: openai.OpenAI, bedrock: FakeBedrock) -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    first = client.chat.completions.create(model="sonnet", tools=tools, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "find it"}])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "search"
    second = client.chat.completions.create(model="sonnet", tools=tools, messages=[  # type: ignore[arg-type]
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "3 hits"}])
    assert second.choices[0].finish_reason == "stop"
    assert bedrock.requests[-1]["body"]["messages"][-1]["content"] == [
        {"toolResult": {"toolUseId": call.id, "content": [{"text": "3 hits"}]}}]


def test_messages_and_responses_on_bedrock(client: openai.OpenAI, gateway: Gateway) -> None:
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    ask = {"model": "sonnet", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    message = claude_code.messages.create(**ask)  # type: ignore[arg-type]
    with claude_code.messages.stream(**ask) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert cost(gateway, message.id) == cost(gateway, final.id)
    raw = client.responses.with_raw_response.create(model="sonnet", input="hello")
    with client.responses.with_streaming_response.create(model="sonnet", input="hello", stream=True) as streamed:
        assert b"response.completed" in streamed.read()
    assert raw.parse().output_text == "Echo: hello"
    assert cost(gateway, raw.headers["x-request-id"]) == cost(gateway, streamed.headers["x-request-id"])


def test_messages_go_natively_through_invoke_model_when_configured(gateway: Gateway, bedrock: FakeBedrock) -> None:
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    ask = {"model": "sonnet-native", "max_tokens": 50, "messages": [{"role": "user", "content": "hi natively"}],
           "extra_headers": {"anthropic-beta": "context-1m-2025-08-07"}}
    bedrock.clear()
    message = claude_code.messages.create(**ask)  # type: ignore[arg-type]
    with claude_code.messages.stream(**ask) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert message.content[0].text == "Echo: hi natively"  # type: ignore[union-attr]
    assert [r["path"] for r in bedrock.requests] == [f"/model/{SONNET}/invoke",
                                                      f"/model/{SONNET}/invoke-with-response-stream"]
    sent = bedrock.requests[0]["body"]
    assert sent["anthropic_version"] == "bedrock-2023-05-31" and sent["anthropic_beta"] == ["context-1m-2025-08-07"]
    assert "model" not in sent
    assert cost(gateway, message.id) == cost(gateway, final.id)


def test_aws_errors_map_to_gateway_statuses(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="throttled", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as refused:  # signed for the wrong region: our credentials' fault
        client.chat.completions.create(model="wrong-region", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502 and refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="stream-error", messages=[{"role": "user", "content": "a b c d e"}],
                                            stream=True))


@pytest.mark.parametrize(("provider", "message"), [
    ({"type": "bedrock"}, "providers.p: .*region is required for type: bedrock"),
    ({"type": "openai", "region": "us-east-1"}, "providers.p: .*region applies to type: bedrock only"),
])
def test_bad_bedrock_config_is_an_error_naming_the_field(provider: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"providers": {"p": provider}, "models": {}}, env={})


def test_cache_control_becomes_a_cache_point_written_then_read(client: openai.OpenAI, gateway: Gateway,
                                                               bedrock: FakeBedrock) -> None:
    system = {"role": "system", "content": [{"type": "text", "text": "Stable instructions. " * 40,
                                             "cache_control": {"type": "ephemeral"}}]}
    ask = [system, {"role": "user", "content": "hello"}]
    first = client.chat.completions.create(model="cacheable", messages=ask)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="cacheable", messages=ask, stream=True))  # type: ignore[arg-type]
    sent = bedrock.requests[-1]["body"]["system"]
    assert sent[-1] == {"cachePoint": {"type": "default"}}
    written, read = gateway.log_record(first.id)["usage"], gateway.log_record(chunks[0].id)["usage"]
    n = len("Stable instructions. " * 40) // 4
    assert written["cache_write_tokens"] == read["cached_tokens"] == n and written["cached_tokens"] == 0
    assert written["input_tokens"] == read["input_tokens"]
    fresh = written["input_tokens"] - n
    out = written["output_tokens"]
    assert Decimal(gateway.log_record(first.id)["cost"]) == (fresh * 3 + n * Decimal("3.75") + out * 15) / 10**6
    assert Decimal(gateway.log_record(chunks[0].id)["cost"]) == (fresh * 3 + n * Decimal("0.3") + out * 15) / 10**6


def test_titan_embeddings_one_call_per_text_priced_by_aws(client: openai.OpenAI, gateway: Gateway,
                                                          bedrock: FakeBedrock) -> None:
    bedrock.clear()
    answer = client.embeddings.create(model="titan", input=["hello", "hello world!"], dimensions=256)
    assert [len(d.embedding) for d in answer.data] == [256, 256] and answer.usage.prompt_tokens == 1 + 3
    assert [r["path"] for r in bedrock.requests] == ["/model/amazon.titan-embed-text-v2:0/invoke"] * 2
    one = client.embeddings.with_raw_response.create(model="titan", input="hello world!")
    assert Decimal(gateway.log_record(one.headers["x-request-id"])["cost"]) == 3 * Decimal("0.02") / 10**6


def test_cohere_embeddings_count_tokens_from_bedrocks_header(client: openai.OpenAI, gateway: Gateway,
                                                             bedrock: FakeBedrock) -> None:
    raw = client.embeddings.with_raw_response.create(model="cohere", input=["hello there", "bye"])
    answer = raw.parse()
    assert len(answer.data) == 2 and answer.usage.prompt_tokens == 3
    assert bedrock.requests[-1]["body"]["input_type"] == "search_document"
    assert Decimal(gateway.log_record(raw.headers["x-request-id"])["cost"]) == 3 * Decimal("0.1") / 10**6


def test_embeddings_input_bedrock_cannot_take_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="titan", input=[[1, 2, 3]])
    assert bad.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="titan", input="hi", dimensions=300)
    assert bad.value.body["param"] == "dimensions"  # type: ignore[index]


@pytest.mark.parametrize("stream_first", [False, True])
def test_messages_cache_control_reaches_converse_and_is_priced_at_bedrocks_cache_prices(
        gateway: Gateway, bedrock: FakeBedrock, stream_first: bool) -> None:
    """/v1/messages through Converse: each breakpoint becomes a cache point where the client put
    it; the first call writes the hour-long cache, the second reads it (one streamed, the other
    not, both ways round); the ledger and the SDK's usage carry both, priced with genai-prices'
    aws list (3.3 in, 16.5 out, 0.33 read, 6.6 for an hour's write)."""
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    rules = f"You answer in one line ({stream_first}). " * 60
    ask = {"model": "sonnet", "max_tokens": 50,
           "system": [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
           "messages": [{"role": "user", "content": [{"type": "text", "text": "hello cache"}]}]}

    def streamed() -> anthropic.types.Message:
        with claude_code.messages.stream(**ask) as stream:  # type: ignore[arg-type]
            return stream.get_final_message()

    def whole() -> anthropic.types.Message:
        return claude_code.messages.create(**ask)  # type: ignore[arg-type]

    bedrock.clear()
    first, second = (streamed(), whole()) if stream_first else (whole(), streamed())
    paths = [f"/model/{SONNET}/converse", f"/model/{SONNET}/converse-stream"]
    assert [r["path"] for r in bedrock.requests] == (paths[::-1] if stream_first else paths)
    assert bedrock.requests[0]["body"]["system"] == [{"text": rules}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    n = len(rules) // 4
    assert first.usage.cache_creation_input_tokens == n and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == n and second.usage.cache_creation_input_tokens == 0
    assert first.content[0].text == second.content[0].text == "Echo: hello cache"  # type: ignore[union-attr]
    written, read = gateway.log_record(first.id), gateway.log_record(second.id)
    assert (written["usage"]["cache_write_tokens"], read["usage"]["cached_tokens"]) == (n, n)
    fresh, out = first.usage.input_tokens, first.usage.output_tokens
    assert written["usage"]["input_tokens"] == fresh + n == read["usage"]["input_tokens"]
    assert Decimal(written["cost"]) == (fresh * Decimal("3.3") + n * Decimal("6.6") + out * Decimal("16.5")) / 10**6
    assert Decimal(read["cost"]) == (fresh * Decimal("3.3") + n * Decimal("0.33") + out * Decimal("16.5")) / 10**6


def test_messages_with_images_and_tools_through_converse(gateway: Gateway, bedrock: FakeBedrock) -> None:
    """Claude Code's shapes through Converse: an image and a tool, the tool's call streamed and
    not (the same cost), then its result; the fake checks every block as Converse's unions."""
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    tools = [{"name": "search", "description": "Search the web", "input_schema": {"type": "object"}}]
    ask = {"model": "sonnet", "max_tokens": 50, "tools": tools,
           "extra_headers": {"anthropic-beta": "context-1m-2025-08-07"},
           "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what is this"}]}]}
    bedrock.clear()
    called = claude_code.messages.create(**ask)  # type: ignore[arg-type]
    with claude_code.messages.stream(**ask) as stream:  # type: ignore[arg-type]
        streamed = stream.get_final_message()
    for message in (called, streamed):
        assert message.stop_reason == "tool_use" and message.content[0].type == "tool_use"
        assert message.content[0].name == "search" and message.content[0].input == {"query": "Echo: what is this"}
    assert cost(gateway, called.id) == cost(gateway, streamed.id)
    sent = bedrock.requests[0]["body"]
    assert sent["messages"][0]["content"][0] == {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
    assert sent["toolConfig"]["tools"] == [{"toolSpec": {"name": "search", "description": "Search the web",
                                                         "inputSchema": {"json": {"type": "object"}}}}]
    assert sent["additionalModelRequestFields"] == {"anthropic_beta": ["context-1m-2025-08-07"]}  # Claude's betas
    use = called.content[0]
    answered = claude_code.messages.create(**{**ask, "messages": [  # type: ignore[arg-type]
        *ask["messages"], {"role": "assistant", "content": [use.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a cat"}]}]})
    assert answered.stop_reason == "end_turn" and answered.content[0].type == "text"
    assert bedrock.requests[-1]["body"]["messages"][-1]["content"] == [
        {"toolResult": {"toolUseId": use.id, "content": [{"text": "a cat"}]}}]


def test_count_tokens_on_the_native_claude_provider_asks_bedrocks_count_tokens(gateway: Gateway,
                                                                               bedrock: FakeBedrock) -> None:
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    bedrock.clear()
    counted = claude_code.messages.count_tokens(model="sonnet-native", system="Be brief. " * 10,
                                                messages=[{"role": "user", "content": "count these words"}])
    assert counted.input_tokens == (len("Be brief. " * 10) + len("count these words")) // 4
    [asked] = bedrock.requests  # the foundation model's id: AWS does not count profiles
    assert asked["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/count-tokens"
    assert asked["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")


def test_chat_and_responses_on_a_native_messages_provider_go_through_converse(client: openai.OpenAI, gateway: Gateway,
                                                                              bedrock: FakeBedrock) -> None:
    """`anthropic_messages: true` changes /v1/messages only: chat and Responses on the same model go
    through Converse, streamed and not, at the same cost."""
    messages = [{"role": "user", "content": "hi through converse"}]
    bedrock.clear()
    completion = client.chat.completions.create(model="sonnet-native", messages=messages)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="sonnet-native", messages=messages, stream=True,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}))
    raw = client.responses.with_raw_response.create(model="sonnet-native", input="hello")
    with client.responses.stream(model="sonnet-native", input="hello") as events:
        streamed = events.get_final_response()
    assert [r["path"].rsplit("/", 1)[1] for r in bedrock.requests] == ["converse", "converse-stream"] * 2
    assert completion.choices[0].message.content == "Echo: hi through converse"
    assert cost(gateway, completion.id) == cost(gateway, chunks[0].id) > 0
    assert raw.parse().output_text == streamed.output_text == "Echo: hello"
    assert cost(gateway, raw.headers["x-request-id"]) == cost(gateway, streamed.id) > 0


@pytest.mark.parametrize("model", ["sonnet", "sonnet-native"])
def test_a_limited_1m_context_request_is_refused_where_its_long_context_price_is_unknown(gateway: Gateway,
                                                                                       model: str) -> None:
    """`anthropic-beta: context-1m-...` lets Claude Sonnet 4.5 read over 200K tokens, billed by
    Bedrock at its long-context price ($6.60 / $24.75 a million on a `us.` profile, twice the
    input price); genai-prices gives Bedrock no such tier, so the request would be reserved and
    metered at $3.30 / $16.50 and a key's spend would reach twice its limit at the provider.
    A limited request whose prompt may pass 200K tokens is refused, naming the header; a short
    one is served."""
    key = gateway.create_key(f"long-context-{model}", monthly_limit="100")
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "context-1m-2025-08-07"}
    long = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "lorem ipsum " * 75_000}]}
    status, _, answer = gateway.post_json("/v1/messages", long, key=key, headers=headers)
    assert status == 400 and answer["error"]["type"] == "invalid_request_error", answer
    assert "anthropic-beta" in answer["error"]["message"], answer
    short = {**long, "messages": [{"role": "user", "content": "hello"}]}
    status, _, answer = gateway.post_json("/v1/messages", short, key=key, headers=headers)
    assert status == 200, answer
