"""Pure translation between OpenAI Chat Completions and Anthropic's Messages API (no I/O).

The Anthropic provider sends what `to_anthropic` builds; its replies are read by
`providers/anthropic_replies.py`.

Request policy for OpenAI parameters:
- mapped: messages, max_tokens / max_completion_tokens, temperature, top_p, stop, stream,
  tools, tool_choice, parallel_tool_calls=false (-> disable_parallel_tool_use), user
  (or safety_identifier) -> metadata.user_id; Anthropic's own `top_k` passes through.
- temperature: OpenAI allows 0..2, Anthropic 0..1. Values above 1 are clamped to 1.0 (Anthropic's
  most random setting and its default); 0..1 keep their value. Scaling (t/2) would turn OpenAI's
  default 1.0 into 0.5 and change the most common requests.
- refused with InvalidRequest(param=...): n > 1, logprobs, top_logprobs, logit_bias, non-zero
  frequency/presence penalties, response_format json_object / json_schema, audio output,
  legacy functions / function_call.
- reasoning_effort -> `thinking` (`claude_thinking`: "none" disables it, the others are a
  token budget below max_tokens).
- refused with a 400 naming it: any other field the client sets (seed, service_tier,
  prediction, web_search_options, verbosity ...: `chat_fields.refuse_unread`), unless its value
  changes nothing (n=1, logprobs false, store false, zero penalties, response_format text) or it
  changes no answer (chat `metadata`, prompt-cache hints: dropped).
- several system/developer messages are joined with a blank line.
"""

from __future__ import annotations

import math

import orjson

from tallygate.errors import InvalidRequest
from tallygate.providers.chat_fields import refuse_unread
from tallygate.providers.chat_turns import add_turn

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TEXT = frozenset({"text"})
_USER_PARTS = frozenset({"text", "image_url", "file"})
_ASSISTANT_PARTS = frozenset({"text", "refusal"})


# --- request
def to_anthropic(body: dict, upstream_model: str, default_max_tokens: int = 4096) -> dict:
    """OpenAI chat request -> Anthropic Messages request; policy in the module docstring."""
    _reject_unsupported(body)
    system, messages = _messages(body.get("messages"))
    out: dict = {"model": upstream_model, "max_tokens": _max_tokens(body, default_max_tokens),
                 "messages": messages}
    if system:
        out["system"] = system
    if (temperature := body.get("temperature")) is not None:
        out["temperature"] = min(_number(temperature, "temperature", 0.0, 2.0), 1.0)
    if (top_p := body.get("top_p")) is not None:
        out["top_p"] = _number(top_p, "top_p", 0.0, 1.0)
    if (top_k := body.get("top_k")) is not None:
        out["top_k"] = int(_number(top_k, "top_k", 0, integer=True))
    if stop := _stop(body.get("stop")):
        out["stop_sequences"] = stop
    if (stream := body.get("stream")) is not None:
        if not isinstance(stream, bool):
            raise _invalid("stream", "must be a boolean")
        out["stream"] = stream
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    if choice := _tool_choice(body.get("tool_choice"), bool(tools), body.get("parallel_tool_calls")):
        out["tool_choice"] = choice
    if (user := body.get("user") or body.get("safety_identifier")) is not None:
        if not isinstance(user, str):
            raise _invalid("user", "must be a string")
        out["metadata"] = {"user_id": user}
    if (effort := body.get("reasoning_effort")) is not None:
        out["thinking"] = claude_thinking(effort, out["max_tokens"])
    return out


_READ = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "tools",
                   "tool_choice", "parallel_tool_calls", "user", "safety_identifier", "reasoning_effort", "n",
                   "logprobs", "top_logprobs", "logit_bias", "functions", "function_call", "audio",
                   "frequency_penalty", "presence_penalty", "response_format"})
# reasoning_effort -> Claude's thinking budget (at least Claude's minimum, 1024 tokens)
_THINKING_BUDGET = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
CLAUDE_MIN_THINKING = 1024


def claude_thinking(effort: object, max_tokens: int) -> dict:
    """Chat's `reasoning_effort` as a Claude `thinking` block (Anthropic, Vertex AI, Bedrock's
    `additionalModelRequestFields`): "none" is `disabled`; the others a `budget_tokens`, cut to
    below `max_tokens` as Claude requires; a 400 when that leaves less than Claude's minimum."""
    if effort == "none":
        return {"type": "disabled"}
    if not isinstance(effort, str) or effort not in _THINKING_BUDGET:
        raise _invalid("reasoning_effort", f"must be one of none, {', '.join(_THINKING_BUDGET)}")
    budget = min(_THINKING_BUDGET[effort], max_tokens - 1)
    if budget < CLAUDE_MIN_THINKING:
        raise _invalid("reasoning_effort", f"needs max_tokens above {CLAUDE_MIN_THINKING} for Claude models "
                                           f"(their thinking budget is at least {CLAUDE_MIN_THINKING} tokens)")
    return {"type": "enabled", "budget_tokens": budget}


def _reject_unsupported(body: dict) -> None:
    """Raise for OpenAI parameters Anthropic cannot honour."""
    def refuse(param: str, what: str) -> None:
        raise InvalidRequest(f"{what} is not supported for Anthropic models", param=param)

    if body.get("n") not in (None, 1):
        refuse("n", "n > 1")
    for param in ("logprobs", "top_logprobs", "logit_bias", "functions", "function_call", "audio"):
        if body.get(param):
            refuse(param, param)
    for param in ("frequency_penalty", "presence_penalty"):
        if body.get(param) not in (None, 0):
            refuse(param, f"a non-zero {param}")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        refuse("response_format", "response_format other than text")
    if "audio" in (body.get("modalities") or ()):
        refuse("modalities", "audio output")
    refuse_unread(body, _READ, "Anthropic")


def _messages(messages: object) -> tuple[str | list[dict] | None, list[dict]]:
    """(system, alternating Anthropic messages) from OpenAI `messages`."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty array")
    system: list[dict] = []
    turns: list[dict] = []
    for i, msg in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _invalid(at, "must be an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            system += _blocks(msg.get("content"), f"{at}.content", _TEXT)
            continue
        if role == "user":
            blocks = _blocks(msg.get("content"), f"{at}.content", _USER_PARTS)
        elif role == "assistant":
            blocks = _assistant_blocks(msg, at)
        elif role == "tool":
            blocks, role = [_tool_result(msg, at)], "user"
        else:
            raise _invalid(f"{at}.role", "must be one of system, developer, user, assistant, tool")
        add_turn(turns, role, blocks)
    if not turns:
        raise _invalid("messages", "must include a user or assistant message")
    return _system(system), turns


def _system(blocks: list[dict]) -> str | list[dict] | None:
    """A `system` string, or text blocks when any carries `cache_control`."""
    if any("cache_control" in b for b in blocks):
        return blocks
    return "\n\n".join(b["text"] for b in blocks) or None


def _blocks(content: object, param: str, kinds: frozenset[str]) -> list[dict]:
    """Anthropic content blocks for an OpenAI `content` (a string or a list of parts)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(param, "must be a string or an array of content parts")
    out = []
    for j, part in enumerate(content):
        at = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in kinds:  # any JSON: a list is not even hashable
            raise _invalid(f"{at}.type", f"must be one of: {', '.join(sorted(kinds))}")
        block = _part_block(kind, part, at)
        if block is not None:
            if "cache_control" in part:
                block["cache_control"] = part["cache_control"]
            out.append(block)
    return out


def _part_block(kind: str, part: dict, at: str) -> dict | None:
    """One OpenAI content part as an Anthropic block (None for empty text)."""
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            raise _invalid(f"{at}.{kind}", "must be a string")
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        param = f"{at}.image_url.url"
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return {"type": "image", "source": {"type": "url", "url": url}}
        return {"type": "image", "source": _base64_source(url, _IMAGE_TYPES, param)}
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    source = _base64_source(data, frozenset({"application/pdf"}), f"{at}.file.file_data")
    return {"type": "document", "source": source}


def _base64_source(url: object, allowed: frozenset[str], param: str) -> dict:
    """A base64 source from a `data:<type>;base64,<data>` URL of an allowed media type."""
    header, _, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    media_type = header[5:-7].lower() if header.startswith("data:") and header.endswith(";base64") else ""
    media_type = "image/jpeg" if media_type == "image/jpg" else media_type
    if media_type not in allowed or not data:
        urls = "an http(s) URL or " if allowed is _IMAGE_TYPES else ""
        raise _invalid(param, f"must be {urls}a base64 data URL of type {', '.join(sorted(allowed))}")
    return {"type": "base64", "media_type": media_type, "data": data}


def _assistant_blocks(msg: dict, at: str) -> list[dict]:
    content = msg.get("content")
    blocks = [] if content is None else _blocks(content, f"{at}.content", _ASSISTANT_PARTS)
    calls = msg.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise _invalid(f"{at}.tool_calls", "must be an array")
    return blocks + [_tool_use(call, f"{at}.tool_calls[{j}]") for j, call in enumerate(calls)]


def _tool_use(call: object, at: str) -> dict:
    if not isinstance(call, dict):
        raise _invalid(at, "must be an object")
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _invalid(f"{at}.function.name", "must be a string")
    if not isinstance(call.get("id"), str):
        raise _invalid(f"{at}.id", "must be a string")
    return {"type": "tool_use", "id": call["id"], "name": fn["name"],
            "input": _arguments(fn.get("arguments"), f"{at}.function.arguments")}


def _arguments(raw: object, param: str) -> dict:
    """Tool-call `arguments` (a JSON object string) as a dict."""
    if raw is None or raw == "":
        return {}
    value = raw
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise _invalid(param, "must be a JSON object")
    return value


def _tool_result(msg: dict, at: str) -> dict:
    tool_use_id = msg.get("tool_call_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _invalid(f"{at}.tool_call_id", "must be a string")
    result: dict = {"type": "tool_result", "tool_use_id": tool_use_id}
    if content := _blocks(msg.get("content"), f"{at}.content", _TEXT):
        result["content"] = content
    return result


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(f"tools[{i}]", "must be a function tool with a name")
        spec = {"name": fn["name"],
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        out.append(spec)
    return out


def _tool_choice(choice: object, has_tools: bool, parallel: object) -> dict | None:
    """Anthropic `tool_choice`, or None to leave Anthropic's default (auto)."""
    fn = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    out: dict
    if choice in (None, "auto"):
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(fn, dict) and isinstance(fn.get("name"), str):
        out = {"type": "tool", "name": fn["name"]}
    else:
        raise _invalid("tool_choice", 'must be "auto", "none", "required" or a function choice')
    if not has_tools:
        if out["type"] in ("auto", "none"):
            return None
        raise _invalid("tool_choice", "requires tools")
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return None if choice is None and len(out) == 1 else out


def _max_tokens(body: dict, default: int) -> int:
    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(param)
    if value is None:
        return default
    return int(_number(value, param, 1, integer=True))


def _number(value: object, param: str, low: float, high: float = math.inf, *,
            integer: bool = False) -> float:
    """`value` checked to be a number (an integer if asked) within [low, high]."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, kinds) and not isinstance(value, bool) and low <= value <= high:
        return value
    bound = f"between {low} and {high}" if high != math.inf else f"at least {low}"
    raise _invalid(param, f"must be {'an integer' if integer else 'a number'} {bound}")


def _invalid(param: str, problem: str) -> InvalidRequest:
    """InvalidRequest("<param> <problem>") naming the offending field."""
    return InvalidRequest(f"{param} {problem}", param=param)


def _stop(stop: object) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _invalid("stop", "must be a string or an array of strings")
    return stops
