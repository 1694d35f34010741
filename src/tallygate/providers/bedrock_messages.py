"""Pure translation between Anthropic's Messages API and AWS Bedrock's Converse API (no I/O).

`/v1/messages` served through Converse (`BedrockProvider` with any model family) goes straight
to Converse, not through chat completions, so each block keeps its place: a block (system, tool,
message content, tool result) carrying `cache_control` is followed by a Converse `cachePoint`
block (with `ttl: "1h"` when the client asked for the hour), exactly where the client put its
breakpoint. Converse's usage comes back as Anthropic's: `input_tokens` without the cache,
`cache_read_input_tokens`, `cache_creation_input_tokens`, the hour-long writes from
`cacheDetails` in `cache_creation`.

Request policy (as for the chat translation, `messages_translate`):
- mapped: system (string or text blocks), `system` messages inside `messages`, text, base64
  image (png, jpeg, gif, webp) and base64 PDF document blocks, tool_use and tool_result
  (text and image content, `is_error`), max_tokens, temperature, top_p, stop_sequences, custom
  tools, tool_choice (auto / any / tool / none), cache_control; for Claude models top_k,
  thinking, output_config.effort and the `anthropic-beta` header (`additionalModelRequestFields`,
  as Anthropic's own API takes them); metadata.user_id -> `requestMetadata`.
- dropped, as hints another model family takes its own way (Claude Code sends them to every
  model, `messages_translate`): thinking and output_config.effort for models that are not
  Claude; earlier turns' thinking blocks, tools marked `defer_loading`, context edits that clear
  thinking.
- refused with a 400 naming the field: top_k for other models, container, mcp_servers,
  service_tier, tool_choice.disable_parallel_tool_use (Converse has no such switch), server
  tools, URL images and documents, output_config.format, other context edits, other block
  types, and every other top-level field (`chat_fields.refuse_unread`).
"""

from __future__ import annotations

from tallygate.errors import InvalidRequest
from tallygate.providers.bedrock_translate import cache_point, converse_usage
from tallygate.providers.chat_fields import refuse_unread
from tallygate.providers.chat_turns import add_turn, invalid
from tallygate.types import Usage

_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_STOP = {"end_turn": "end_turn", "tool_use": "tool_use", "max_tokens": "max_tokens",
         "stop_sequence": "stop_sequence", "guardrail_intervened": "refusal", "content_filtered": "refusal",
         "model_context_window_exceeded": "max_tokens"}
_REFUSED = ("container", "mcp_servers")


def _untranslatable(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {what} cannot be sent to a Bedrock model through Converse", param=param)


# --- request
def messages_to_converse(body: dict, headers: dict[str, str] | None = None) -> dict:
    """Anthropic Messages request -> Converse request (the model goes in the URL). For Claude
    models, `top_k` and the client's `anthropic-beta` header go in `additionalModelRequestFields`
    (as `top_k` and the `anthropic_beta` list), where Bedrock passes them to the model."""
    for name in _REFUSED:
        if body.get(name) is not None:
            raise _untranslatable(name, name)
    claude = "anthropic.claude" in str(body.get("model", ""))
    extra: dict = {}
    if body.get("top_k") is not None:
        if not claude:
            raise _untranslatable("top_k", "top_k for a model that is not Claude")
        extra["top_k"] = body["top_k"]
    if claude and body.get("thinking") is not None:
        extra["thinking"] = body["thinking"]
    if claude and (effort := _effort(body)) is not None:
        extra["output_config"] = {"effort": effort}
    if body.get("service_tier") is not None:
        raise _untranslatable("service_tier", "a service tier")
    beta = (headers or {}).get("anthropic-beta", "")
    if claude and (betas := [b.strip() for b in beta.split(",") if b.strip()]):
        extra["anthropic_beta"] = betas
    _context_management(body.get("context_management"))
    output = body.get("output_config")
    if isinstance(output, dict) and output.get("format") is not None:
        raise _untranslatable("output_config.format", "a structured output format")
    system = _system(body.get("system"), "system")
    out: dict = {"messages": _turns(body.get("messages"), system)}
    if system:
        out["system"] = system
    config: dict = {}
    for ours, theirs in (("max_tokens", "maxTokens"), ("temperature", "temperature"), ("top_p", "topP"),
                         ("stop_sequences", "stopSequences")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    if config:
        out["inferenceConfig"] = config
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"))
    if tools and choice != "none":
        out["toolConfig"] = {"tools": tools}
        if isinstance(choice, dict):
            out["toolConfig"]["toolChoice"] = choice
    if extra:
        out["additionalModelRequestFields"] = extra
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str):
        out["requestMetadata"] = {"user_id": user}
    refuse_unread(body, _READ, "Bedrock Converse")
    return out


_READ = frozenset({*_REFUSED, "system", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "tools",
                   "tool_choice", "metadata", "thinking", "output_config", "context_management", "service_tier"})


def _effort(body: dict) -> object:
    output = body.get("output_config")
    return output.get("effort") if isinstance(output, dict) else None


def _tool_choice(choice: object) -> dict | str | None:
    """Converse's `toolChoice` (None: auto), or "none" (no tools are sent)."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True and kind != "none":
        raise _untranslatable("tool_choice.disable_parallel_tool_use", "turning parallel tool use off")
    if choice is None or kind == "auto":
        return None
    if kind == "none":
        return "none"
    if kind == "any":
        return {"any": {}}
    if kind == "tool" and isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return {"tool": {"name": choice["name"]}}
    raise invalid("tool_choice", 'must be {"type": "auto" | "any" | "none" | "tool"} (a tool with its name)')


def _context_management(value: object) -> None:
    if value is None:
        return
    edits = value.get("edits") if isinstance(value, dict) else None
    if not isinstance(edits, list):
        raise invalid("context_management.edits", "must be an array")
    for i, edit in enumerate(edits):
        kind = edit.get("type") if isinstance(edit, dict) else None
        if not (isinstance(kind, str) and kind.startswith("clear_thinking_")):
            raise _untranslatable(f"context_management.edits[{i}].type", f"the context edit {kind!r}")


def _system(system: object, param: str) -> list[dict]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"text": system}]
    if not isinstance(system, list):
        raise invalid(param, "must be a string or an array of text blocks")
    out: list[dict] = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise invalid(f"{param}[{i}]", "must be a text block")
        if block["text"]:
            out.append({"text": block["text"]})
        out += cache_point(block, f"{param}[{i}]")
    return out


def _turns(messages: object, system: list[dict]) -> list[dict]:
    """Converse turns (consecutive turns of one role merged, as Anthropic's API does);
    `system` messages go to the end of `system`."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "must be a non-empty array")
    turns: list[dict] = []
    for i, msg in enumerate(messages):
        at = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant", "system"):
            raise invalid(f"{at}.role", 'must be "user", "assistant" or "system"')
        content = msg["content"] if "content" in msg else None
        if role == "system":
            system += _system(content, f"{at}.content")
            continue
        if isinstance(content, str):
            blocks = [{"text": content}] if content else []
        elif isinstance(content, list):
            blocks = [b for j, block in enumerate(content) for b in _block(block, f"{at}.content[{j}]", role)]
        else:
            raise invalid(f"{at}.content", "must be a string or an array of content blocks")
        add_turn(turns, role, blocks)
    if not turns:
        raise invalid("messages", "must include a user or assistant message")
    return turns


def _block(block: object, at: str, role: str) -> list[dict]:
    if not isinstance(block, dict):
        raise invalid(at, "must be a content block")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise invalid(f"{at}.text", "must be a string")
        out = [{"text": block["text"]}] if block["text"] else []
    elif kind in ("thinking", "redacted_thinking") and role == "assistant":
        return []
    elif kind == "tool_use" and role == "assistant":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise invalid(at, "must have an id and a name")
        tool_input = block.get("input")
        out = [{"toolUse": {"toolUseId": block["id"], "name": block["name"],
                            "input": tool_input if isinstance(tool_input, dict) else {}}}]
    elif kind == "image" and role == "user":
        out = [{"image": _image(block, at)}]
    elif kind == "document" and role == "user":
        out = [{"document": _document(block, at)}]
    elif kind == "tool_result" and role == "user":
        out = [{"toolResult": _tool_result(block, at)}]
    else:
        raise _untranslatable(f"{at}.type", f"a {role} {kind!r} block")
    return out + cache_point(block, at)


def _base64(block: dict, at: str, what: str) -> tuple[str, str]:
    source = block.get("source")
    if not (isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str)):
        raise _untranslatable(f"{at}.source", f"{what} that is not base64 data")
    return str(source.get("media_type") or ""), source["data"]


def _image(block: dict, at: str) -> dict:
    media_type, data = _base64(block, at, "an image")
    fmt = _IMAGE_FORMATS.get(media_type.lower())
    if fmt is None:
        raise invalid(f"{at}.source.media_type", "must be image/png, image/jpeg, image/gif or image/webp")
    return {"format": fmt, "source": {"bytes": data}}


def _document(block: dict, at: str) -> dict:
    media_type, data = _base64(block, at, "a document")
    if media_type != "application/pdf":
        raise _untranslatable(f"{at}.source.media_type", "a document that is not a PDF")
    return {"format": "pdf", "name": f"document {at.replace('.', ' ')}"[:200].replace("[", "(").replace("]", ")"),
            "source": {"bytes": data}}


def _tool_result(block: dict, at: str) -> dict:
    if not isinstance(block.get("tool_use_id"), str):
        raise invalid(f"{at}.tool_use_id", "must be a string")
    content = block.get("content")
    parts: list[dict] = []
    if isinstance(content, str):
        parts = [{"text": content}]
    elif isinstance(content, list):
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"text": part["text"]})
            elif kind == "image":
                parts.append({"image": _image(part, f"{at}.content[{k}]")})
            else:
                raise _untranslatable(f"{at}.content[{k}].type", f"a tool result {kind!r} block")
    elif content is not None:
        raise invalid(f"{at}.content", "must be a string or an array of blocks")
    result: dict = {"toolUseId": block["tool_use_id"], "content": parts or [{"text": ""}]}
    if block.get("is_error") is True:
        result["status"] = "error"
    return result


def _tools(tools: object) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools", "must be an array")
    out: list[dict] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid(f"tools[{i}]", "must be a tool with a name")
        if tool.get("defer_loading") is True:
            continue
        if tool.get("type") not in (None, "custom"):
            raise _untranslatable(f"tools[{i}].type", f"the server tool {tool.get('type')!r}")
        spec: dict = {"name": tool["name"],
                      "inputSchema": {"json": tool.get("input_schema") or {"type": "object", "properties": {}}}}
        if tool.get("description"):
            spec["description"] = tool["description"]
        out += [{"toolSpec": spec}, *cache_point(tool, f"tools[{i}]")]
    return out


# --- response
def message_usage(usage: Usage) -> dict:
    """Anthropic's `usage` for Converse's counts (`input_tokens` without the cache)."""
    hour = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    return {"input_tokens": max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens),
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "output_tokens": usage.output_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_write_tokens - hour,
                               "ephemeral_1h_input_tokens": hour}}


def stop_reason(reason: object) -> str:
    return _STOP.get(reason, "end_turn") if isinstance(reason, str) else "end_turn"


def converse_to_message(resp: dict, model: str) -> tuple[dict, Usage]:
    """Converse response -> (Anthropic Message, Usage); reasoning blocks are left out."""
    content = ((resp.get("output") or {}).get("message") or {}).get("content") or []
    blocks: list[dict] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            blocks.append({"type": "text", "text": block["text"]})
        elif isinstance(use := block.get("toolUse"), dict):
            blocks.append({"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name"),
                           "input": use.get("input") if isinstance(use.get("input"), dict) else {}})
    usage = converse_usage(resp.get("usage"))
    return {"id": "", "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop_reason(resp.get("stopReason")), "stop_sequence": None,
            "usage": message_usage(usage)}, usage


class ConverseToMessagesStream:
    """ConverseStream events in (event type, JSON payload), Anthropic Messages events
    `(name, data)` out. Complete (`done`) after the `metadata` event, which carries the usage:
    it becomes `message_delta` (stop reason, usage) and `message_stop`."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._blocks: dict[int, int] = {}  # Converse content block index -> ours
        self._open: int | None = None  # Converse index of the open block
        self._stop: object = None
        self.usage = Usage()
        self.done = False

    def feed(self, event: str, data: dict) -> list[tuple[str, dict]]:
        block = data.get("contentBlockIndex", 0)
        if event == "messageStart":
            return [("message_start", {"type": "message_start", "message": {
                "id": "", "type": "message", "role": "assistant", "model": self._model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": message_usage(Usage())}})]
        if event == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                return self._start(block, {"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name"),
                                           "input": {}})
            return []
        if event == "contentBlockDelta":
            delta = data.get("delta") or {}
            if isinstance(delta.get("text"), str):
                out = [] if block in self._blocks else self._start(block, {"type": "text", "text": ""})
                return [*out, self._delta(block, {"type": "text_delta", "text": delta["text"]})]
            use = delta.get("toolUse")
            if isinstance(use, dict) and block in self._blocks and isinstance(use.get("input"), str):
                return [self._delta(block, {"type": "input_json_delta", "partial_json": use["input"]})]
            return []  # reasoning deltas: thinking was not asked for
        if event == "contentBlockStop":
            return self._close()
        if event == "messageStop":
            self._stop = data.get("stopReason")
            return self._close()
        if event == "metadata":
            self.usage = converse_usage(data.get("usage"))
            self.done = True
            return [*self._close(),
                    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason(self._stop),
                                                                          "stop_sequence": None},
                                       "usage": message_usage(self.usage)}),
                    ("message_stop", {"type": "message_stop"})]
        return []

    def _start(self, block: int, content: dict) -> list[tuple[str, dict]]:
        out = self._close()
        self._blocks[block] = len(self._blocks)
        self._open = block
        return [*out, ("content_block_start", {"type": "content_block_start", "index": self._blocks[block],
                                                "content_block": content})]

    def _delta(self, block: int, delta: dict) -> tuple[str, dict]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._blocks[block], "delta": delta})

    def _close(self) -> list[tuple[str, dict]]:
        if self._open is None:
            return []
        index, self._open = self._blocks[self._open], None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]
