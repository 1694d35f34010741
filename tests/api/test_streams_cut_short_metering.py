"""A stream that ends early is metered from what the client got and what the provider said.

Text chunks that arrive in the same read as the provider's in-band error event are relayed and
counted before the error event ends the stream (not dropped with the read, leaving a 502 at $0
that the provider may bill). A stream cut short is priced with the prompt's counts the provider
had already reported (Anthropic's `message_start`, Gemini's `usageMetadata` in every chunk), only
the output estimated from the text relayed. Real HTTP: fake OpenAI, Anthropic, Gemini and Bedrock
servers speaking their wire formats, the official SDKs as clients.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.fakes.bedrock import API_KEY, REGION, FakeBedrock
from tests.fakes.gemini import KEY, FakeGemini
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway

PRICE = {"input_per_mtok": "1000", "output_per_mtok": "2000", "cached_input_per_mtok": "100"}  # $/token / 1000
STORY = [{"role": "user", "content": "Tell me a story about a lighthouse keeper and the sea, please."}]


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def bedrock() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(upstream: FakeUpstream, gemini: FakeGemini, bedrock: FakeBedrock,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    providers = {
        "openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream", "timeout_s": 2},
        "anthropic": {"type": "anthropic", "base_url": upstream.root_url, "api_key": "sk-ant-up", "timeout_s": 2},
        "google": {"type": "gemini", "base_url": gemini.root_url, "api_key": KEY, "timeout_s": 2},
        "aws": {"type": "bedrock", "region": REGION, "base_url": bedrock.root_url, "api_key": API_KEY,
                "timeout_s": 2},
    }
    providers["aws-claude"] = {**providers["aws"], "anthropic_messages": True}  # Messages natively, on Converse
    models = {f"{p}-{m}": {"provider": p, "model": m, "pricing": PRICE}
              for p in providers for m in ("batch-error", "cut-stream", "cut-at-end", "gemini-2.5-flash")}
    models |= {f"anthropic-{m}": {"provider": "anthropic", "model": m, "pricing": PRICE}
               for m in ("cached-40", "cut-cached-40", "slowstream-2500")}  # 2.5 s between events: past the 2 s
    gateway = InProcessGateway(tmp_path_factory.mktemp("gw-cut-short"),
                               {"providers": providers, "models": models}).start()
    yield gateway
    gateway.stop()


@pytest.fixture()
def oai(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=10) as c:
        yield c


@pytest.fixture()
def claude(gw: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key=ADMIN_KEY, max_retries=0, timeout=10) as c:
        yield c


def priced(record: dict) -> Decimal:
    """What the record's usage costs at PRICE."""
    u = record["usage"]
    uncached = u["input_tokens"] - u["cached_tokens"]
    return (uncached * Decimal(1000) + u["cached_tokens"] * Decimal(100) + u["output_tokens"] * Decimal(2000)) / 10**6


def chat_until_error(oai: openai.OpenAI, model: str) -> tuple[str, list[str]]:
    """A streamed chat completion that fails midway: its request id and the text deltas received."""
    stream = oai.chat.completions.create(model=model, messages=STORY, stream=True,  # type: ignore[arg-type]
                                         stream_options={"include_usage": True})
    ids, texts = [], []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            ids.append(chunk.id)
            assert chunk.usage is None  # a stream that fails is told no cost: its record has one
            texts += [c.delta.content for c in chunk.choices if c.delta.content]
    assert ids, "the chunks before the error should have reached the client"
    return ids[0], texts


def assert_estimated(record: dict, output_tokens: int) -> None:
    assert record["partial"] is True and record["status"] >= 429 and record["stream"] is True
    assert record["pricing_source"].endswith("(estimated)")
    assert record["usage"]["input_tokens"] > 0
    assert record["usage"]["output_tokens"] == output_tokens > 0
    assert Decimal(record["cost"]) == priced(record) > 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google", "aws"])
def test_text_read_with_an_error_event_is_relayed_and_counted(oai: openai.OpenAI, gw: Gateway,
                                                              provider: str) -> None:
    request_id, texts = chat_until_error(oai, f"{provider}-batch-error")
    assert texts
    record = gw.log_record(request_id)
    # OpenAI streams a token a delta; a translated stream is estimated by its text, four characters a token
    assert_estimated(record, len(texts) if provider == "openai" else math.ceil(len("".join(texts)) / 4))


# translated from chat; Bedrock's own, on ConverseStream and on InvokeModelWithResponseStream
@pytest.mark.parametrize("model", ["openai-batch-error", "aws-batch-error", "aws-claude-batch-error"])
def test_messages_relay_text_read_with_an_error_event(claude: anthropic.Anthropic, gw: Gateway, model: str) -> None:
    texts = []
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(model=model, max_tokens=64, messages=STORY) as stream:
            request_id = stream.response.headers["x-request-id"]
            for text in stream.text_stream:
                texts.append(text)
    assert texts
    assert_estimated(gw.log_record(request_id), math.ceil(len("".join(texts)) / 4))


def test_responses_translated_relays_text_read_with_an_error_event(oai: openai.OpenAI, gw: Gateway) -> None:
    raw = oai.responses.with_raw_response.create(model="anthropic-batch-error", input="a story", stream=True)
    events = list(raw.parse())
    assert events[-1].type == "error"
    texts = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert texts
    assert_estimated(gw.log_record(raw.headers["x-request-id"]), math.ceil(len("".join(texts)) / 4))


def whole(oai: openai.OpenAI, gw: Gateway, model: str) -> dict:
    """The record of the same request answered in full: the prompt's counts the provider reports."""
    answer = oai.chat.completions.with_raw_response.create(model=model, messages=STORY)  # type: ignore[arg-type]
    return gw.log_record(answer.headers["x-request-id"])["usage"]


@pytest.mark.parametrize("provider, whole_model, cut_model", [
    ("anthropic", "anthropic-cached-40", "anthropic-cut-cached-40"),  # message_start: input and cache reads
    ("google", "google-gemini-2.5-flash", "google-cut-stream"),  # usageMetadata.promptTokenCount in each chunk
    ("anthropic", "anthropic-gemini-2.5-flash", "anthropic-slowstream-2500"),  # stalled after message_start
])
def test_a_cut_chat_stream_keeps_the_prompt_the_provider_reported(oai: openai.OpenAI, gw: Gateway, provider: str,
                                                                  whole_model: str, cut_model: str) -> None:
    reported = whole(oai, gw, whole_model)
    request_id, texts = chat_until_error(oai, cut_model)
    record = gw.log_record(request_id)
    assert (record["usage"]["input_tokens"], record["usage"]["cached_tokens"]) == (
        reported["input_tokens"], reported["cached_tokens"])
    stalled = "slowstream" in cut_model  # past the timeout: charged the cap sent (the gateway's 4,096)
    assert record["usage"]["output_tokens"] == (4096 if stalled else math.ceil(len("".join(texts)) / 4))
    assert record["partial"] is True and record["pricing_source"].endswith("(estimated)")
    assert Decimal(record["cost"]) == priced(record) > 0


def test_a_cut_messages_stream_translated_keeps_the_prompt_the_provider_reported(
        oai: openai.OpenAI, claude: anthropic.Anthropic, gw: Gateway) -> None:
    reported = whole(oai, gw, "google-gemini-2.5-flash")
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(model="google-cut-stream", max_tokens=64, messages=STORY) as stream:
            request_id = stream.response.headers["x-request-id"]
            for _ in stream:
                pass
    record = gw.log_record(request_id)
    assert record["usage"]["input_tokens"] == reported["input_tokens"]
    assert record["partial"] is True and Decimal(record["cost"]) == priced(record) > 0


def test_a_cut_responses_stream_translated_keeps_the_prompt_the_provider_reported(
        oai: openai.OpenAI, gw: Gateway) -> None:
    reported = whole(oai, gw, "anthropic-cached-40")
    raw = oai.responses.with_raw_response.create(model="anthropic-cut-cached-40", input=STORY,  # type: ignore[arg-type]
                                                 stream=True)
    assert list(raw.parse())[-1].type == "error"
    record = gw.log_record(raw.headers["x-request-id"])
    assert (record["usage"]["input_tokens"], record["usage"]["cached_tokens"]) == (
        reported["input_tokens"], reported["cached_tokens"])
    assert record["partial"] is True and Decimal(record["cost"]) == priced(record) > 0


def test_a_chat_stream_cut_after_its_usage_chunk_keeps_that_usage(oai: openai.OpenAI, gw: Gateway) -> None:
    """OpenAI's usage comes in the last chunk before `[DONE]`: a stream cut between the two was
    told its cost in that chunk, and its record says the same, not an estimate."""
    stream = oai.chat.completions.create(model="openai-cut-at-end", messages=STORY, stream=True,  # type: ignore[arg-type]
                                         stream_options={"include_usage": True})
    told = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            told += [chunk] if chunk.usage is not None else []
    [last] = told
    record = gw.log_record(last.id)
    assert record["partial"] is True and record["pricing_source"] == "config"
    assert (record["usage"]["input_tokens"], record["usage"]["output_tokens"]) == (
        last.usage.prompt_tokens, last.usage.completion_tokens)
    assert Decimal(record["cost"]) == Decimal(str(last.usage.model_extra["cost"])) == priced(record) > 0


def test_a_messages_stream_cut_after_its_message_delta_keeps_that_usage(claude: anthropic.Anthropic,
                                                                        gw: Gateway) -> None:
    """Anthropic's final usage (and the gateway's `usage.cost`) come in `message_delta`, before
    `message_stop`: a stream cut between the two keeps the cost the client was told."""
    told = []
    with pytest.raises(anthropic.APIError):
        with claude.messages.stream(model="anthropic-cut-at-end", max_tokens=64, messages=STORY) as stream:
            request_id = stream.response.headers["x-request-id"]
            for event in stream:
                told += [event.usage] if event.type == "message_delta" else []
    [usage] = told
    record = gw.log_record(request_id)
    assert record["partial"] is True and record["pricing_source"] == "config"
    assert record["usage"]["output_tokens"] == usage.output_tokens
    assert Decimal(record["cost"]) == Decimal(str(usage.model_extra["cost"])) == priced(record) > 0
