"""Anthropic Messages wire format for the fake upstream (see ``upstream.py``): request checks and
response bodies, shaped like the real API: compact JSON and named SSE events.
"""
from __future__ import annotations

import json

try:
    from . import server_tools, wire
except ImportError:  # run as a script
    import server_tools  # type: ignore[no-redef]
    import wire  # type: ignore[no-redef]

ANTHROPIC_PARAMS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "cache_control", "inference_geo",
    "output_config", "speed",
})


def anthropic_error(type_: str, message: str) -> dict:
    return {"type": "error", "error": {"type": type_, "message": message},
            "request_id": wire.next_id("req_fake")}


def check_anthropic(body: dict) -> dict | None:
    for name in body:
        if name not in ANTHROPIC_PARAMS:
            return anthropic_error("invalid_request_error", f"{name}: Extra inputs are not permitted")
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return anthropic_error("invalid_request_error", f"{name}: Field required")
    return None


_ANTHROPIC_FAILURES = {
    400: ("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization of "
                              "50 requests per minute. Please try again later."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_failure(status: int, model: str) -> dict:
    type_, msg = _ANTHROPIC_FAILURES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error",
                 "Injected upstream failure ({status})."))
    return anthropic_error(type_, msg.format(model=model, status=status))


def anthropic_usage(prompt: int, output: int, sc: wire.Scenario) -> dict:
    return {"input_tokens": prompt - sc.prefix, "cache_creation_input_tokens": sc.cache_write + sc.cache_write_1h,
            "cache_read_input_tokens": sc.cached,
            "cache_creation": {"ephemeral_5m_input_tokens": sc.cache_write,
                               "ephemeral_1h_input_tokens": sc.cache_write_1h},
            "output_tokens": output, "service_tier": "standard"}


def _message(body: dict, content: list, stop: str | None, usage: dict) -> dict:
    return {"id": wire.next_id("msg_01Fake"), "type": "message", "role": "assistant",
            "model": body["model"], "content": content, "stop_reason": stop,
            "stop_sequence": None, "usage": usage}


def anthropic_json(body: dict, sc: wire.Scenario) -> bytes:
    pieces, cut = wire.reply_pieces(body)
    content = [{"type": "text", "text": "".join(pieces)}]
    stop = "max_tokens" if cut else "end_turn"
    if call := wire.tool_call(body):
        pieces, stop = wire.argument_pieces(call[1]), "tool_use"
        content = [{"type": "tool_use", "id": wire.next_id("toolu_01Fake"), "name": call[0],
                    "input": json.loads(call[1])}]
    run = server_tools.anthropic_run(body, sc.hosted, sc.results)
    usage = anthropic_usage(wire.count_prompt_tokens(body) + run.extra_input, len(pieces), sc)
    if run.usage():
        usage["server_tool_use"] = run.usage()
    message = _message(body, run.blocks + content, stop, usage)
    if run.container:
        message["container"] = run.container
    return wire.dumps(message)


def anthropic_events(body: dict, sc: wire.Scenario) -> list[bytes]:
    pieces, cut = wire.reply_pieces(body)
    prompt = wire.count_prompt_tokens(body)
    block: dict = {"type": "text", "text": ""}
    stop = "max_tokens" if cut else "end_turn"
    if call := wire.tool_call(body):
        pieces, stop = wire.argument_pieces(call[1]), "tool_use"
        block = {"type": "tool_use", "id": wire.next_id("toolu_01Fake"), "name": call[0], "input": {}}
    run = server_tools.anthropic_run(body, sc.hosted, sc.results)
    at = len(run.blocks)  # the answer's block comes after the server tools' blocks
    out = [wire.sse("message_start", {"type": "message_start", "message": _message(
               body, [], None, anthropic_usage(prompt, 1, sc))}),
           *(wire.sse(name, event) for name, event in server_tools.anthropic_block_events(run.blocks)),
           wire.sse("content_block_start", {"type": "content_block_start", "index": at,
                                       "content_block": block}),
           wire.sse("ping", b'{"type": "ping"}')]
    kind, field = ("input_json_delta", "partial_json") if call else ("text_delta", "text")
    out += [wire.sse("content_block_delta", {"type": "content_block_delta", "index": at,
                                        "delta": {"type": kind, field: p}}) for p in pieces]
    final = anthropic_usage(prompt + run.extra_input, len(pieces), sc)
    for k in ("cache_creation", "service_tier"):
        del final[k]
    if run.usage():
        final["server_tool_use"] = run.usage()
    delta: dict = {"stop_reason": stop, "stop_sequence": None}
    if run.container:
        delta["container"] = run.container
    return out + [
        wire.sse("content_block_stop", {"type": "content_block_stop", "index": at}),
        wire.sse("message_delta", {"type": "message_delta", "usage": final, "delta": delta}),
        wire.sse("message_stop", {"type": "message_stop"})]


def anthropic_stream_error() -> bytes:
    return wire.sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def anthropic_models_json(models: list[str]) -> bytes:
    data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models]
    return wire.dumps({"data": data, "has_more": False, "first_id": models[0] if models else None,
                  "last_id": models[-1] if models else None})
