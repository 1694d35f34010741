"""Pure translation of Anthropic's Messages API onto OpenAI Chat Completions (no I/O).

`/v1/messages` served by an OpenAI-compatible provider: `messages_to_chat` builds the chat
request, `chat_to_message` turns the completion back into a Message, `ChatToMessagesStream`
turns chat chunks into Messages SSE events. (The reverse direction, chat served by Anthropic,
is `anthropic_translate`.)

Request policy:
- mapped: system (string or text blocks), `system` messages anywhere in `messages` (as Claude
  Code sends for model names it does not know; chat takes system messages anywhere), messages
  with text, image (base64 or URL), PDF document (base64), tool_use and tool_result blocks;
  max_tokens, temperature, top_p, stop_sequences, stream, tools (custom tools), tool_choice
  (auto/any/tool/none, disable_parallel_tool_use), metadata.user_id -> user,
  output_config.format (json_schema) -> response_format.
  service_tier (auto -> auto, standard_only -> default).
- dropped, as hints a chat model takes its own way: cache_control (OpenAI caches prompts by
  itself), thinking and redacted_thinking blocks of earlier turns, `thinking` (enabled, adaptive
  or disabled: the model reasons as it does and returns no thinking blocks) and
  output_config.effort (Claude Code sends both to every model; as chat's reasoning_effort they
  would be refused by every model that does not reason), context_management edits that clear
  thinking (there is none to clear), tools marked `defer_loading` (not shown to the model until
  a tool search loads them, which chat has no way to do).
- refused with a 400 naming the field: top_k, server tools (web search, code execution ...),
  container, mcp_servers, other context_management edits, other block types, and every other
  top-level field (`chat_fields.refuse_unread`).
A chat field a provider refuses is renamed to the Messages field it came from (`param_origins`).
"""

from __future__ import annotations

import orjson

from tallygate.errors import InvalidRequest
from tallygate.providers.chat_fields import refuse_unread
from tallygate.providers.param_origins import ParamOrigins
from tallygate.types import Usage

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
         "function_call": "tool_use", "content_filter": "refusal"}
_PASSED = ("temperature", "top_p")
_REFUSED = ("top_k", "container", "mcp_servers")
_DROPPED_EDITS = ("clear_thinking_",)
# chat's fields -> the Messages fields they are made from (for a provider's 400, `param_origins`)
_ORIGINS = {"messages": "messages", "response_format": "output_config.format", "max_tokens": "max_tokens",
            "stop": "stop_sequences", "tools": "tools", "tool_choice": "tool_choice",
            "parallel_tool_calls": "tool_choice.disable_parallel_tool_use", "user": "metadata.user_id",
            "temperature": "temperature", "top_p": "top_p", "service_tier": "service_tier"}


def param_origins() -> ParamOrigins:
    """A record of where `messages_to_chat`'s chat fields come from, for it to fill."""
    return ParamOrigins(_ORIGINS, {".tool_call_id": ".tool_use_id"},
                        {".image_url.url": ".source", ".file.file_data": ".source"})


def _invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {problem}", param=param)


def _untranslatable(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {what} cannot be translated for a model served by an "
                          "OpenAI-compatible provider", param=param)


# --- request
def messages_to_chat(body: dict, upstream_model: str, origins: ParamOrigins | None = None) -> dict:
    """Anthropic Messages request -> OpenAI chat request; policy in the module docstring.
    `origins` (from `param_origins()`) records where each chat message, part and tool call comes from."""
    origins = origins or param_origins()
    for name in _REFUSED:
        if body.get(name) is not None:
            raise _untranslatable(name, name)
    _context_management(body.get("context_management"))
    system = _system(body.get("system"))
    if system:
        origins.message("system")
    out: dict = {"model": upstream_model, "messages": [*system, *_turns(body.get("messages"), origins)]}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for name in _PASSED:
        if body.get(name) is not None:
            out[name] = body[name]
    if stop := body.get("stop_sequences"):
        out["stop"] = stop
    if body.get("stream"):
        out["stream"] = True
    if (tools := body.get("tools")) and (shown := _tools(tools)):
        out["tools"] = shown
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(_tool_choice(choice))
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str):
        out["user"] = user
    out.update(_output_config(body.get("output_config")))
    if (tier := body.get("service_tier")) is not None:
        if tier not in _SERVICE_TIERS:
            raise _invalid("service_tier", 'must be "auto" or "standard_only"')
        out["service_tier"] = _SERVICE_TIERS[tier]
    refuse_unread(body, _READ, "OpenAI-compatible")
    return out


_READ = frozenset({"system", "max_tokens", "temperature", "top_p", "stop_sequences", "tools", "tool_choice",
                   "metadata", "output_config", "context_management", "thinking", "service_tier"})
_SERVICE_TIERS = {"auto": "auto", "standard_only": "default"}


def _context_management(value: object) -> None:
    """Only edits that clear thinking translate (to nothing: no thinking reaches chat)."""
    if value is None:
        return
    edits = value.get("edits") if isinstance(value, dict) else None
    if not isinstance(edits, list):
        raise _invalid("context_management.edits", "must be an array")
    for i, edit in enumerate(edits):
        kind = edit.get("type") if isinstance(edit, dict) else None
        if not (isinstance(kind, str) and kind.startswith(_DROPPED_EDITS)):
            raise _untranslatable(f"context_management.edits[{i}].type", f"the context edit {kind!r}")


def _output_config(value: object) -> dict:
    """`effort` is dropped (a hint to a Claude model); a JSON schema `format` is chat's
    `response_format`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid("output_config", "must be an object")
    fmt = value.get("format")
    if fmt is None:
        return {}
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _untranslatable("output_config.format", "a format that is not a JSON schema")
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}}


def _system(system: object, param: str = "system") -> list[dict]:
    """The top-level `system`, or a `system` message's content, as one chat system message."""
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise _invalid(param, "must be a string or an array of text blocks")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"{param}[{i}]", "must be a text block")
        texts.append(block["text"])
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _turns(messages: object, origins: ParamOrigins) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty array")
    out: list[dict] = []
    for i, msg in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant", "system"):
            raise _invalid(f"{at}.role", 'must be "user", "assistant" or "system"')
        content = msg.get("content")
        if msg["role"] == "system":
            out.extend(system := _system(content, f"{at}.content"))
            if system:
                origins.message(f"{at}.content")
            continue
        if isinstance(content, str):
            out.append({"role": msg["role"], "content": content})
            origins.message(at)
            continue
        if not isinstance(content, list):
            raise _invalid(f"{at}.content", "must be a string or an array of content blocks")
        if msg["role"] == "assistant":
            out.append(_assistant(content, at, origins))
        else:
            out.extend(_user(content, at, origins))
    return out


def _kind(block: object, where: str) -> str:
    """A content block's `type`: a block is an object naming its type with a string."""
    if not isinstance(block, dict):
        raise _invalid(where, "must be a content block (an object)")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type", "must be a string naming the block's type")
    return kind


def _string(block: dict, name: str, where: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise _invalid(f"{where}.{name}", "must be a string")
    return value


def _tool_use(block: dict, where: str) -> dict:
    arguments = block.get("input")
    if arguments is not None and not isinstance(arguments, dict):
        raise _invalid(f"{where}.input", "must be an object")
    return {"id": _string(block, "id", where), "type": "function", "function": {
        "name": _string(block, "name", where), "arguments": orjson.dumps(arguments or {}).decode()}}


def _assistant(blocks: list, at: str, origins: ParamOrigins) -> dict:
    texts: list[str] = []
    calls: list[dict] = []
    index = origins.message(at)
    for j, block in enumerate(blocks):
        kind = _kind(block, f"{at}.content[{j}]")
        if kind == "text":
            texts.append(_string(block, "text", f"{at}.content[{j}]"))
        elif kind == "tool_use":
            origins.inner(index, "tool_calls", len(calls), f"{at}.content[{j}]")
            calls.append(_tool_use(block, f"{at}.content[{j}]"))
        elif kind not in ("thinking", "redacted_thinking"):
            raise _untranslatable(f"{at}.content[{j}].type", f"an assistant {kind!r} block")
    msg: dict = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _user(blocks: list, at: str, origins: ParamOrigins) -> list[dict]:
    """Tool results become `tool` messages (first, as OpenAI wants them), the rest one user turn."""
    results: list[dict] = []
    parts: list[dict] = []
    wheres: list[str] = []  # the block of each part
    for j, block in enumerate(blocks):
        where = f"{at}.content[{j}]"
        kind = _kind(block, where)
        if kind != "tool_result":
            wheres.append(where)
        if kind == "tool_result":
            origins.message(where)
            results.append({"role": "tool", "tool_call_id": _string(block, "tool_use_id", where),
                            "content": _result_text(block.get("content"), where)})
        elif kind == "text":
            parts.append({"type": "text", "text": _string(block, "text", where)})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _source_url(block, where)}})
        elif kind == "document":
            url = _source_url(block, where)
            if not url.startswith("data:application/pdf;"):
                raise _untranslatable(f"{where}.source", "a document that is not a base64 PDF")
            parts.append({"type": "file", "file": {"filename": "document.pdf", "file_data": url}})
        else:
            raise _untranslatable(f"{where}.type", f"a {kind!r} block")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        index = origins.message(at)
        for k, where in enumerate(wheres if not only_text else ()):
            origins.inner(index, "content", k, where)
        results.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return results


def _result_text(content: object, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text"
                                         and isinstance(b.get("text"), str) for b in content):
        return "".join(b["text"] for b in content)
    raise _untranslatable(f"{where}.content", "a tool result that is not text")


def _source_url(block: dict, where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        if not (isinstance(source.get("media_type"), str) and isinstance(source.get("data"), str)):
            raise _invalid(f"{where}.source", "must carry its `media_type` and base64 `data` as strings")
        return f"data:{source['media_type']};base64,{source['data']}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    raise _untranslatable(f"{where}.source", "a source that is not base64 data or a URL")


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools[{i}]", "must be a tool with a name")
        if tool.get("defer_loading") is True:
            continue
        if tool.get("type") not in (None, "custom"):
            raise _untranslatable(f"tools[{i}].type", f"the server tool {tool.get('type')!r}")
        if tool.get("input_schema") is not None and not isinstance(tool["input_schema"], dict):
            raise _invalid(f"tools[{i}].input_schema", "must be an object (a JSON schema)")
        fn: dict = {"name": tool["name"],
                    "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: object) -> dict:
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", 'must be {"type": "auto" | "any" | "none" | "tool"}')
    kind = choice.get("type")
    out: dict
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        out = {"tool_choice": "none"}
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise _invalid("tool_choice", 'must be {"type": "auto" | "any" | "none" | "tool"}')
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False
    return out


# --- response
def message_usage(usage: Usage) -> dict:
    """Anthropic's `usage` for normalised counts: `input_tokens` excludes cache reads and writes."""
    return {"input_tokens": max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens),
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "output_tokens": usage.output_tokens}


def stop_reason(finish_reason: object) -> str:
    return _STOP.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def chat_to_message(data: dict, usage: Usage, message_id: str, model: str) -> dict:
    """OpenAI `chat.completion` -> Anthropic Message (the first choice)."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    content: list[dict] = []
    if isinstance(msg.get("content"), str) and msg["content"]:
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _json_object(fn.get("arguments"))})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason")), "stop_sequence": None,
            "usage": message_usage(usage)}


def _json_object(raw: object) -> dict:
    try:
        value = orjson.loads(raw) if isinstance(raw, str) and raw else {}
    except orjson.JSONDecodeError:
        value = {}
    return value if isinstance(value, dict) else {}


# --- stream
class ChatToMessagesStream:
    """OpenAI chat chunks in, Anthropic Messages SSE events `(name, data)` out.

    `feed` takes one chunk; `finish(usage)` closes the open block and emits `message_delta`
    (stop reason, usage) and `message_stop`. Text and tool calls become content blocks in order.
    """

    def __init__(self, message_id: str, model: str) -> None:
        self._id, self._model = message_id, model
        self._started = False
        self._block: int | None = None        # index of the open content block
        self._kind: str | None = None         # "text" or "tool_use"
        self._blocks = 0
        self._tools: dict[int, int] = {}      # OpenAI tool_calls index -> block index
        self.finish_reason: str | None = None

    def start(self, usage: Usage | None = None) -> list[tuple[str, dict]]:
        self._started = True
        return [("message_start", {"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": message_usage(usage or Usage())}})]

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        out = [] if self._started else self.start()
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _tool_delta(self, call: dict) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        idx = call.get("index", 0)
        fn = call.get("function") or {}
        if idx not in self._tools:
            out += self._open("tool_use", {"type": "tool_use", "id": call.get("id"),
                                           "name": fn.get("name"), "input": {}})
            self._tools[idx] = self._blocks - 1
        args = fn.get("arguments")
        if isinstance(args, str) and args and self._tools[idx] == self._block:
            out.append(self._delta({"type": "input_json_delta", "partial_json": args}))
        return out

    def _open(self, kind: str, block: dict) -> list[tuple[str, dict]]:
        out = self._close()
        self._block, self._kind = self._blocks, kind
        self._blocks += 1
        out.append(("content_block_start", {"type": "content_block_start", "index": self._block,
                                            "content_block": block}))
        return out

    def _close(self) -> list[tuple[str, dict]]:
        if self._block is None:
            return []
        index, self._block, self._kind = self._block, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _delta(self, delta: dict) -> tuple[str, dict]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta})

    def finish(self, usage: Usage) -> list[tuple[str, dict]]:
        out = ([] if self._started else self.start()) + self._close()
        out.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop_reason(self.finish_reason), "stop_sequence": None},
            "usage": message_usage(usage)}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
