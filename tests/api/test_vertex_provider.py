"""`type: vertex` (Gemini models on Vertex AI) through a real `tallygate serve` process with the official openai and
anthropic SDKs: a service-account token from the fake token endpoint, refreshed before it
expires; chat, Messages and Responses translated; Google's prices; streamed cost == unstreamed."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tallygate.settings import ConfigError, parse_config
from tests.fakes.vertex import FakeVertex
from tests.gateway import ADMIN_KEY, Gateway

FLASH = (Decimal("0.3"), Decimal("2.5"))  # genai-prices' google list, $/Mtok in and out
PATH = "/v1/projects/tally-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash"


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with FakeVertex() as fake:
        yield fake


@pytest.fixture(scope="module")
def short_lived() -> Iterator[FakeVertex]:
    with FakeVertex(token_lifetime_s=120) as fake:  # inside google-auth's 3 m 45 s refresh margin
        yield fake


@pytest.fixture(scope="module")
def gateway(vertex: FakeVertex, short_lived: FakeVertex,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("vertex")
    keys = {name: tmp_path_factory.mktemp(name) for name in ("sa", "sa-short", "sa-forged")}
    forged = FakeVertex()  # never started: its key signs JWTs `vertex` does not trust
    forged.port = vertex.port
    common = {"type": "vertex", "project": "tally-project", "location": "europe-west4", "timeout_s": 2}
    config = {
        "providers": {
            "vertex": {**common, "base_url": vertex.root_url,
                       "credentials_file": str(vertex.service_account_file(keys["sa"]))},
            "vertex-short": {**common, "base_url": short_lived.root_url,
                             "credentials_file": str(short_lived.service_account_file(keys["sa-short"]))},
            "vertex-forged": {**common, "base_url": vertex.root_url,
                              "credentials_file": str(forged.service_account_file(keys["sa-forged"]))},
        },
        "models": {
            "flash": {"provider": "vertex", "model": "gemini-2.5-flash"},
            "flash-short": {"provider": "vertex-short", "model": "gemini-2.5-flash"},
            "flash-forged": {"provider": "vertex-forged", "model": "gemini-2.5-flash"},
            "gemini-embed": {"provider": "vertex", "model": "gemini-embedding-001"},
            "text-embed": {"provider": "vertex", "model": "text-embedding-005",
                           "pricing": {"input_per_mtok": "0.1", "output_per_mtok": "0"}},
        },
    }
    gw = Gateway(folder, config).start()
    yield gw
    gw.stop()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as c:
        yield c


def priced(gateway: Gateway, request_id: str) -> Decimal:
    record = gateway.log_record(request_id)
    u = record["usage"]
    assert Decimal(record["cost"]) == (u["input_tokens"] * FLASH[0] + u["output_tokens"] * FLASH[1]) / 10**6 > 0
    return Decimal(record["cost"])


def test_chat_on_vertex_with_one_token_for_many_requests(client: openai.OpenAI, gateway: Gateway,
                                                         vertex: FakeVertex) -> None:
    messages = [{"role": "user", "content": "hello vertex"}]
    completion = client.chat.completions.create(model="flash", messages=messages)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(model="flash", messages=messages, stream=True))  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Echo: hello vertex"
    assert priced(gateway, completion.id) == priced(gateway, chunks[0].id)
    calls = [r for r in vertex.requests if r["path"] != "/token"]
    assert [r["path"] for r in calls] == [PATH + ":generateContent", PATH + ":streamGenerateContent"]
    assert len(vertex.tokens) == 1 and all(r["headers"]["authorization"] == "Bearer ya29.fake-1" for r in calls)


def test_token_near_expiry_is_refreshed_before_use(client: openai.OpenAI, short_lived: FakeVertex) -> None:
    for _ in range(2):
        client.chat.completions.create(model="flash-short", messages=[{"role": "user", "content": "hi"}])
    assert len(short_lived.tokens) == 2
    used = [r["headers"]["authorization"] for r in short_lived.requests if r["path"] != "/token"]
    assert used == ["Bearer ya29.fake-1", "Bearer ya29.fake-2"]


def test_messages_and_responses_on_vertex(client: openai.OpenAI, gateway: Gateway) -> None:
    claude_code = anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0)
    ask = {"model": "flash", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    message = claude_code.messages.create(**ask)  # type: ignore[arg-type]
    with claude_code.messages.stream(**ask) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert priced(gateway, message.id) == priced(gateway, final.id)
    raw = client.responses.with_raw_response.create(model="flash", input="hello")
    assert raw.parse().output_text == "Echo: hello"
    with client.responses.stream(model="flash", input="hello") as events:
        streamed = events.get_final_response()
    assert streamed.output_text == "Echo: hello"
    assert priced(gateway, raw.headers["x-request-id"]) == priced(gateway, streamed.id)


def test_refused_service_account_is_a_502_naming_no_secret(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="flash-forged", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 502 and refused.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    assert "PRIVATE KEY" not in refused.value.response.text


@pytest.mark.parametrize(("provider", "message"), [
    ({"type": "vertex"}, "providers.p: .*project is required for type: vertex"),
    ({"type": "vertex", "project": "x", "credentials_file": "/nonexistent/sa.json"},
     "providers.p.credentials_file: no such file"),
    ({"type": "gemini", "project": "x"}, "providers.p: .*project applies to type: vertex only"),
])
def test_bad_vertex_config_is_an_error_naming_the_field(provider: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"providers": {"p": provider}, "models": {}}, env={})


@pytest.mark.parametrize(("model", "calls", "price"), [("gemini-embed", 2, Decimal("0.15")),
                                                       ("text-embed", 1, Decimal("0.1"))])
def test_embeddings_on_predict_priced_by_vertexs_token_counts(client: openai.OpenAI, gateway: Gateway,
                                                              vertex: FakeVertex, model: str, calls: int,
                                                              price: Decimal) -> None:
    """gemini-embedding takes one text a `:predict` (two calls, made together), text-embedding
    all of them; the tokens are Vertex's `statistics.token_count`, priced (google list, or config)."""
    vertex.clear()
    raw = client.embeddings.with_raw_response.create(model=model, input=["hello there", "bye"], dimensions=8)
    answer = raw.parse()
    assert [len(d.embedding) for d in answer.data] == [8, 8] and answer.usage.prompt_tokens == 2 + 1
    assert [d.embedding[0] for d in answer.data] == pytest.approx([0.002, 0.003])  # input order (fake: len % 9)
    predicts = [r for r in vertex.requests if r["path"].endswith(":predict")]
    assert len(predicts) == calls and all(r["headers"]["authorization"].startswith("Bearer ya29.") for r in predicts)
    assert Decimal(gateway.log_record(raw.headers["x-request-id"])["cost"]) == 3 * price / 10**6


PNG = "data:image/png;base64,iVBORw0KGgo="
QUERY = {"type": "object", "properties": {"query": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "search", "description": "Search the docs", "parameters": QUERY}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_images_are_translated_for_vertex_at_googles_price(client: openai.OpenAI, gateway: Gateway,
                                                                      vertex: FakeVertex, stream: bool) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "find this"},
                                             {"type": "image_url", "image_url": {"url": PNG}}]}]
    vertex.clear()
    raw = client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
        model="flash", tools=TOOLS, messages=messages, stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}))
    if stream:
        chunks = list(raw.parse())
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        name = calls[0].function.name
    else:
        answer = raw.parse()
        finish, name = [answer.choices[0].finish_reason], answer.choices[0].message.tool_calls[0].function.name
    assert finish == ["tool_calls"] and name == "search"
    sent = [r for r in vertex.requests if "/publishers/google/" in r["path"]][-1]["body"]
    assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert sent["tools"][0]["functionDeclarations"][0]["name"] == "search"
    priced(gateway, raw.headers["x-request-id"])
