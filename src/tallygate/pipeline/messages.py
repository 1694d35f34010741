"""Anthropic's Messages API relayed: `/v1/messages` and `/v1/messages/count_tokens`.

To a provider that speaks it natively (`providers.base.NativeMessages`) the request is relayed
as it is (every block type, `anthropic-version` / `anthropic-beta` passed on,
stream events relayed as they came, only `message_start` and `message_delta` parsed); to any
other provider it is translated to chat completions and back (`providers.messages_translate`).
Errors are Anthropic-shaped: `{"type": "error", "error": {"type", "message"}}`, plus the
gateway's error `code` (`budget_exceeded`, `upstream_timeout` ...) when it has one.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import orjson

from tallygate.core.money import usd_json
from tallygate.errors import GatewayError, InvalidRequest
from tallygate.pipeline.budget import body_size as _size
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.relay import Codec, meter_answer, relay_stream, respond_json, sse, text_chars
from tallygate.pipeline.routing import Plan, execute
from tallygate.pipeline.tool_fees import anthropic_container
from tallygate.pipeline.validate import check_numbers
from tallygate.pipeline.wire import JSON_HEADERS, Scope, Send, headers_of, send_bytes
from tallygate.providers.anthropic_replies import anthropic_usage
from tallygate.providers.messages_translate import (
    ChatToMessagesStream,
    chat_to_message,
    messages_to_chat,
    param_origins,
)
from tallygate.types import Reported, Usage

_PASSED_HEADERS = (b"anthropic-version", b"anthropic-beta")
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 413: "request_too_large",
          429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


def anthropic_type(status: int) -> str:
    """Anthropic's error type for a status."""
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error_body(err: GatewayError) -> bytes:
    """Anthropic's error shape; the gateway's `code` (as on the OpenAI routes and in the ledger
    record) is added when the error has one, the one field Anthropic's errors lack."""
    error = {"type": anthropic_type(err.status), "message": err.message}
    if err.code is not None:
        error["code"] = err.code
    return orjson.dumps({"type": "error", "error": error})


async def send_anthropic_error(send: Send, err: GatewayError, request_id: str) -> None:
    await send_bytes(send, err.status, anthropic_error_body(err),
                     [*JSON_HEADERS, (b"x-request-id", request_id.encode()), *err.headers()])


def check_messages(body: dict, count_only: bool = False) -> bool:
    """The fields checked here (the rest, each message's role and content included, is the
    provider's, or the translation's); returns whether to stream."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages")
    max_tokens = body.get("max_tokens")
    if not count_only and (type(max_tokens) is not int or max_tokens < 1):
        raise InvalidRequest("max_tokens must be a positive integer", param="max_tokens")
    check_numbers(body, {"temperature": (0.0, 1.0), "top_p": (0.0, 1.0)})  # Anthropic's ranges
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    return bool(stream)


class MessagesRelay:
    """`/v1/messages` and `/v1/messages/count_tokens`: native where the target speaks Messages,
    translated to chat completions elsewhere."""

    def __init__(self, rates: Callable[[Route], Rate]) -> None:
        self._rate = rates

    async def messages(self, call: Call, plan: Plan, body: dict, send: Send, headers: dict[str, str]) -> None:
        model = body["model"]
        if check_messages(body):
            return await relay_stream(call, plan, lambda route: _open(call, route, body, headers),
                                      lambda route: self._codec(call, route, body, model), send)

        async def attempt(route: Route) -> tuple[dict, Usage]:
            native = route.native.messages
            if native is not None:
                return await native.messages({**body, "model": route.upstream_model}, headers)
            origins = param_origins()
            chat = messages_to_chat(body, route.upstream_model, origins)
            with origins.naming():
                data, usage = await route.provider.chat(chat)
            return chat_to_message(data, usage, call.id, model), usage

        data, usage = await execute(call, plan, attempt)
        assert call.route is not None
        usage.code_sessions = anthropic_container(data, body)  # a code execution container ran
        cost = meter_answer(call, usage, self._rate(call.route), body, data)
        data["id"] = call.id
        if not isinstance(data.get("usage"), dict):
            data["usage"] = {}
        data["usage"]["cost"] = usd_json(cost)
        await respond_json(call, data, send)

    async def count_tokens(self, call: Call, plan: Plan, body: dict, send: Send, headers: dict[str, str]) -> None:
        check_messages(body, count_only=True)

        def attempt(route: Route) -> Awaitable[dict]:
            native = route.native.count_tokens
            if native is not None:
                return native.count_tokens({**body, "model": route.upstream_model}, headers)
            messages_to_chat(body, route.upstream_model)  # refuses what /v1/messages would refuse
            return _estimate_count(body)

        await respond_json(call, await execute(call, plan, attempt), send)

    def _codec(self, call: Call, route: Route, body: dict, model: str) -> Codec:
        rate = self._rate(route)
        if route.native.messages is not None:
            return NativeMessagesCodec(call, rate, body)
        return TranslatedMessagesCodec(call, rate, body, model)


def client_headers(scope: Scope) -> dict[str, str]:
    """The client's `anthropic-version` / `anthropic-beta`, passed on to a native provider."""
    return {k.decode(): v for k, v in headers_of(scope, *_PASSED_HEADERS).items()}


def _open(call: Call, route: Route, body: dict, headers: dict[str, str]) -> AsyncGenerator[list[Any], None]:
    call.reported = Reported()  # this attempt's early prompt counts, none of an earlier one's
    native = route.native.messages
    if native is not None:
        return native.messages_stream({**body, "model": route.upstream_model}, headers)
    origins = param_origins()
    chat = messages_to_chat(body, route.upstream_model, origins)
    return origins.stream(route.provider.chat_stream(chat, call.reported))


async def _estimate_count(body: dict) -> dict:
    """`input_tokens` for a model without a counting endpoint: about four characters a token."""
    chars, images = _size({k: body.get(k) for k in ("system", "messages", "tools")})
    return {"input_tokens": math.ceil(chars / 4) + images * 1600}


class _MessagesCodecBase:
    def __init__(self, call: Call, rate: Rate, body: dict) -> None:
        self._call, self._rate, self._body = call, rate, body
        self.done = False

    def error(self, err: GatewayError) -> bytes:
        return sse(b"error", anthropic_error_body(err))

    def _estimate(self, known: Usage) -> None:
        """Price a stream cut short: what the provider reported so far (`known`, else the prompt's
        counts a translated stream reported early), else the whole request's size (its system
        prompt and tools too, an image at IMAGE_TOKENS, as `relay.meter_answer` prices an answer
        without usage), and the text relayed for the output."""
        call = self._call
        if not (call.partial or call.pricing_source is None):
            return
        prompt = known.prompt() if known.input_tokens else call.prompt_estimate(self._body)
        prompt.output_tokens = max(known.output_tokens, call.output_estimate(call.streamed_chars))
        prompt.web_searches, prompt.code_sessions = known.web_searches, known.code_sessions
        call.meter(prompt, self._rate)
        call.mark_estimated()


class NativeMessagesCodec(_MessagesCodecBase):
    """Anthropic's events relayed as they came; `message_start` re-ided, `message_delta` costed."""

    def __init__(self, call: Call, rate: Rate, body: dict) -> None:
        super().__init__(call, rate, body)
        self._usage: dict[str, object] = {}
        self._containers = 0  # code execution ran in a container (message_delta's `delta.container`)
        self._metered = False  # message_delta came with its usage: the cost the client is told

    def encode(self, batch: list[tuple[str | None, bytes]]) -> bytes:
        out = []
        for name, data in batch:
            if name == "content_block_delta":
                self._call.streamed_chars += text_chars(data)
            elif name == "message_start":
                event = orjson.loads(data)
                message = event.get("message") or {}
                message["id"] = self._call.id
                self._absorb(message.get("usage"))
                data = orjson.dumps(event)
            elif name == "message_delta":
                event = orjson.loads(data)
                usage = event.get("usage")
                self._absorb(usage)
                self._containers = self._containers or anthropic_container(event.get("delta"), self._body)
                cost = self._call.meter(self._known(), self._rate)
                if isinstance(usage, dict):
                    usage["cost"] = usd_json(cost)
                    self._metered = True
                data = orjson.dumps(event)
            elif name == "message_stop":
                self.done = True
            out.append(sse((name or "message").encode(), data))
        return b"".join(out)

    def _absorb(self, usage: object) -> None:
        """The latest value of each count (message_delta's are cumulative), the cache writes'
        split by TTL (`cache_creation`) and the server tools' uses (`server_tool_use`) included."""
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items()
                                if type(v) is int or k in ("cache_creation", "server_tool_use")})

    def _known(self) -> Usage:
        usage = anthropic_usage(self._usage)
        usage.code_sessions = self._containers
        return usage

    def end(self) -> bytes:
        return b""

    def settle(self) -> None:
        """An estimate for a stream cut short, unless it was cut after `message_delta` told the
        client its cost: the record keeps that."""
        if not self._metered:
            self._estimate(self._known())


class TranslatedMessagesCodec(_MessagesCodecBase):
    """Chat chunks from an OpenAI-compatible provider, as Anthropic's events."""

    def __init__(self, call: Call, rate: Rate, body: dict, model: str) -> None:
        super().__init__(call, rate, body)
        self._events = ChatToMessagesStream(call.id, model)
        self._usage: Usage | None = None

    def encode(self, batch: list[dict]) -> bytes:
        out = []
        for chunk in batch:
            if chunk.get("usage"):
                self._usage = Usage.from_openai(chunk["usage"])
            for name, event in self._events.feed(chunk):
                if name == "content_block_delta":
                    delta = event["delta"]
                    self._call.streamed_chars += len(delta.get("text") or delta.get("partial_json") or "")
                out.append(sse(name.encode(), orjson.dumps(event)))
        return b"".join(out)

    def end(self) -> bytes:
        if self._usage is None:  # a server that ignores include_usage: estimate
            self._estimate(Usage())
        else:
            self._call.meter(self._usage, self._rate)
        cost = self._call.cost_pico
        out = []
        for name, event in self._events.finish(self._call.usage):
            if name == "message_delta":
                event["usage"]["cost"] = usd_json(cost)
            out.append(sse(name.encode(), orjson.dumps(event)))
        return b"".join(out)

    def settle(self) -> None:
        self._estimate(self._usage or Usage())
