"""No request field is dropped silently on its way to any provider type. For every field the
official SDKs declare for each inbound API (chat completions, Messages, Responses: read from the
installed `openai` and `anthropic` packages, so a field they add tomorrow joins the test), sent
through a real `tallygate serve` to each translation and native relay, the gateway either carries
it (the body the fake upstream received differs from the same request without it) or refuses it
with a 400 naming it. A field with no sample here fails the test until it is classified."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from anthropic.types import message_create_params
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from tests.fakes.clouds import FakeClouds
from tests.gateway import Gateway

SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MODELS = {"az": ("az", "o4-mini"), "oa": ("oa", "gpt-4o-mini"), "an": ("an", "claude-sonnet-4-5"),
          "br": ("br", SONNET), "brc": ("brc", SONNET), "ge": ("ge", "gemini-2.5-flash"),
          "vx": ("vx", "gemini-2.5-flash"), "vxc": ("vxc", "claude-haiku-4-5@20251001")}
# inbound API -> the targets that serve it: natively (az, oa, an, brc and vxc on Messages) or translated
TARGETS = {"chat": ["az", "an", "br", "ge", "vx", "vxc"],
           "messages": ["an", "brc", "vxc", "br", "az", "ge"],
           "responses": ["oa", "az", "an", "br", "ge", "vxc"]}
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
RESPONSES_TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
CLAUDE_TOOL = {"name": "lookup", "input_schema": {"type": "object"}}
BASE = {"chat": {"messages": [{"role": "user", "content": "hi"}]},
        "messages": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000},
        "responses": {"input": "hi"}}
SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}
# field -> (a value that asks for something, other fields it needs alongside, in both requests)
SAMPLES: dict[str, dict[str, tuple[object, dict]]] = {
    "chat": {
        "audio": ({"voice": "alloy", "format": "wav"}, {}), "frequency_penalty": (0.5, {}),
        "function_call": ("auto", {}), "functions": ([{"name": "f", "parameters": {"type": "object"}}], {}),
        "logit_bias": ({"50256": -100}, {}), "logprobs": (True, {}), "max_completion_tokens": (77, {}),
        "max_tokens": (77, {}), "metadata": ({"team": "a"}, {}), "modalities": (["text", "audio"], {}),
        "moderation": ("auto", {}), "n": (2, {}), "parallel_tool_calls": (False, {"tools": [TOOL]}),
        "prediction": ({"type": "content", "content": "hi"}, {}), "presence_penalty": (0.5, {}),
        "prompt_cache_key": ("k1", {}), "prompt_cache_options": ({"mode": "auto"}, {}),
        "prompt_cache_retention": ("24h", {}), "reasoning_effort": ("low", {}),
        "response_format": ({"type": "json_object"}, {}), "safety_identifier": ("u1", {}), "seed": (7, {}),
        "service_tier": ("flex", {}), "stop": (["END"], {}), "store": (True, {}), "temperature": (0.5, {}),
        "tool_choice": ("required", {"tools": [TOOL]}), "tools": ([TOOL], {}),
        "top_logprobs": (2, {}), "top_p": (0.5, {}), "user": ("u1", {}),
        "verbosity": ("low", {}), "web_search_options": ({"search_context_size": "low"}, {}),
    },
    "messages": {
        "cache_control": ({"type": "ephemeral"}, {}), "container": ("container_1", {}),
        "context_management": ({"edits": [{"type": "clear_tool_uses_20250919"}]}, {}),
        "diagnostics": ({"enabled": True}, {}), "inference_geo": ("us", {}), "mcp_servers": (
            [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}], {}),
        "metadata": ({"user_id": "u1"}, {}),
        "output_config": ({"format": {"type": "json_schema", "schema": SCHEMA}}, {}),
        "service_tier": ("standard_only", {}), "speed": ("fast", {}), "stop_sequences": (["END"], {}),
        "system": ("be brief", {}), "temperature": (0.5, {}),
        "thinking": ({"type": "enabled", "budget_tokens": 1024}, {}),
        "tool_choice": ({"type": "any"}, {"tools": [CLAUDE_TOOL]}), "tools": ([CLAUDE_TOOL], {}),
        "top_k": (5, {}), "top_p": (0.5, {}), "user_profile_id": ("up_1", {}), "workspace_id": ("ws_1", {}),
    },
    "responses": {
        "access_programs": (["a"], {}), "background": (True, {}), "background_options": ({"x": 1}, {}),
        "context_management": ([{"type": "compaction", "compact_threshold": 1000}], {}),
        "conversation": ("conv_1", {}), "image": ({"x": 1}, {}),
        "include": (["message.output_text.logprobs"], {}), "instructions": ("be brief", {}),
        "max_output_tokens": (77, {}), "max_tool_calls": (2, {}), "metadata": ({"team": "a"}, {}),
        "moderation": ("auto", {}), "parallel_tool_calls": (False, {"tools": [RESPONSES_TOOL]}),
        "previous_response_id": ("resp_1", {}), "prompt": ({"id": "pmpt_1"}, {}),
        "prompt_cache_key": ("k1", {}), "prompt_cache_options": ({"mode": "auto"}, {}),
        "prompt_cache_retention": ("24h", {}), "reasoning": ({"effort": "low"}, {}),
        "safety_identifier": ("u1", {}), "service_tier": ("flex", {}), "store": (True, {}),
        "temperature": (0.5, {}), "text": ({"format": {"type": "json_object"}}, {}),
        "tool_choice": ("required", {"tools": [RESPONSES_TOOL]}), "tools": ([RESPONSES_TOOL], {}),
        "top_logprobs": (2, {}), "top_p": (0.5, {}), "truncation": ("auto", {}), "user": ("u1", {}),
    },
}
# Read by the gateway itself (the model; `stream`: the target's streaming call; `stream_options`:
# the gateway's own usage report), or part of every request (BASE).
GATEWAY = {"model", "stream", "stream_options", "messages", "input"}
# Answered, not sent: on a translated Response object (`store: false`, the request's `metadata`
# echoed, as OpenAI attaches it to the response, and `max_tool_calls`: a bound on built-in tool
# calls, of which a translation runs none); hints: Claude Code's thinking, which a model
# served through chat takes its own way (messages_translate), and prompt-cache routing hints,
# which change no answer (chat_fields.HINTS)
ANSWERED = {("responses", "store"): ("store", False), ("responses", "metadata"): ("metadata", {"team": "a"}),
            ("responses", "max_tool_calls"): ("max_tool_calls", 2)}
HINTS = {("messages", "thinking"), ("messages", "metadata"), *((api, f) for api in ("chat", "responses")
                                      for f in ("prompt_cache_key", "prompt_cache_retention", "user",
                                                "safety_identifier", "metadata"))}
NATIVE = {("chat", "az"), ("responses", "oa"), ("responses", "az"), ("messages", "an"), ("messages", "brc"),
          ("messages", "vxc")}


def declared(api: str) -> set[str]:
    """The request fields the installed SDK declares for `api`."""
    params = {"chat": completion_create_params.CompletionCreateParamsBase,
              "messages": message_create_params.MessageCreateParamsBase,
              "responses": response_create_params.ResponseCreateParamsBase}[api]
    return set(params.__annotations__)


@pytest.fixture(scope="module")
def gateway(clouds: FakeClouds, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    models = {name: {"provider": p, "model": m} for name, (p, m) in MODELS.items()}
    gw = Gateway(tmp_path_factory.mktemp("gw"), {"providers": clouds.providers(), "models": models},
                 env=clouds.env).start()
    yield gw
    gw.stop()
    assert "Traceback" not in gw.log(), gw.log()


def send(gateway: Gateway, clouds: FakeClouds, api: str, body: dict) -> tuple[int, dict, list]:
    """The gateway's status and answer to `body`, and what the fakes received for it (path and body)."""
    clouds.clear()
    status, _, answer = gateway.post_json(PATHS[api], body, headers={"anthropic-version": "2023-06-01"})
    sent = [(r["path"], r["body"]) for f in clouds.fakes() for r in f.requests if r["path"] != "/token"]
    return status, answer, sent


def names(status: int, answer: dict, field: str) -> bool:
    """A 400 that names `field` (OpenAI's `param`, or its message; Anthropic's message)."""
    error = answer.get("error") or {}
    return status == 400 and (str(error.get("param", "")).startswith(field) or field in str(error.get("message", "")))


def test_every_declared_field_has_a_sample() -> None:
    for api in SAMPLES:
        assert declared(api) - GATEWAY - set(BASE[api]) <= set(SAMPLES[api]), f"classify {api}'s new fields"


@pytest.mark.parametrize(("api", "target"), [(api, t) for api, ts in TARGETS.items() for t in ts])
def test_each_field_is_carried_or_refused_by_name(gateway: Gateway, clouds: FakeClouds, api: str, target: str) -> None:
    dropped = []
    for field, (value, context) in sorted(SAMPLES[api].items()):
        base = {"model": target, **BASE[api], **context}
        status, answer, sent_before = send(gateway, clouds, api, base)
        assert status == 200, (field, answer)
        status, answer, sent = send(gateway, clouds, api, {**base, field: value})
        if names(status, answer, field):
            continue
        if (api, field) in ANSWERED and status == 200:
            key, echoed = ANSWERED[(api, field)]
            if (api, target) in NATIVE or answer[key] == echoed:
                continue
        if (api, field) in HINTS and (api, target) not in NATIVE and status == 200:
            continue
        if status == 200 and sent != sent_before:
            continue
        dropped.append((field, status, str(answer)[:200]))
    assert dropped == []
