"""Checks the fake upstream against the real wire formats, with raw HTTP and the official SDKs."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from .loopback import closed_port_url, free_port
from .upstream import FakeUpstream
from .wire import FIXED_REPLY, count_prompt_tokens

OA_HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
AN_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
              "Content-Type": "application/json"}
MSGS = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France, in one word please?"}]
AN_MSGS = [{"role": "user", "content": [{"type": "text", "text": "Say hello to the tests"}]}]


@pytest.fixture(scope="module")
def up():
    with FakeUpstream() as server:
        yield server
    assert not [t for t in threading.enumerate() if t.name == f"fake-upstream-{server.port}"]


@pytest.fixture(autouse=True)
def _fresh(up):
    up.clear()


def chat(model="gpt-4o-mini", **kw):
    return {"model": model, "messages": MSGS, **kw}


def msg(model="claude-sonnet-4-5", **kw):
    return {"model": model, "max_tokens": 100, "messages": AN_MSGS, **kw}


def post(up, path, body, headers=OA_HEADERS, timeout=5.0):
    """(status, headers, raw body) via urllib -- raises URLError for transport failures."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(up.root_url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def fetch(up, path, body, headers=OA_HEADERS, timeout=5.0, on_event=None):
    """Raw aiohttp POST; returns (status, headers, body bytes). on_event(time) per chunk read."""
    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(up.root_url + path, json=body, headers=headers) as r:
                chunks = []
                async for piece in r.content.iter_any():
                    chunks.append(piece)
                    if on_event:
                        on_event(time.monotonic())
                return r.status, {k.lower(): v for k, v in r.headers.items()}, b"".join(chunks)
    return asyncio.run(go())


def openai_chunks(raw: bytes) -> list:
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]", raw[-200:]
    assert all(e.startswith(b"data: ") for e in events[:-1])
    return [json.loads(e[6:]) for e in events[:-2]]


def anthropic_events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            ev, data = block.split("\n")
            assert ev.startswith("event: ") and data.startswith("data: ")
            payload = json.loads(data[6:])
            assert payload["type"] == ev[7:]
            out.append((ev[7:], payload))
    return out


# -- lifecycle and helpers ------------------------------------------------------------------------
def test_lifecycle_leaves_no_thread_or_port():
    up = FakeUpstream().start()
    port = up.port
    assert up.base_url == f"http://127.0.0.1:{port}/v1"
    assert any(t.name == f"fake-upstream-{port}" for t in threading.enumerate())
    assert post(up, "/v1/chat/completions", chat())[0] == 200
    up.stop()
    up.stop()  # idempotent
    assert not any(t.name == f"fake-upstream-{port}" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_stop_with_request_in_flight_and_restart_on_same_port():
    up = FakeUpstream().start()
    port = up.port
    errors: list[Exception] = []

    def hang():
        try:
            post(up, "/v1/chat/completions", chat("slow-5000"), timeout=3)
        except Exception as exc:  # the server went away mid-request
            errors.append(exc)
    hung = threading.Thread(target=hang)
    hung.start()
    up.wait_for_requests(1)
    t0 = time.monotonic()
    up.stop()
    assert time.monotonic() - t0 < 1.0
    hung.join(5)
    assert len(errors) == 1 and not isinstance(errors[0], TimeoutError)
    with FakeUpstream(port=port) as again:
        assert again.base_url.endswith(f":{port}/v1")
        assert post(again, "/v1/chat/completions", chat())[0] == 200


def test_free_port_and_closed_port_url():
    assert 0 < free_port() < 65536
    url = closed_port_url()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    with pytest.raises(urllib.error.URLError) as ei:
        urllib.request.urlopen(url + "/models", timeout=2)
    assert isinstance(ei.value.reason, ConnectionRefusedError)


def test_records_requests(up):
    post(up, "/v1/chat/completions", chat(temperature=0.5))
    (rec,) = up.wait_for_requests(1)
    assert rec["method"] == "POST" and rec["path"] == "/v1/chat/completions"
    assert rec["headers"]["authorization"] == "Bearer sk-test"
    assert rec["body"] == chat(temperature=0.5)
    assert json.loads(rec["raw"]) == rec["body"]


def test_unknown_path_is_openai_404(up):
    status, _, raw = post(up, "/v1/nope", {})
    assert status == 404
    assert json.loads(raw)["error"]["message"] == "Invalid URL (POST /v1/nope)"


# -- OpenAI chat completions ----------------------------------------------------------------------
def test_openai_json_shape(up):
    status, headers, raw = post(up, "/v1/chat/completions", chat("my-model"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["x-request-id"]
    assert raw.startswith(b'{\n  "id": "chatcmpl-')
    r = json.loads(raw)
    assert r["object"] == "chat.completion" and r["model"] == "my-model"
    (choice,) = r["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "Echo: " + MSGS[1]["content"][:40]
    u = r["usage"]
    assert u["prompt_tokens"] == count_prompt_tokens(chat()) == (9 + 50) // 4
    assert u["completion_tokens"] == len(choice["message"]["content"].split(" "))
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["prompt_tokens_details"]["cached_tokens"] == 0
    assert u["completion_tokens_details"]["reasoning_tokens"] == 0


def test_openai_fixed_reply_max_tokens_and_n(up):
    r = json.loads(post(up, "/v1/chat/completions",
                        {"model": "m", "messages": [{"role": "user", "content": ""}]})[2])
    assert r["choices"][0]["message"]["content"] == FIXED_REPLY
    assert r["usage"]["prompt_tokens"] == 1
    r = json.loads(post(up, "/v1/chat/completions", chat(max_tokens=2, n=2))[2])
    assert [c["message"]["content"] for c in r["choices"]] == ["Echo: What"] * 2
    assert [c["finish_reason"] for c in r["choices"]] == ["length"] * 2
    assert r["usage"]["completion_tokens"] == 4


def test_openai_stream_without_usage(up):
    status, headers, raw = fetch(up, "/v1/chat/completions", chat(stream=True))
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = openai_chunks(raw)
    assert all("usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Echo: " + MSGS[1]["content"][:40]


def test_openai_stream_with_usage(up):
    body = chat("cached-7", stream=True, stream_options={"include_usage": True})
    chunks = openai_chunks(fetch(up, "/v1/chat/completions", body)[2])
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"] == [] and "obfuscation" not in last
    pieces = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]][1:]
    assert last["usage"]["completion_tokens"] == len(pieces)
    assert last["usage"]["prompt_tokens"] == count_prompt_tokens(body) + 7
    assert last["usage"]["prompt_tokens_details"]["cached_tokens"] == 7


def test_openai_cached_and_reasoning(up):
    u = json.loads(post(up, "/v1/chat/completions", chat("cached-100"))[2])["usage"]
    assert u["prompt_tokens_details"]["cached_tokens"] == 100
    assert u["prompt_tokens"] == count_prompt_tokens(chat()) + 100
    u = json.loads(post(up, "/v1/chat/completions", chat("reasoning-30"))[2])["usage"]
    assert u["completion_tokens_details"]["reasoning_tokens"] == 30
    assert u["completion_tokens"] == 30 + 10


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "sk-x"}])
def test_openai_requires_bearer(up, headers):
    status, _, raw = post(up, "/v1/chat/completions", chat(),
                          headers={"Content-Type": "application/json", **headers})
    assert status == 401
    err = json.loads(raw)["error"]
    assert err["type"] == "invalid_request_error" and "API key" in err["message"]


def test_openai_rejects_unknown_params_exactly(up):
    status, _, raw = post(up, "/v1/chat/completions", chat(request_tags=["team:a"]))
    assert status == 400
    assert json.loads(raw) == {"error": {
        "message": "Unrecognized request argument supplied: request_tags",
        "type": "invalid_request_error", "param": None, "code": None}}
    assert raw.startswith(b'{\n    "error": {\n        "message": ')


@pytest.mark.parametrize("body,needle", [
    ({"model": "m"}, "Missing required parameter: 'messages'."),
    ({"messages": MSGS}, "you must provide a model parameter"),
    ({"model": "m", "messages": []}, "empty array"),
    (chat(stream_options={"include_usage": True}), "only allowed when 'stream' is enabled"),
])
def test_openai_required_params(up, body, needle):
    status, _, raw = post(up, "/v1/chat/completions", body)
    assert status == 400 and needle in json.loads(raw)["error"]["message"]
    assert post(up, "/v1/chat/completions", b"{nope")[0] == 400


@pytest.mark.parametrize("code,type_", [(400, "invalid_request_error"), (401, "invalid_request_error"),
                                        (404, "invalid_request_error"), (429, "requests"),
                                        (500, "server_error"), (503, "server_error"),
                                        (529, "server_error")])
def test_openai_failures(up, code, type_):
    status, headers, raw = post(up, "/v1/chat/completions", chat(f"fail-{code}", stream=True))
    assert status == code and headers["content-type"] == "application/json"
    err = json.loads(raw)["error"]
    assert err["type"] == type_ and set(err) == {"message", "type", "param", "code"}
    assert headers.get("retry-after") == ("2" if code == 429 else None)


# -- failure modes (raw HTTP) -----------------------------------------------------------------------
@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat(), OA_HEADERS),
    ("/v1/messages", msg(), AN_HEADERS),
])
def test_slow(up, path, body, headers):
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        fetch(up, path, dict(body, model="slow-2000"), headers=headers, timeout=0.1)
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert post(up, path, dict(body, model="slow-200"), headers=headers)[0] == 200
    assert time.monotonic() - t0 >= 0.2


def test_slowstream_spaces_events(up):
    times: list[float] = []
    _, _, raw = fetch(up, "/v1/chat/completions", chat("slowstream-40", stream=True), on_event=times.append)
    chunks = openai_chunks(raw)  # + [DONE]: len(chunks) gaps of 40 ms after the first event
    assert times[-1] - times[0] >= 0.04 * (len(chunks) - 1)


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat("cut-stream", stream=True), OA_HEADERS),
    ("/v1/messages", msg("cut-stream", stream=True), AN_HEADERS),
])
def test_cut_stream(up, path, body, headers):
    got = []

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(up.root_url + path, json=body, headers=headers) as r:
                assert r.status == 200
                async for piece in r.content.iter_any():
                    got.append(piece)
    with pytest.raises(aiohttp.ClientPayloadError):
        asyncio.run(go())
    raw = b"".join(got)
    assert raw.count(b"data: ") == 3 and b"[DONE]" not in raw and b"message_stop" not in raw


def test_cut_json_body(up):
    for path, body, headers in [("/v1/chat/completions", chat("cut-stream"), OA_HEADERS),
                                ("/v1/messages", msg("cut-stream"), AN_HEADERS),
                                ("/v1/embeddings", {"model": "cut-stream", "input": "x"}, OA_HEADERS)]:
        with pytest.raises(aiohttp.ClientPayloadError):
            fetch(up, path, body, headers=headers)


def test_slow_request_does_not_block_others(up):
    slow = threading.Thread(target=post, args=(up, "/v1/chat/completions", chat("slow-800")))
    slow.start()
    up.wait_for_requests(1)
    t0 = time.monotonic()
    assert post(up, "/v1/chat/completions", chat())[0] == 200
    assert time.monotonic() - t0 < 0.6
    slow.join(5)


def test_stream_error_events(up):
    raw = fetch(up, "/v1/chat/completions", chat("stream-error", stream=True))[2]
    last = json.loads(raw.split(b"\n\n")[-2][6:])
    assert last["error"]["type"] == "server_error" and b"[DONE]" not in raw
    events = anthropic_events(fetch(up, "/v1/messages", msg("stream-error", stream=True),
                                    headers=AN_HEADERS)[2])
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                "message": "Overloaded"}})


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat("reset"), OA_HEADERS),
    ("/v1/messages", msg("reset", stream=True), AN_HEADERS),
    ("/v1/embeddings", {"model": "reset", "input": "x"}, OA_HEADERS),
])
def test_reset(up, path, body, headers):
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        fetch(up, path, body, headers=headers)
    assert up.requests[-1]["body"]["model"] == "reset"


def test_garbage(up):
    status, headers, raw = post(up, "/v1/chat/completions", chat("garbage"))
    assert status == 200 and headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(raw)


def test_flaky_then_ok(up):
    assert [post(up, "/v1/chat/completions", chat("flaky-503-2"))[0] for _ in range(3)] == [503, 503, 200]
    up.clear()
    assert post(up, "/v1/messages", msg("flaky-529-1"), headers=AN_HEADERS)[0] == 529


# -- embeddings and models ------------------------------------------------------------------------
def test_embeddings_float_and_base64(up):
    body = {"model": "text-embedding-3-small", "input": ["hello world", "abc"]}
    r = json.loads(post(up, "/v1/embeddings", body)[2])
    assert r["object"] == "list" and [d["index"] for d in r["data"]] == [0, 1]
    assert len(r["data"][0]["embedding"]) == 8
    assert r["usage"] == {"prompt_tokens": 2 + 1, "total_tokens": 3}
    b = json.loads(post(up, "/v1/embeddings", dict(body, encoding_format="base64", dimensions=4))[2])
    vec = struct.unpack("<4f", base64.b64decode(b["data"][0]["embedding"]))
    assert vec == pytest.approx(r["data"][0]["embedding"][:4], abs=1e-6)
    assert post(up, "/v1/embeddings", dict(body, request_tags=["x"]))[0] == 400
    for bad in ("", [], [None], 3):
        assert post(up, "/v1/embeddings", dict(body, input=bad))[0] == 400
    tokens = json.loads(post(up, "/v1/embeddings", dict(body, input=[[1, 2, 3], [4]]))[2])
    assert tokens["usage"]["prompt_tokens"] == 4 and len(tokens["data"]) == 2


def test_models_both_shapes(up):
    def get(headers):
        req = urllib.request.Request(up.base_url + "/models", headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
    oa = get(OA_HEADERS)
    assert oa["object"] == "list" and oa["data"][0]["object"] == "model"
    an = get(AN_HEADERS)
    assert an["has_more"] is False and an["data"][0]["type"] == "model"


# -- Anthropic messages --------------------------------------------------------------------------
def test_anthropic_json(up):
    status, headers, raw = post(up, "/v1/messages", msg("cached-50", system="You are terse."),
                                headers=AN_HEADERS)
    assert status == 200 and headers["request-id"]
    r = json.loads(raw)
    assert r["type"] == "message" and r["role"] == "assistant" and r["model"] == "cached-50"
    assert r["content"] == [{"type": "text", "text": "Echo: Say hello to the tests"}]
    assert r["stop_reason"] == "end_turn" and r["stop_sequence"] is None
    assert r["usage"]["input_tokens"] == (22 + 14) // 4
    assert r["usage"]["cache_read_input_tokens"] == 50
    assert r["usage"]["cache_creation_input_tokens"] == 0 and r["usage"]["output_tokens"] == 6


def test_anthropic_stream(up):
    status, headers, raw = fetch(up, "/v1/messages", msg("cachewrite-9", stream=True, max_tokens=3),
                                 headers=AN_HEADERS)
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    events = anthropic_events(raw)
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in raw
    names = [e for e, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["cache_creation_input_tokens"] == 9
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert text == "Echo: Say hello"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "max_tokens" and delta["usage"]["output_tokens"] == 3


@pytest.mark.parametrize("headers,status,type_", [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
    ({"x-api-key": "k"}, 400, "invalid_request_error"),
    ({"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
])
def test_anthropic_headers_required(up, headers, status, type_):
    code, resp_headers, raw = post(up, "/v1/messages", msg(), headers=headers)
    r = json.loads(raw)
    assert code == status and r["type"] == "error" and r["error"]["type"] == type_
    assert resp_headers["request-id"] == r["request_id"]


@pytest.mark.parametrize("body,message", [
    ({"model": "m", "messages": AN_MSGS}, "max_tokens: Field required"),
    (msg(request_tags=["a"]), "request_tags: Extra inputs are not permitted"),
    (msg(stream_options={"include_usage": True}), "stream_options: Extra inputs are not permitted"),
])
def test_anthropic_strict_body(up, body, message):
    status, _, raw = post(up, "/v1/messages", body, headers=AN_HEADERS)
    r = json.loads(raw)
    assert status == 400 and r["error"] == {"type": "invalid_request_error", "message": message}


@pytest.mark.parametrize("code,type_", [(400, "invalid_request_error"), (401, "authentication_error"),
                                        (404, "not_found_error"), (429, "rate_limit_error"),
                                        (500, "api_error"), (503, "api_error"), (529, "overloaded_error")])
def test_anthropic_failures(up, code, type_):
    status, headers, raw = post(up, "/v1/messages", msg(f"fail-{code}"), headers=AN_HEADERS)
    r = json.loads(raw)
    assert status == code and r["type"] == "error" and r["error"]["type"] == type_
    assert headers.get("retry-after") == ("2" if code == 429 else None)


# -- official SDKs pointed straight at the fake ------------------------------------------------
def test_openai_sdk(up):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0) as client:
        r = client.chat.completions.create(model="cached-3", messages=MSGS)
        assert r.choices[0].message.content.startswith("Echo: What is")
        assert r.usage.prompt_tokens_details.cached_tokens == 3
        stream = client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert chunks[-1].usage.total_tokens == r.usage.total_tokens - 3
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            r.choices[0].message.content
        emb = client.embeddings.create(model="text-embedding-3-small", input="hello")  # base64
        assert len(emb.data[0].embedding) == 8 and emb.usage.prompt_tokens == 1
        assert [m.id for m in client.models.list()][0] == "gpt-4o-mini"
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model="fail-429", messages=MSGS)
        assert ei.value.response.headers["retry-after"] == "2"
        with pytest.raises(openai.BadRequestError, match="request_tags"):
            client.chat.completions.create(model="m", messages=MSGS, extra_body={"request_tags": []})
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="reset", messages=MSGS)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="stream-error", messages=MSGS, stream=True))
    assert len(up.requests) == 8


def test_anthropic_sdk():
    anthropic = pytest.importorskip("anthropic")
    # anthropic SDK >= 2 sends the key as "Authorization: Bearer"; older ones as x-api-key
    with FakeUpstream(anthropic_bearer_ok=True) as up, \
            anthropic.Anthropic(base_url=up.root_url, api_key="sk-ant", max_retries=0) as client:
        r = client.messages.create(model="cached-11", max_tokens=50,
                                   messages=[{"role": "user", "content": "hi there"}])
        assert r.content[0].text == "Echo: hi there" and r.usage.cache_read_input_tokens == 11
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50,
                                    messages=[{"role": "user", "content": "hi there"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == "Echo: hi there" and final.usage.output_tokens == 3
        assert final.usage.input_tokens == 2
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model="fail-529", max_tokens=5, messages=AN_MSGS)
        with pytest.raises(anthropic.APIStatusError):  # in-band error event mid-stream
            list(client.messages.create(model="stream-error", max_tokens=5, messages=AN_MSGS,
                                        stream=True))
        assert up.requests[0]["headers"]["anthropic-version"]


def test_prompt_scripts_the_tool_call_of_an_agent_that_always_offers_tools():
    from tests.fakes.wire import tool_call

    tools = [{"name": "Agent"}, {"type": "function", "function": {"name": "Read"}}]
    ask = [{"role": "user", "content": [{"type": "text", "text": 'go [[call Read {"file_path": "/x"}]]'}]}]
    assert tool_call({"tools": tools, "messages": ask}) == ("Read", '{"file_path":"/x"}')
    plain = [{"role": "user", "content": "[[no tools]] hi"}]
    assert tool_call({"tools": tools, "messages": plain}) is None
    unknown = [{"role": "user", "content": "[[call Nope {}]]"}]
    assert tool_call({"tools": tools, "messages": unknown}) is None
    answered = [*ask, {"role": "tool", "content": "file text"}]
    assert tool_call({"tools": tools, "messages": answered}) is None  # the tool answered: final text
    assert tool_call({"tools": tools, "messages": [{"role": "user", "content": "hi"}]})[0] == "Agent"


def test_one_hour_cache_write_scenario_reports_the_ttl_split():
    from tests.fakes.wire import parse_scenario
    from tests.fakes.wire_anthropic import anthropic_usage

    usage = anthropic_usage(10, 2, parse_scenario("cachewrite1h-30"))
    assert usage["cache_creation_input_tokens"] == 30
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 30}


def test_prompt_caching_emulated_as_the_sdks_read_it():
    """With `prompt_caching`: OpenAI's automatic caching (earlier messages from 1,024 tokens, in
    steps of 128, read the second time; Responses too) and Anthropic's breakpoints (written, then
    read; the rest in input_tokens); DeepSeek's documented usage fields for deepseek-* models."""
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    rules = "Follow the house rules. " * 200  # 4,800 characters: 1,200 tokens
    n = len(rules) // 4 // 128 * 128
    with FakeUpstream(anthropic_bearer_ok=True) as up, \
            openai.OpenAI(base_url=up.base_url, api_key="sk-test", max_retries=0) as client, \
            anthropic.Anthropic(base_url=up.root_url, api_key="sk-ant", max_retries=0) as claude:
        up.prompt_caching = True
        ask = [{"role": "system", "content": rules}, {"role": "user", "content": "hi"}]
        first, second = (client.chat.completions.create(model="gpt-4o", messages=ask) for _ in range(2))
        assert first.usage.prompt_tokens == second.usage.prompt_tokens == (len(rules) + 2) // 4
        assert (first.usage.prompt_tokens_details.cached_tokens, second.usage.prompt_tokens_details.cached_tokens) \
            == (0, n)
        assert client.chat.completions.create(model="gpt-4o", messages=ask[1:]).usage.prompt_tokens_details \
            .cached_tokens == 0  # a short prompt is never cached
        responses = [client.responses.create(model="gpt-4o", instructions=rules + "!", input="hi") for _ in range(2)]
        assert [r.usage.input_tokens_details.cached_tokens for r in responses] == [0, n]
        deepseek = client.chat.completions.create(model="deepseek-chat", messages=ask)  # `rules` seen: a hit
        assert deepseek.usage.prompt_tokens_details is None
        assert deepseek.usage.model_extra["prompt_cache_hit_tokens"] == n
        assert deepseek.usage.model_extra["prompt_cache_miss_tokens"] == deepseek.usage.prompt_tokens - n
        system = [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
        written, read = (claude.messages.create(model="claude-sonnet-4-5", max_tokens=20, system=system,
                                                messages=[{"role": "user", "content": "hi"}]) for _ in range(2))
    m = len(rules) // 4
    assert (written.usage.cache_creation_input_tokens, written.usage.cache_read_input_tokens) == (m, 0)
    assert written.usage.cache_creation.ephemeral_1h_input_tokens == m
    assert (read.usage.cache_creation_input_tokens, read.usage.cache_read_input_tokens) == (0, m)
    assert written.usage.input_tokens == read.usage.input_tokens == (len(rules) + 2) // 4 - m
