"""OpenAI Responses API wire format for the fake upstream: request check, JSON body, SSE events.

Shaped like api.openai.com: the JSON body pretty-printed (2 spaces), stream events as
``event: <type>`` + compact ``data:`` with an increasing ``sequence_number`` and no ``[DONE]``:
response.created, response.in_progress, response.output_item.added, response.content_part.added,
response.output_text.delta (one per word), response.output_text.done, response.content_part.done,
response.output_item.done, response.completed (or response.incomplete at max_output_tokens).
A request offering function tools (whose last input item is not a function_call_output) gets a
function_call item instead, streamed with response.function_call_arguments.delta/done.
"""
from __future__ import annotations

import json
import time

try:
    from . import server_tools, wire, wire_openai
except ImportError:  # run as a script
    import server_tools  # type: ignore[no-redef]
    import wire  # type: ignore[no-redef]
    import wire_openai  # type: ignore[no-redef]

RESPONSES_PARAMS = frozenset({
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools",
    "tool_choice", "parallel_tool_calls", "stream", "stream_options", "store", "metadata", "user",
    "previous_response_id", "reasoning", "text", "truncation", "include", "background",
    "service_tier", "safety_identifier", "prompt_cache_key", "conversation", "max_tool_calls",
    "prompt", "top_logprobs", "client_metadata",
})


def as_chat(body: dict) -> dict:
    """The request seen as chat messages, for the shared token counts and reply text."""
    value = body.get("input")
    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    for item in value if isinstance(value, list) else ():
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = [{"text": p.get("text")} for p in content if isinstance(p, dict)]
            messages.append({"role": item.get("role"), "content": content})
        elif item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output"))})
    tools = [{"name": t.get("name"), "type": t.get("type")} for t in body.get("tools") or () if isinstance(t, dict)]
    return {"model": body.get("model"), "messages": messages, "tools": tools,
            "max_tokens": body.get("max_output_tokens")}


def check(body: dict) -> dict | None:
    for name in body:
        if name not in RESPONSES_PARAMS:
            return wire_openai.openai_error(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    if not body.get("model"):
        return wire_openai.openai_error("Missing required parameter: 'model'.", param="model",
                                 code="missing_required_parameter")
    if "input" not in body:
        return wire_openai.openai_error("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
    if "tools" in body and not isinstance(body["tools"], list):
        return wire_openai.openai_error("Invalid type for 'tools': expected an array.", param="tools",
                                 code="invalid_type")
    return None


def usage(prompt: int, output: int, sc: wire.Scenario) -> dict:
    prompt -= sc.prefix  # emulated prompt caching: the cached part is counted in `prompt` already
    return {"input_tokens": prompt + sc.cached, "input_tokens_details": {"cached_tokens": sc.cached,
                                                                "cache_write_tokens": sc.cache_write},
            "output_tokens": output + sc.reasoning,
            "output_tokens_details": {"reasoning_tokens": sc.reasoning},
            "total_tokens": prompt + sc.cached + output + sc.reasoning}


def _response(body: dict, rid: str, status: str, output: list, use: dict | None, created: int) -> dict:
    return {
        "id": rid, "object": "response", "created_at": created, "status": status,
        "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "model": body["model"], "output": output,
        "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_logprobs": 0, "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "usage": use, "user": None, "metadata": body.get("metadata") or {},
    }


def _plan(body: dict, sc: wire.Scenario) -> tuple[str, list[str], str, dict]:
    """(item kind, pieces, final status, usage) of the fake's answer."""
    chat = as_chat(body)
    call = wire.tool_call(chat)
    if call:
        pieces, status = wire.argument_pieces(call[1]), "completed"
    else:
        pieces, cut = wire.reply_pieces(chat)
        status = "incomplete" if cut else "completed"
    return ("function_call" if call else "message"), pieces, status, usage(
        wire.count_prompt_tokens(chat) + wire.media_tokens(body), len(pieces), sc)


def _item(body: dict, kind: str, item_id: str, text: str, done: bool) -> dict:
    state = "completed" if done else "in_progress"
    if kind == "function_call":
        name = wire.tool_call(as_chat(body))[0]  # type: ignore[index]
        return {"id": item_id, "type": "function_call", "status": state, "arguments": text if done else "",
                "call_id": "call_" + item_id[3:], "name": name}
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}] if done else []
    return {"id": item_id, "type": "message", "status": state, "content": content, "role": "assistant"}


def _hosted(body: dict, sc: wire.Scenario, use: dict) -> list[dict]:
    """The built-in tool calls the fake makes first (server_tools), their results in `use`."""
    items, extra = server_tools.responses_run(body, sc.hosted, sc.results)
    use["input_tokens"] += extra
    use["total_tokens"] += extra
    return items


def response_json(body: dict, sc: wire.Scenario) -> bytes:
    kind, pieces, status, use = _plan(body, sc)
    tools = _hosted(body, sc, use)
    item_id = wire.next_id("fc_fake" if kind == "function_call" else "msg_fake")
    item = _item(body, kind, item_id, "".join(pieces), True)
    return json.dumps(_response(body, wire.next_id("resp_fake"), status, [*tools, item], use,
                                int(time.time())), indent=2).encode()


def events(body: dict, sc: wire.Scenario) -> list[bytes]:
    kind, pieces, status, use = _plan(body, sc)
    tools = _hosted(body, sc, use)
    at = len(tools)  # the answer's output_index
    rid, created = wire.next_id("resp_fake"), int(time.time())
    item_id = wire.next_id("fc_fake" if kind == "function_call" else "msg_fake")
    text = "".join(pieces)
    seq: list[dict] = []

    def ev(type_: str, **data: object) -> None:
        seq.append({"type": type_, "sequence_number": len(seq), **data})

    ev("response.created", response=_response(body, rid, "in_progress", [], None, created))
    ev("response.in_progress", response=_response(body, rid, "in_progress", [], None, created))
    for type_, data in server_tools.responses_item_events(tools):
        ev(type_, **data)
    ev("response.output_item.added", output_index=at, item=_item(body, kind, item_id, "", False))
    done = _item(body, kind, item_id, text, True)
    if kind == "function_call":
        for p in pieces:
            ev("response.function_call_arguments.delta", item_id=item_id, output_index=at, delta=p,
               obfuscation="xyz")
        ev("response.function_call_arguments.done", item_id=item_id, output_index=at, arguments=text)
    else:
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        ev("response.content_part.added", item_id=item_id, output_index=at, content_index=0, part=part)
        for p in pieces:
            ev("response.output_text.delta", item_id=item_id, output_index=at, content_index=0, delta=p,
               logprobs=[], obfuscation="xyz")
        ev("response.output_text.done", item_id=item_id, output_index=at, content_index=0, text=text,
           logprobs=[])
        ev("response.content_part.done", item_id=item_id, output_index=at, content_index=0,
           part={**part, "text": text})
    ev("response.output_item.done", output_index=at, item=done)
    ev(f"response.{status}", response=_response(body, rid, status, [*tools, done], use, created))
    return [wire.sse(e["type"], e) for e in seq]


def stream_error() -> bytes:
    return wire.sse("error", {"type": "error", "code": "server_error", "message": "The server had an "
                              "error while processing your request. Sorry about that!", "param": None,
                              "sequence_number": 3})
