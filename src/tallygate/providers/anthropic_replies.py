"""Anthropic Messages replies read as OpenAI Chat Completions (no I/O): `from_anthropic` (a
Message), `AnthropicStreamTranslator` (its stream's events), `anthropic_usage`, and the errors
(`anthropic_error` for an HTTP answer, `stream_error` for an in-band `error` event). The requests
are built by `providers/anthropic_translate.py`."""

from __future__ import annotations

import orjson

from tallygate.errors import UpstreamHTTPError, UpstreamProtocolError
from tallygate.types import Reported, Usage, tokens

_FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
    "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "refusal": "content_filter",
}
_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "overloaded_error": 503, "timeout_error": 504,
}
_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_MAX_MESSAGE = 300


def from_anthropic(resp: dict, request_id: str, created: int, model: str) -> tuple[dict, Usage]:
    """Anthropic Message -> (OpenAI `chat.completion`, normalised Usage)."""
    content = resp.get("content") if isinstance(resp, dict) else None
    if not isinstance(content, list):
        raise UpstreamProtocolError("anthropic returned a message without content")
    texts: list[str] = []
    calls: list[dict] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    text = "".join(texts)
    message: dict = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = anthropic_usage(resp.get("usage"))
    completion = {
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _finish_reason(resp.get("stop_reason"))}],
        "usage": usage.to_openai(),
    }
    return completion, usage


def anthropic_usage(usage: dict | None) -> Usage:
    """Anthropic `usage` in OpenAI's meaning: cache reads and writes count as prompt tokens;
    the writes with the 1-hour TTL (`cache_creation.ephemeral_1h_input_tokens`) are kept apart,
    as they are priced apart; web searches (`server_tool_use.web_search_requests`) are counted,
    as they are billed per search."""
    usage = usage if isinstance(usage, dict) else {}
    fresh, output, read, write = (tokens(usage.get(k)) for k in _USAGE_KEYS)
    ttl = usage.get("cache_creation")
    hour = min(write, tokens(ttl.get("ephemeral_1h_input_tokens"))) if isinstance(ttl, dict) else 0
    server = usage.get("server_tool_use")
    searches = tokens(server.get("web_search_requests")) if isinstance(server, dict) else 0
    return Usage(input_tokens=fresh + read + write, output_tokens=output,
                 cached_tokens=read, cache_write_tokens=write, cache_write_1h_tokens=hour,
                 web_searches=searches)


def _finish_reason(stop_reason: object) -> str:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


# --- stream
class AnthropicStreamTranslator:
    """Anthropic SSE events in, OpenAI `chat.completion.chunk` dicts out; one `feed` per event."""

    def __init__(self, request_id: str, created: int, model: str, reported: Reported | None = None) -> None:
        self._head = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                      "model": model}
        self._reported = reported  # given the prompt's counts of `message_start`
        self._usage: dict[str, object] = {}
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._done = False

    @property
    def usage(self) -> Usage:
        return anthropic_usage(self._usage)

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, event: str, data: dict) -> list[dict]:
        """Chunks to emit for one event; raises UpstreamHTTPError on an `error` event."""
        kind = event or data.get("type")
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta") or {})
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block") or {})
        if kind == "message_start":
            self._absorb((data.get("message") or {}).get("usage"))
            if self._reported is not None:
                self._reported.prompt = self.usage.prompt()
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self._absorb(data.get("usage"))
            return [self._chunk({}, _finish_reason((data.get("delta") or {}).get("stop_reason")))]
        if kind == "message_stop":
            self._done = True
            return [{**self._head, "choices": [], "usage": self.usage.to_openai()}]
        if kind == "error":
            raise stream_error(data)
        return []  # ping, content_block_stop, and event types Anthropic may add later

    def _block_start(self, index: object, block: dict) -> list[dict]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use" or not isinstance(index, int):
            return []
        self._tools[index] = len(self._tools)
        call = {"index": self._tools[index], "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, index: object, delta: dict) -> list[dict]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tools:
            call = {"index": self._tools[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signature and citation deltas, server-tool input

    def _absorb(self, usage: dict | None) -> None:
        """Keep the latest count of each usage field (message_delta counts are cumulative)."""
        for key in _USAGE_KEYS:
            value = (usage or {}).get(key)
            if isinstance(value, int):
                self._usage[key] = value
        if isinstance(ttl := (usage or {}).get("cache_creation"), dict):
            self._usage["cache_creation"] = ttl

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return {**self._head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                           "finish_reason": finish_reason}]}


# --- errors
def anthropic_error(status: int, body: bytes) -> UpstreamHTTPError:
    """An Anthropic error response as UpstreamHTTPError (529 overloaded counts as 503). A 404
    `not_found_error` "model: ..." (or, on Vertex, Google's NOT_FOUND publisher model) is the
    target lacking the model."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    detail = _error_detail(error)
    kind = (error.get("type"), error.get("status")) if isinstance(error, dict) else ()
    missing = ("not_found_error" in kind or "NOT_FOUND" in kind) and detail is not None and "model" in detail.lower()
    return UpstreamHTTPError(503 if status == 529 else status, f"anthropic returned HTTP {status}",
                             detail=detail, model_missing=missing)


def stream_error(data: dict) -> UpstreamHTTPError:
    """An Anthropic stream's `error` event as UpstreamHTTPError (its status from the error type)."""
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    status = _ERROR_STATUS.get(str(error.get("type")), 500)
    return UpstreamHTTPError(status, "anthropic stream failed", detail=_error_detail(error))


def _error_detail(error: object) -> str | None:
    message = error.get("message") if isinstance(error, dict) else None
    return message[:_MAX_MESSAGE] if isinstance(message, str) and message.strip() else None
