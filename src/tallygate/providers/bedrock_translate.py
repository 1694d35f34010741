"""Pure translation between OpenAI Chat Completions and AWS Bedrock's Converse API (no I/O).

Request: system/developer messages -> `system`; user/assistant/tool turns -> `messages` (tool
results are `toolResult` blocks in a user turn); text, base64 image data URLs -> `image` blocks;
function tools -> `toolConfig.tools[].toolSpec`; tool_choice auto/required/function ->
`toolChoice` (`none` sends no tools); max(_completion)_tokens, temperature, top_p, stop ->
`inferenceConfig`; a content part (system ones too) with Anthropic's `cache_control` is followed
by a Converse `cachePoint` block (prompt caching); reasoning_effort on a Claude model ->
`additionalModelRequestFields.thinking` (as Anthropic's own API takes it, `claude_thinking`);
user / safety_identifier and metadata -> `requestMetadata` (the invocation logs' filter keys).
Refused with a 400 naming the field: n > 1, logprobs, logit_bias, audio, legacy functions,
response_format other than text, image URLs that are not data URLs, reasoning_effort on other
models, and every other field the client sets (seed, service_tier, prediction,
web_search_options, penalties ...: `chat_fields.refuse_unread`).

Usage: Converse's `inputTokens` excludes the cache reads and writes it reports beside it
(`cacheReadInputTokens`, `cacheWriteInputTokens`); the prompt is their sum.
"""

from __future__ import annotations

import orjson

from tallygate.errors import InvalidRequest, UpstreamHTTPError
from tallygate.providers.anthropic_translate import claude_thinking
from tallygate.providers.chat_fields import chat_cap, refuse_unread
from tallygate.providers.chat_turns import chat_turns, data_url, invalid, tool_arguments
from tallygate.types import Usage, tokens

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
           "model_context_window_exceeded": "length"}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}
_REFUSED = ("logprobs", "top_logprobs", "logit_bias", "functions", "function_call", "audio")
# AWS error type -> the status the gateway treats it as (model-side failures are not the caller's).
_ERROR_STATUS = {"ThrottlingException": 429, "ModelNotReadyException": 503, "ServiceQuotaExceededException": 429,
                 "ModelTimeoutException": 504, "ModelErrorException": 502, "ModelStreamErrorException": 502,
                 "InternalServerException": 500, "ServiceUnavailableException": 503,
                 "AccessDeniedException": 403, "UnrecognizedClientException": 403,
                 "ExpiredTokenException": 403, "ValidationException": 400, "ResourceNotFoundException": 404}
_MAX_MESSAGE = 300
_MODEL_MISSING = ("model identifier is invalid", "with on-demand throughput isn")  # ValidationException messages


def cache_point(block: dict, param: str) -> list[dict]:
    """The Converse cache point a block's Anthropic `cache_control` asks for, to follow it (none
    without one); `ttl: "1h"` is passed on, Bedrock's default is 5 minutes."""
    mark = block.get("cache_control")
    if mark is None:
        return []
    if not isinstance(mark, dict) or mark.get("type") != "ephemeral" or mark.get("ttl", "5m") not in ("5m", "1h"):
        raise InvalidRequest(f'{param}.cache_control must be {{"type": "ephemeral"}} with an optional ttl '
                             '"5m" or "1h"', param=f"{param}.cache_control")
    return [{"cachePoint": {"type": "default", "ttl": "1h"} if mark.get("ttl") == "1h" else {"type": "default"}}]


_invalid = invalid


# --- request
def to_converse(body: dict) -> dict:
    """OpenAI chat request -> Converse request (the model goes in the URL)."""
    for param in _REFUSED:
        if body.get(param):
            raise InvalidRequest(f"{param} is not supported for Bedrock models", param=param)
    if body.get("n") not in (None, 1):
        raise InvalidRequest("n > 1 is not supported for Bedrock models", param="n")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise InvalidRequest("response_format other than text is not supported for Bedrock models",
                             param="response_format")
    system, messages = _messages(body.get("messages"))
    out: dict = {"messages": messages}
    if system:
        out["system"] = [{"text": system}]
        out["system"] += _system_cache_point(body.get("messages"))
    config: dict = {}
    limit = chat_cap(body)
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _invalid("max_tokens", "must be a positive integer")
        config["maxTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP")):
        value = body.get(ours)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _invalid(ours, "must be a number")
            config[theirs] = value
    if (stop := body.get("stop")) is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("stop", "must be a string or an array of strings")
        config["stopSequences"] = stops
    if config:
        out["inferenceConfig"] = config
    choice = body.get("tool_choice")
    if body.get("tools") and choice != "none":
        out["toolConfig"] = {"tools": _tool_specs(body["tools"])}
        if (converse_choice := _tool_choice(choice)) is not None:
            out["toolConfig"]["toolChoice"] = converse_choice
    if (effort := body.get("reasoning_effort")) is not None:
        if "anthropic.claude" not in str(body.get("model", "")):
            raise _invalid("reasoning_effort", "is supported for Claude models only on Bedrock")
        out["additionalModelRequestFields"] = {"thinking": claude_thinking(effort, config.get("maxTokens", 4096))}
    if metadata := _request_metadata(body):
        out["requestMetadata"] = metadata
    refuse_unread(body, _READ, "Bedrock")
    return out


_READ = frozenset({*_REFUSED, "n", "response_format", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                   "stop", "tools", "tool_choice", "reasoning_effort", "user", "safety_identifier", "metadata"})


def _request_metadata(body: dict) -> dict[str, str]:
    """Converse's `requestMetadata` (string keys and values) from chat's `metadata` and `user`
    (or `safety_identifier`, under the key `user`)."""
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise _invalid("metadata", "must be an object of strings")
    out = dict(metadata or {})
    if (user := body.get("user") or body.get("safety_identifier")) is not None:
        if not isinstance(user, str):
            raise _invalid("user", "must be a string")
        out["user"] = user
    return out


def _system_cache_point(messages: object) -> list[dict]:
    """One cache point after the system text when a system or developer message's part carries
    `cache_control` (with the longest TTL asked for)."""
    points = [point for i, m in enumerate(messages if isinstance(messages, list) else ())
              if isinstance(m, dict) and m.get("role") in ("system", "developer") and isinstance(m.get("content"), list)
              for j, p in enumerate(m["content"]) if isinstance(p, dict)
              for point in cache_point(p, f"messages[{i}].content[{j}]")]
    hour = [p for p in points if p["cachePoint"].get("ttl") == "1h"]
    return (hour or points)[:1]


def _messages(messages: object) -> tuple[str, list[dict]]:
    return chat_turns(
        messages, model_role="assistant", key="content",
        system=lambda msg, at: "".join(b.get("text", "") for b in _blocks(msg.get("content"), f"{at}.content",
                                                                           images=False)),
        user=lambda msg, at: _blocks(msg.get("content"), f"{at}.content", images=True),
        assistant=_assistant_blocks,
        tool=lambda msg, at: [_tool_result(msg, at)])


def _blocks(content: object, at: str, *, images: bool) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(at, "must be a string or an array of content parts")
    blocks: list[dict] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal") and isinstance(part.get(kind), str):
            blocks.append({"text": part[kind]})
        elif kind == "image_url" and images:
            url = part.get("image_url")
            blocks.append({"image": _image(url.get("url") if isinstance(url, dict) else url,
                                           f"{at}[{j}].image_url.url")})
        else:
            raise _invalid(f"{at}[{j}].type", f"{kind!r} is not supported here for Bedrock models")
        blocks += cache_point(part, f"{at}[{j}]")  # Anthropic's prompt-cache mark -> a Converse cache point
    return blocks


def _image(url: object, param: str) -> dict:
    parsed = data_url(url)
    fmt = _IMAGE_FORMATS.get(parsed[0]) if parsed else None
    if parsed is None or fmt is None:
        raise _invalid(param, "must be a base64 data URL of a png, jpeg, gif or webp image")
    return {"format": fmt, "source": {"bytes": parsed[1]}}


def _assistant_blocks(msg: dict, at: str) -> list[dict]:
    blocks = _blocks(msg.get("content"), f"{at}.content", images=False)
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _invalid(f"{at}.tool_calls", "must be an array")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
            raise _invalid(f"{at}.tool_calls[{j}]", "must have an id and a function name")
        args = tool_arguments(fn.get("arguments"), f"{at}.tool_calls[{j}].function.arguments")
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": fn["name"], "input": args}})
    return blocks


def _tool_result(msg: dict, at: str) -> dict:
    tool_use_id = msg.get("tool_call_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise _invalid(f"{at}.tool_call_id", "must be a string")
    text = "".join(b.get("text", "") for b in _blocks(msg.get("content"), f"{at}.content", images=False))
    return {"toolResult": {"toolUseId": tool_use_id, "content": [{"text": text}]}}


def _tool_specs(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(f"tools[{i}]", "must be a function tool with a name")
        spec = {"name": fn["name"], "inputSchema": {"json": fn.get("parameters") or {"type": "object"}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        out.append({"toolSpec": spec})
    return out


def _tool_choice(choice: object) -> dict | None:
    if choice in (None, "auto"):
        return None
    if choice == "required":
        return {"any": {}}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"tool": {"name": fn["name"]}}
    raise _invalid("tool_choice", 'must be "auto", "none", "required" or a function choice')


# --- response
def converse_usage(usage: object) -> Usage:
    """Converse's `usage`: `inputTokens` excludes the cache reads and writes; the writes kept an
    hour are `cacheDetails`' `ttl: "1h"` entries (priced apart)."""
    usage = usage if isinstance(usage, dict) else {}
    read, write = tokens(usage.get("cacheReadInputTokens")), tokens(usage.get("cacheWriteInputTokens"))
    details = usage.get("cacheDetails")
    hour = sum(tokens(d.get("inputTokens")) for d in details if isinstance(d, dict) and d.get("ttl") == "1h") \
        if isinstance(details, list) else 0
    return Usage(input_tokens=tokens(usage.get("inputTokens")) + read + write,
                 output_tokens=tokens(usage.get("outputTokens")), cached_tokens=read, cache_write_tokens=write,
                 cache_write_1h_tokens=min(hour, write))


def finish_reason(stop_reason: object) -> str:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def from_converse(resp: dict, request_id: str, created: int, model: str) -> tuple[dict, Usage]:
    """Converse response -> (OpenAI `chat.completion`, Usage)."""
    content = ((resp.get("output") or {}).get("message") or {}).get("content") or []
    texts, calls = [], []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(use := block.get("toolUse"), dict):
            calls.append({"id": use.get("toolUseId"), "type": "function", "function": {
                "name": use.get("name"), "arguments": orjson.dumps(use.get("input") or {}).decode()}})
    text = "".join(texts)
    message: dict = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = converse_usage(resp.get("usage"))
    return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(resp.get("stopReason"))}],
            "usage": usage.to_openai()}, usage


class ConverseStreamTranslator:
    """ConverseStream events in (event type, JSON payload), OpenAI chunks out. Complete once
    the `metadata` event (with usage) has come."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._head = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        self.usage = Usage()
        self.done = False

    def feed(self, event: str, data: dict) -> list[dict]:
        if event == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            index = self._tools[data.get("contentBlockIndex", 0)] = len(self._tools)
            return [self._chunk({"tool_calls": [{"index": index, "id": use.get("toolUseId"), "type": "function",
                                                  "function": {"name": use.get("name"), "arguments": ""}}]})]
        if event == "contentBlockDelta":
            delta = data.get("delta") or {}
            if isinstance(delta.get("text"), str) and delta["text"]:
                return [self._chunk({"content": delta["text"]})]
            use = delta.get("toolUse")
            block = data.get("contentBlockIndex", 0)
            if isinstance(use, dict) and block in self._tools and use.get("input"):
                return [self._chunk({"tool_calls": [{"index": self._tools[block],
                                                      "function": {"arguments": use["input"]}}]})]
            return []
        if event == "messageStop":
            return [self._chunk({}, finish_reason(data.get("stopReason")))]
        if event == "metadata":
            self.usage = converse_usage(data.get("usage"))
            self.done = True
            return [{**self._head, "choices": [], "usage": self.usage.to_openai()}]
        return []  # contentBlockStop, reasoning deltas, events AWS may add

    def _chunk(self, delta: dict, finish: str | None = None) -> dict:
        return {**self._head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


# --- errors
def bedrock_error(provider: str, error_type: str, status: int, body: bytes,
                  retry_after: float | None = None) -> UpstreamHTTPError:
    """An AWS error (`x-amzn-ErrorType` or an exception event's `:exception-type`, a JSON
    `{"message"}` body) as UpstreamHTTPError with the status the condition deserves.
    The model missing here is a 404 marked `model_missing`: ResourceNotFoundException, and the
    ValidationExceptions AWS answers for a model id the region does not offer ("The provided
    model identifier is invalid.") or offers through an inference profile only ("... with
    on-demand throughput isn't supported")."""
    kind = error_type.split(":", 1)[0]
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    message = (parsed.get("message") or parsed.get("Message")) if isinstance(parsed, dict) else None
    status = _ERROR_STATUS.get(kind, status)
    missing = kind == "ResourceNotFoundException" or (
        kind == "ValidationException" and isinstance(message, str) and any(m in message for m in _MODEL_MISSING))
    return UpstreamHTTPError(404 if missing else status, f"provider {provider!r} returned {kind or status}",
                             detail=message[:_MAX_MESSAGE] if isinstance(message, str) else None,
                             retry_after=retry_after, model_missing=missing)
