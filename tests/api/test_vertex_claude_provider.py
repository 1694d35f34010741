"""`type: vertex` with `publisher: anthropic` (Claude on Vertex AI) through a real `tallygate serve` process with the
official anthropic and openai SDKs: `/v1/messages` relayed natively to `:rawPredict` /
`:streamRawPredict` (model in the URL, `anthropic_version: vertex-2023-10-16` in the body), chat
and Responses translated; priced by genai-prices' `google` list; streamed cost == unstreamed."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tallygate.settings import ConfigError, parse_config
from tests.fakes.vertex import FakeVertex
from tests.gateway import ADMIN_KEY, Gateway

HAIKU = (Decimal("1"), Decimal("5"))  # genai-prices' google list: claude-haiku-4-5, $/Mtok in and out
MODEL = "claude-haiku-4-5@20251001"
PATH = "/v1/projects/tally-project/locations/europe-west4/publishers/anthropic/models/" + MODEL


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with FakeVertex() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vertex: FakeVertex, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sa = vertex.service_account_file(tmp_path_factory.mktemp("sa"))
    provider = {"type": "vertex", "publisher": "anthropic", "project": "tally-project", "location": "europe-west4",
                "base_url": vertex.root_url, "credentials_file": str(sa), "timeout_s": 2}
    config = {"providers": {"vertex-claude": provider},
              "models": {"haiku": {"provider": "vertex-claude", "model": MODEL},
                         "throttled": {"provider": "vertex-claude", "model": "fail-429@1"}}}
    gw = Gateway(tmp_path_factory.mktemp("gw"), config).start()
    yield gw
    gw.stop()


@pytest.fixture()
def claude(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def priced(gateway: Gateway, request_id: str) -> Decimal:
    record = gateway.log_record(request_id)
    u = record["usage"]
    assert Decimal(record["cost"]) == (u["input_tokens"] * HAIKU[0] + u["output_tokens"] * HAIKU[1]) / 10**6 > 0
    return Decimal(record["cost"])


def calls(vertex: FakeVertex) -> list[dict]:
    return [r for r in vertex.requests if r["path"] != "/token"]


def test_messages_are_native_on_raw_predict(claude: anthropic.Anthropic, gateway: Gateway,
                                            vertex: FakeVertex) -> None:
    vertex.clear()
    ask = {"model": "haiku", "max_tokens": 50, "messages": [{"role": "user", "content": "hello claude"}]}
    message = claude.messages.create(**ask)  # type: ignore[arg-type]
    with claude.messages.stream(**ask, extra_headers={"anthropic-beta": "context-1m-2025-08-07"}) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert message.content[0].text == final.content[0].text == "Echo: hello claude"  # type: ignore[union-attr]
    assert priced(gateway, message.id) == priced(gateway, final.id)
    sent = calls(vertex)
    assert [r["path"] for r in sent] == [PATH + ":rawPredict", PATH + ":streamRawPredict"]
    assert all(r["body"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in r["body"] for r in sent)
    assert sent[0]["headers"]["authorization"].startswith("Bearer ya29.fake-")
    assert sent[1]["headers"]["anthropic-beta"] == "context-1m-2025-08-07" and sent[1]["body"]["stream"] is True
    counted = claude.messages.count_tokens(model="haiku", messages=ask["messages"])  # type: ignore[arg-type]
    assert counted.input_tokens == len("hello claude") // 4
    assert calls(vertex)[-1]["path"].endswith("/publishers/anthropic/models/count-tokens:rawPredict")


def test_chat_and_responses_are_translated(gateway: Gateway, vertex: FakeVertex) -> None:
    vertex.clear()
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        messages = [{"role": "user", "content": "hello vertex claude"}]
        completion = client.chat.completions.create(model="haiku", messages=messages)  # type: ignore[arg-type]
        chunks = list(client.chat.completions.create(model="haiku", messages=messages, stream=True,  # type: ignore[arg-type]
                                                     stream_options={"include_usage": True}))
        raw = client.responses.with_raw_response.create(model="haiku", input="hello")
        with client.responses.stream(model="haiku", input="hello") as events:
            streamed = events.get_final_response()
    assert completion.choices[0].message.content == "Echo: hello vertex claude"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello vertex claude"
    assert priced(gateway, completion.id) == priced(gateway, chunks[0].id)
    assert raw.parse().output_text == streamed.output_text == "Echo: hello"
    assert priced(gateway, raw.headers["x-request-id"]) == priced(gateway, streamed.id)
    assert [r["path"].rsplit(":", 1)[1] for r in calls(vertex)] == ["rawPredict", "streamRawPredict", "rawPredict",
                                                                    "streamRawPredict"]


def test_vertex_quota_is_a_429_with_retry_after(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as throttled:
        claude.messages.create(model="throttled", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert throttled.value.response.headers["retry-after"] == "2"


def test_publisher_applies_to_vertex_only() -> None:
    with pytest.raises(ConfigError, match="providers.p: .*publisher applies to type: vertex only"):
        parse_config({"providers": {"p": {"type": "gemini", "publisher": "anthropic"}}, "models": {}}, env={})


def test_embeddings_on_vertex_claude_are_a_400_naming_the_model(gateway: Gateway, vertex: FakeVertex) -> None:
    """Anthropic's models on Vertex AI are chat models (no embeddings there): the client is told so,
    and no call is made."""
    vertex.clear()
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="haiku", input="hello")
    assert refused.value.body["param"] == "model" and "chat model" in refused.value.body["message"]  # type: ignore[index]
    assert calls(vertex) == []
