"""Every provider type x every inbound API, streamed and not, through one real `tallygate serve`
process with the official openai and anthropic SDKs as clients: a function call round trip whose
first turn carries an image; the answer's shape; the ledger's cost equal to the client's token
counts times the provider's own genai-prices price (stated here, not asked of our pricer); the
streamed cost equal to the unstreamed one. Embeddings where the provider has them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.fakes.clouds import FakeClouds
from tests.fakes.gemini import CACHED_TOKENS
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
# model name -> (provider, upstream model, genai-prices' $/Mtok in and out on that provider's list)
TARGETS = {
    "azure": ("az", "o4-mini", ("1.1", "4.4")),  # azure
    "bedrock": ("br", SONNET, ("3.3", "16.5")),  # aws (Anthropic's own: 3 / 15)
    "bedrock-invoke": ("brc", SONNET, ("3.3", "16.5")),  # aws; /v1/messages through InvokeModel
    "gemini": ("ge", "gemini-2.5-flash", ("0.3", "2.5")),  # google
    "vertex": ("vx", "gemini-2.5-flash", ("0.3", "2.5")),  # google
    "gemini-3": ("ge", "gemini-3-flash-preview", ("0.5", "3")),  # google; signs its function calls
    "vertex-3": ("vx", "gemini-3-flash-preview", ("0.5", "3")),  # google
    "vertex-claude": ("vxc", "claude-haiku-4-5@20251001", ("1", "5")),  # google
    "groq": ("groq", "llama-3.3-70b-versatile", ("0.59", "0.79")),  # groq (the preset's list)
    "deepseek": ("deepseek", "deepseek-chat", ("0.27", "1.1")),  # deepseek (the preset's list)
}
EMBEDDINGS = {  # model name -> (provider, upstream model, $/Mtok)
    "azure-embed": ("az", "text-embedding-3-small", "0.02"),
    "bedrock-embed": ("br", "amazon.titan-embed-text-v2:0", "0.02"),
    "gemini-embed": ("ge", "gemini-embedding-001", "0.15"),
    "vertex-embed": ("vx", "gemini-embedding-001", "0.15"),
}
DATA = "iVBORw0KGgo="
PNG = "data:image/png;base64," + DATA
QUERY = {"type": "object", "properties": {"query": {"type": "string"}}}
ASK = "what is in this picture"


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeClouds]:
    with FakeClouds(tmp_path_factory.mktemp("sa")) as fakes:
        for fake in (fakes.upstream, fakes.azure, fakes.bedrock, fakes.vertex):
            fake.prompt_caching = True  # as the real APIs cache (short prompts without cache_control: never)
        yield fakes


@pytest.fixture(scope="module")
def gateway(clouds: FakeClouds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    models = {name: {"provider": p, "model": m} for name, (p, m, _) in {**TARGETS, **EMBEDDINGS}.items()}
    config = {"providers": clouds.providers(), "models": models}
    env = {**clouds.env, "TALLYGATE_LEDGER_FLUSH_MS": "20"}  # the records are read right after each answer
    gw = Gateway(tmp_path_factory.mktemp("matrix"), config, env=env).start()
    yield gw
    gw.stop()
    assert "Traceback" not in gw.log(), gw.log()


@pytest.fixture(scope="module")
def oa(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=ADMIN_KEY, max_retries=0) as client:
        yield client


@dataclass
class Answer:
    """What a client got: the gateway's request id, the tool call or the text, the token counts."""

    request_id: str
    call: tuple[str, str, dict] | None  # (call id, function name, arguments)
    text: str
    usage: tuple[int, int]  # (prompt tokens, cache included; output tokens)
    native: object  # the SDK's last object (its tool call, to send back)
    cost: float  # the gateway's `usage.cost` as the client got it


def chat(client: openai.OpenAI, model: str, turns: list, stream: bool, **extra: object) -> Answer:
    tools = [{"type": "function", "function": {"name": "search", "description": "Search", "parameters": QUERY}}]
    if not stream:
        done = client.chat.completions.create(model=model, messages=turns, tools=tools, **extra)  # type: ignore[arg-type]
        msg, u = done.choices[0].message, done.usage
        assert u is not None and done.choices[0].finish_reason == ("tool_calls" if msg.tool_calls else "stop")
        call = msg.tool_calls[0] if msg.tool_calls else None
        found = (call.id, call.function.name, json.loads(call.function.arguments)) if call else None  # type: ignore[union-attr]
        return Answer(done.id, found, msg.content or "", (u.prompt_tokens, u.completion_tokens), call,
                      (u.model_extra or {})["cost"])
    chunks = list(client.chat.completions.create(model=model, messages=turns, tools=tools, stream=True,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}, **extra))
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    calls = [t for d in deltas for t in d.tool_calls or ()]
    found = None
    if calls:
        args = "".join(t.function.arguments or "" for t in calls if t.function)
        found = (calls[0].id, calls[0].function.name, json.loads(args))  # type: ignore[union-attr]
    assert finish == ["tool_calls" if calls else "stop"]
    text = "".join(d.content or "" for d in deltas)
    return Answer(chunks[0].id, found, text, (usage.prompt_tokens, usage.completion_tokens), None,
                  (usage.model_extra or {})["cost"])


def chat_turns(answer: Answer | None) -> list:
    first = [{"role": "user", "content": [{"type": "text", "text": ASK},
                                          {"type": "image_url", "image_url": {"url": PNG}}]}]
    if answer is None:
        return first
    call_id, name, args = answer.call  # type: ignore[misc]
    return [*first, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"hits": 3}'}]


def messages(claude: anthropic.Anthropic, model: str, turns: list, stream: bool, **extra: object) -> Answer:
    ask = {"model": model, "max_tokens": 200, "messages": turns,
           "tools": [{"name": "search", "description": "Search", "input_schema": QUERY}], **extra}
    cost = None
    if stream:
        with claude.messages.stream(**ask) as events:  # type: ignore[arg-type]
            for event in events:  # the final message_delta carries the gateway's usage.cost
                if event.type == "message_delta":
                    cost = (event.usage.model_extra or {})["cost"]
            done = events.get_final_message()
    else:
        done = claude.messages.create(**ask)  # type: ignore[arg-type]
        cost = (done.usage.model_extra or {})["cost"]
    uses = [b for b in done.content if b.type == "tool_use"]
    assert done.stop_reason == ("tool_use" if uses else "end_turn")
    u = done.usage
    prompt = u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    found = (uses[0].id, uses[0].name, uses[0].input) if uses else None
    text = "".join(b.text for b in done.content if b.type == "text")
    return Answer(done.id, found, text, (prompt, u.output_tokens), uses[0] if uses else None, cost)  # type: ignore[arg-type]


def messages_turns(answer: Answer | None) -> list:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": DATA}}
    first = [{"role": "user", "content": [{"type": "text", "text": ASK}, image]}]
    if answer is None:
        return first
    use = answer.native.model_dump()  # type: ignore[attr-defined]
    return [*first, {"role": "assistant", "content": [use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": '{"hits": 3}'}]}]


def responses(client: openai.OpenAI, model: str, turns: list, stream: bool, **extra: object) -> Answer:
    tools = [{"type": "function", "name": "search", "description": "Search", "parameters": QUERY}]
    raw = client.responses.with_raw_response.create(model=model, input=turns, tools=tools, stream=stream,  # type: ignore[arg-type]
                                                    **extra)
    if stream:  # a native relay keeps the upstream's response id: the gateway's is x-request-id
        done = next(e.response for e in raw.parse() if e.type == "response.completed")  # type: ignore[union-attr]
    else:
        done = raw.parse()  # type: ignore[assignment]
    assert done.status == "completed" and done.usage is not None
    calls = [o for o in done.output if o.type == "function_call"]
    found = (calls[0].call_id, calls[0].name, json.loads(calls[0].arguments)) if calls else None
    usage = (done.usage.input_tokens, done.usage.output_tokens)
    return Answer(raw.headers["x-request-id"], found, done.output_text, usage, calls[0] if calls else None,
                  (done.usage.model_extra or {})["cost"])


def responses_turns(answer: Answer | None) -> list:
    first = [{"role": "user", "content": [{"type": "input_text", "text": ASK},
                                          {"type": "input_image", "image_url": PNG}]}]
    if answer is None:
        return first
    call = answer.native.model_dump(exclude_none=True)  # type: ignore[attr-defined]
    return [*first, call, {"type": "function_call_output", "call_id": call["call_id"], "output": '{"hits": 3}'}]


APIS: dict[str, tuple[Callable, Callable]] = {"chat": (chat, chat_turns), "messages": (messages, messages_turns),
                                              "responses": (responses, responses_turns)}


def checked_cost(gateway: Gateway, answer: Answer, price: tuple[str, str]) -> Decimal:
    """The ledger's cost, checked to be the client's token counts at `price` ($/Mtok in, out)."""
    record = gateway.log_record(answer.request_id)
    prompt, output = answer.usage
    assert (record["usage"]["input_tokens"], record["usage"]["output_tokens"]) == (prompt, output)
    assert record["pricing_source"].startswith("genai-prices")
    assert Decimal(str(answer.cost)) == Decimal(record["cost"])  # what the client was told
    assert Decimal(record["cost"]) == (prompt * Decimal(price[0]) + output * Decimal(price[1])) / 10**6 > 0
    return Decimal(record["cost"])


def upstream_calls(model: str, api: str) -> list[str]:
    """The upstream operations a JSON then a streamed request make: native or translated."""
    provider = TARGETS[model][0]
    if provider in ("az", "groq", "deepseek"):  # OpenAI's APIs: Messages through chat
        return ["responses" if api == "responses" else "completions"] * 2
    if provider == "brc" and api == "messages" or provider == "vxc":  # Anthropic's Messages body
        return ["invoke", "invoke-with-response-stream"] if provider == "brc" else ["rawPredict", "streamRawPredict"]
    if provider in ("br", "brc"):
        return ["converse", "converse-stream"]
    return ["generateContent", "streamGenerateContent"]


def fake_of(clouds: FakeClouds, provider: str) -> FakeUpstream:
    return {"az": clouds.azure, "br": clouds.bedrock, "brc": clouds.bedrock, "ge": clouds.gemini, "vx": clouds.vertex,
            "vxc": clouds.vertex, "groq": clouds.upstream, "deepseek": clouds.upstream}[provider]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("model", TARGETS)
def test_a_tool_round_trip_with_an_image_streamed_and_not(gateway: Gateway, clouds: FakeClouds, oa: openai.OpenAI,
                                                          claude: anthropic.Anthropic, model: str, api: str) -> None:
    """First turn: text and an image, a tool offered -> the model calls it (JSON, then streamed:
    the same call, the same cost). Second turn: the call's result -> a text answer (both ways)."""
    provider, _, price = TARGETS[model]
    ask, turns = APIS[api]
    client = claude if api == "messages" else oa
    fake = fake_of(clouds, provider)
    fake.clear()
    called, streamed = (ask(client, model, turns(None), stream) for stream in (False, True))
    assert called.call is not None and streamed.call is not None
    assert called.call[1:] == streamed.call[1:] == ("search", {"query": called.call[2]["query"]})
    assert called.call[0] != streamed.call[0]  # a tool call id is unique in the conversation (Gemini gives none)
    sent = [r for r in fake.requests if r["path"] != "/token"]
    assert [r["path"].replace(":", "/").rsplit("/", 1)[1] for r in sent] == upstream_calls(model, api)
    assert [DATA in r["raw"].decode() for r in sent] == [True, True]  # the image reached the provider
    answered, answered_streamed = (ask(client, model, turns(called), stream) for stream in (False, True))
    assert answered.call is None and answered.text and answered.text == answered_streamed.text
    assert checked_cost(gateway, called, price) == checked_cost(gateway, streamed, price)
    assert checked_cost(gateway, answered, price) == checked_cost(gateway, answered_streamed, price)


@pytest.mark.parametrize("model", EMBEDDINGS)
def test_embeddings_at_the_providers_price(gateway: Gateway, oa: openai.OpenAI, model: str) -> None:
    raw = oa.embeddings.with_raw_response.create(model=model, input=["hello there", "bye"], dimensions=256)
    answer = raw.parse()
    assert [len(d.embedding) for d in answer.data] == [256, 256] and answer.usage.prompt_tokens == 2 + 1
    record = gateway.log_record(raw.headers["x-request-id"])
    assert record["usage"]["input_tokens"] == 3
    assert Decimal(record["cost"]) == 3 * Decimal(EMBEDDINGS[model][2]) / 10**6



WEB_IMAGE = "https://example.com/cat.png"
SYSTEM_FIRST = {"instructions": "Be brief."}  # a chat message before the client's first: the numbering differs
UNTRANSLATABLE = [  # (model, api, the request's fields, the field the 400 names)
    ("bedrock", "chat", {"n": 2}, "n"),
    ("bedrock", "chat", {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("bedrock", "chat", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hear this"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[1].type"),
    ("vertex-claude", "chat", {"n": 2}, "n"),
    ("gemini", "chat", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ("vertex", "chat", {"logprobs": True}, "logprobs"),
    ("bedrock", "responses", {"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
    ("bedrock", "responses", {**SYSTEM_FIRST, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "read this"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}]},
     "input[0].content[1].type"),
    ("gemini", "responses", {"top_logprobs": 2}, "top_logprobs"),
    ("vertex", "responses", {**SYSTEM_FIRST, "input": [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "input_image", "image_url": WEB_IMAGE}]}]},
     "input[1].content[0].image_url"),
    ("gemini", "responses", {**SYSTEM_FIRST, "input": [
        {"type": "function_call_output", "call_id": "call_unknown", "output": "3 hits"}]}, "input[0].call_id"),
    ("gemini", "messages", {"system": "Be brief.", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": WEB_IMAGE}}]}]},
     "messages[2].content[0].source"),
    ("vertex", "messages", {"system": "Be brief.", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "3"}]}]},
     "messages[0].content[1].tool_use_id"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "api", "fields", "param"), UNTRANSLATABLE,
                         ids=[f"{m}-{a}-{p}" for m, a, _, p in UNTRANSLATABLE])
def test_what_cannot_be_translated_is_a_400_naming_the_clients_field(
        clouds: FakeClouds, oa: openai.OpenAI, claude: anthropic.Anthropic, model: str, api: str, fields: dict,
        param: str, stream: bool) -> None:
    """Refused before any upstream call, with the field as the client sent it (a Responses input
    item, a Messages block), not as the chat translation in between named it."""
    clouds.clear()
    if api == "messages":
        ask = {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **fields}
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude.messages.create(**ask, stream=stream)  # type: ignore[call-overload]
        message = refused.value.body["error"]["message"]  # type: ignore[index]
    else:
        with pytest.raises(openai.BadRequestError) as refused:  # type: ignore[assignment]
            if api == "chat":
                ask = {"messages": [{"role": "user", "content": "hi"}], **fields}
                oa.chat.completions.create(model=model, stream=stream, **ask)  # type: ignore[call-overload]
            else:
                oa.responses.create(model=model, stream=stream, **{"input": "hi", **fields})  # type: ignore[call-overload]
        assert refused.value.body["param"] == param  # type: ignore[index]
        message = refused.value.body["message"]  # type: ignore[index]
    assert message.startswith(param)
    assert [r for f in clouds.fakes() for r in f.requests if r["path"] != "/token"] == []


# model -> $/Mtok (input, cache read, cache write, 1-hour cache write, output) on its genai-prices list
CACHE_PRICES = {"azure": ("1.1", "0.275", None, None, "4.4"), "vertex": ("0.3", "0.03", None, None, "2.5"),
                "deepseek": ("0.27", "0.07", None, None, "1.1"),
                "vertex-claude": ("1", "0.1", "1.25", "2", "5"),
                "bedrock-invoke": ("3.3", "0.33", "4.125", "6.6", "16.5")}
CACHE_CASES = [  # (model, api, how the prompt is cached: automatic | 5m | 1h | cachedContent)
    ("azure", "chat", "automatic"), ("azure", "responses", "automatic"), ("azure", "messages", "automatic"),
    ("vertex", "chat", "cachedContent"), ("vertex-claude", "messages", "5m"), ("vertex-claude", "chat", "5m"),
    ("bedrock-invoke", "messages", "1h"), ("deepseek", "chat", "automatic"),
]


def cached_ask(api: str, how: str, rules: str) -> tuple[list, dict]:
    """The turns and the other fields of a request whose long instructions `rules` are cached `how`."""
    mark = {"cache_control": {"type": "ephemeral", **({"ttl": "1h"} if how == "1h" else {})}}
    block = {"type": "text", "text": rules, **(mark if how in ("5m", "1h") else {})}
    if api == "chat":
        system = {"role": "system", "content": [block] if how != "automatic" else rules}
        extra = {"extra_body": {"cached_content": "cachedContents/handbook"}} if how == "cachedContent" else {}
        return [system, {"role": "user", "content": "what does it say"}], extra
    if api == "messages":
        return [{"role": "user", "content": "what does it say"}], {"system": [block]}
    return [{"role": "user", "content": "what does it say"}], {"instructions": rules}


@pytest.mark.parametrize(("model", "api", "how"), CACHE_CASES)
def test_prompt_cache_reads_and_writes_at_the_providers_cache_prices(gateway: Gateway, oa: openai.OpenAI,
                                                                     claude: anthropic.Anthropic, model: str, api: str,
                                                                     how: str) -> None:
    """The same long-prompt request three times (JSON, streamed, JSON): the first writes the cache
    (Anthropic's breakpoints; OpenAI's automatic caching reports no write), the next two read it;
    each costs its fresh, read, written and output tokens at the provider's own prices."""
    rules = f"Answer from the {model} {api} handbook only. " * 120
    turns, extra = cached_ask(api, how, rules)
    ask, client = APIS[api][0], claude if api == "messages" else oa
    answers = [ask(client, model, turns, stream, **extra) for stream in (False, True, False)]
    n = {"automatic": len(rules) // 4 // 128 * 128, "cachedContent": CACHED_TOKENS}.get(how, len(rules) // 4)
    expected = {"automatic": [(0, 0), (n, 0), (n, 0)], "cachedContent": [(n, 0)] * 3}.get(how, [(0, n), (n, 0), (n, 0)])
    fresh, read, write, write_1h, out = (Decimal(p) if p is not None else None for p in CACHE_PRICES[model])
    costs = []
    for answer, (cached, written) in zip(answers, expected, strict=True):
        record = gateway.log_record(answer.request_id)
        u = record["usage"]
        assert (u["input_tokens"], u["output_tokens"]) == answer.usage
        assert (u["cached_tokens"], u["cache_write_tokens"]) == (cached, written)
        write_price = write_1h if how == "1h" else write
        hand = ((u["input_tokens"] - cached - written) * fresh + cached * read  # type: ignore[operator]
                + written * (write_price or 0) + u["output_tokens"] * out) / 10**6  # type: ignore[operator]
        assert Decimal(record["cost"]) == hand > 0
        assert Decimal(str(answer.cost)) == hand  # what the client was told
        costs.append(Decimal(record["cost"]))
    assert costs[1] == costs[2]  # streamed == unstreamed
