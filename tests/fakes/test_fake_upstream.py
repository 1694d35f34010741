"""The fake upstream against OpenAI's wire formats (Chat Completions, Embeddings, Models), with raw HTTP."""
from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request

import pytest

from .raw_client import AN_HEADERS, MSGS, OA_HEADERS, chat, fetch, openai_chunks, post
from .wire import FIXED_REPLY, count_prompt_tokens


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
