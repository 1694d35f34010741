"""Fuzzing (hypothesis) every proxy route's body through every provider type, on SQLite and on
PostgreSQL: never a 5xx, never an in-band `internal_error` in a stream, never a dropped
connection, and every refusal shaped like its API's errors (Anthropic's on `/v1/messages`).

Each example starts from a rich valid body of the route (content parts, tools, tool calls and
results, system prompts ...), sends it to a model served by an `openai`, an `anthropic` or a
`mock` provider (natively or translated, streamed or not), and replaces the value at one path of
it, at any depth, by a hostile one: another JSON type, NUL and control characters, a lone
surrogate, a huge number, nested structures. Runs are derandomized (the same examples every
run) and bounded; the cases an adversary found are explicit examples.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from tests.api.hostile import mutated, replace_at
from tests.gateway import Gateway

FUZZ = settings(max_examples=90, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# One model per provider type (openai, anthropic, mock): native and translated paths.
MODELS = ["gpt-4o-mini", "claude", "mocked"]
EMBED_MODELS = ["embed", "claude", "mocked"]

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                "parameters": {"type": "object", "properties": {}}}}],
    "tool_choice": "auto", "max_tokens": 20, "temperature": 0.5, "stream": False,
    "stream_options": {"include_usage": True}, "stop": ["\n"], "user": "u", "request_tags": ["team/a"],
}
MESSAGES: dict[str, Any] = {
    "model": "claude", "max_tokens": 20,
    "system": [{"type": "text", "text": "be brief"}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "AAAA"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "42"}]}]},
    ],
    "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
    "tool_choice": {"type": "auto"}, "temperature": 0.5, "stop_sequences": ["x"],
    "metadata": {"user_id": "u"}, "stream": False,
}
RESPONSES: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ],
    "instructions": "be brief",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}],
    "tool_choice": "auto", "max_output_tokens": 20, "temperature": 0.5, "stream": False,
    "text": {"format": {"type": "text"}}, "metadata": {"k": "v"},
}
EMBEDDINGS: dict[str, Any] = {"model": "embed", "input": ["hello", "world"], "request_tags": ["team/a"]}

@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    status, _, rec = gw.post_json("/v1/manage/apikey", {"name": "fuzz", "monthly_limit": "1000",
                                                        "labels": {"team": "fuzz"}})
    assert status == 201
    return str(rec["key"])


def send(gw: Gateway, path: str, body: dict, key: str) -> tuple[int, bytes]:
    """POST `body`; asserts no 5xx, no in-band internal error, and the route's error shape."""
    raw = json.dumps(body).encode()  # lone surrogates escaped: JSON that only strict parsers refuse
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    status, _, answer = gw.request("POST", path, raw, key, headers)
    assert status < 500, (path, status, answer[:600], raw[:600])
    assert b"internal_error" not in answer, (path, answer[-600:], raw[:600])
    if status >= 400:
        error = json.loads(answer)
        if path.startswith("/v1/messages"):
            assert error["type"] == "error" and {"type", "message"} <= set(error["error"]), error
        else:
            assert set(error["error"]) == {"message", "type", "param", "code"}, error
    return status, answer


# The cases an adversary found: content parts whose `type` is not a string through the
# Anthropic translation, and a non-string `text` through the mock provider.
CHAT_SEEDS = [
    replace_at({**CHAT, "model": "claude"}, ("messages", 1, "content", 0, "type"), 5),
    replace_at({**CHAT, "model": "claude"}, ("messages", 1, "content", 1, "type"), {"a": []}),
    replace_at({**CHAT, "model": "mocked"}, ("messages", 1, "content", 0, "text"), 7),
    replace_at({**CHAT, "model": "mocked", "stream": True}, ("messages", 1, "content", 0, "text"), ["x"]),
]


@FUZZ
@given(body=mutated(CHAT, MODELS))
@example(body=CHAT_SEEDS[0]).via("discovered failure")
@example(body=CHAT_SEEDS[1]).via("discovered failure")
@example(body=CHAT_SEEDS[2]).via("discovered failure")
@example(body=CHAT_SEEDS[3]).via("discovered failure")
def test_fuzzed_chat_bodies_on_every_provider_never_get_a_5xx(gw: Gateway, key: str, body: dict) -> None:
    send(gw, "/v1/chat/completions", body, key)


@FUZZ
@given(body=mutated(MESSAGES, MODELS))
@example(body=replace_at({**MESSAGES, "model": "gpt-4o-mini"}, ("messages", 0, "content", 0, "type"), 5))
@example(body=replace_at({**MESSAGES, "model": "mocked"}, ("messages", 0, "content", 0, "text"), 7))
def test_fuzzed_messages_bodies_on_every_provider_never_get_a_5xx(gw: Gateway, key: str, body: dict) -> None:
    send(gw, "/v1/messages", body, key)


@FUZZ
@given(body=mutated({k: v for k, v in MESSAGES.items() if k not in ("stream", "max_tokens")}, MODELS))
def test_fuzzed_count_tokens_bodies_never_get_a_5xx(gw: Gateway, key: str, body: dict) -> None:
    send(gw, "/v1/messages/count_tokens", body, key)


@FUZZ
@given(body=mutated(RESPONSES, MODELS))
@example(body=replace_at({**RESPONSES, "model": "claude"}, ("input", 0, "content", 0, "type"), 5))
@example(body=replace_at({**RESPONSES, "model": "mocked"}, ("input", 0, "content", 0, "text"), 7))
def test_fuzzed_responses_bodies_on_every_provider_never_get_a_5xx(gw: Gateway, key: str, body: dict) -> None:
    send(gw, "/v1/responses", body, key)


@FUZZ
@given(body=mutated(EMBEDDINGS, EMBED_MODELS))
def test_fuzzed_embedding_bodies_on_every_provider_never_get_a_5xx(gw: Gateway, key: str, body: dict) -> None:
    send(gw, "/v1/embeddings", body, key)


def test_valid_bodies_are_answered_on_every_provider(gw: Gateway, key: str) -> None:
    """The fuzz's starting points are accepted, so that the mutations explore past validation."""
    for path, base in (("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES), ("/v1/responses", RESPONSES)):
        for model in MODELS:
            for stream in (False, True):
                body = {**base, "model": model, "stream": stream}
                if not stream:
                    body.pop("stream_options", None)
                status, answer = send(gw, path, body, key)
                assert status == 200, (path, model, stream, answer[:500])
