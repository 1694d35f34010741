"""OpenAI's Responses API relayed: `/v1/responses`.

To a provider that speaks it natively (`providers.base.NativeResponses`) the request is relayed
as it is (stored responses and `previous_response_id` work as they do upstream, so the upstream
response id is kept; stream events are relayed as they came, only the final
`response.completed` / `incomplete` / `failed` event parsed to meter it and add `usage.cost`).
To any other provider it is translated to chat completions where it can be
(`providers.responses_translate`), with a 400 naming what cannot; nothing is stored then, and
the response id is the gateway's request id. Errors are OpenAI-shaped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson

from tallygate.core.money import usd_json
from tallygate.errors import GatewayError, InvalidRequest
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.relay import Codec, meter_answer, relay_stream, respond_json, sse, text_chars
from tallygate.pipeline.routing import Plan, execute
from tallygate.pipeline.tool_fees import responses_tool_use
from tallygate.pipeline.validate import check_numbers
from tallygate.pipeline.wire import Send
from tallygate.providers.responses_translate import (
    ChatToResponsesStream,
    chat_to_response,
    param_origins,
    responses_to_chat,
    responses_usage,
    to_responses_usage,
)
from tallygate.types import Reported, Usage

_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def check_responses(body: dict) -> bool:
    """The fields checked here (the rest is the provider's); returns whether to stream."""
    value = body.get("input")
    if not (isinstance(value, str) or (isinstance(value, list) and value)):
        raise InvalidRequest("input must be a string or a non-empty array of input items", param="input")
    limit = body.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidRequest("max_output_tokens must be a positive integer", param="max_output_tokens")
    check_numbers(body, {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)})  # OpenAI's ranges
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    return bool(stream)


class ResponsesRelay:
    """`/v1/responses`: native where the target speaks Responses, translated to chat elsewhere."""

    def __init__(self, rates: Callable[[Route], Rate]) -> None:
        self._rate = rates

    async def responses(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        model = body["model"]
        if check_responses(body):
            return await relay_stream(call, plan, lambda route: _open(call, route, body),
                                      lambda route: self._codec(call, route, body, model), send)

        async def attempt(route: Route) -> tuple[dict, Usage]:
            native = route.native.responses
            if native is not None:
                return await native.responses({**body, "model": route.upstream_model})
            origins = param_origins()
            chat = responses_to_chat(body, route.upstream_model, origins)
            with origins.naming():
                data, usage = await route.provider.chat(chat)
            return chat_to_response(data, usage, call.id, model, body), usage

        data, usage = await execute(call, plan, attempt)
        assert call.route is not None
        usage.web_searches, usage.file_searches, usage.code_sessions = responses_tool_use(data, body)
        cost = meter_answer(call, usage, self._rate(call.route), body, data)
        if not isinstance(data.get("usage"), dict):
            data["usage"] = to_responses_usage(usage)
        data["usage"]["cost"] = usd_json(cost)
        await respond_json(call, data, send)

    def _codec(self, call: Call, route: Route, body: dict, model: str) -> Codec:
        rate = self._rate(route)
        if route.native.responses is not None:
            return NativeResponsesCodec(call, rate, body)
        return TranslatedResponsesCodec(call, rate, body, model)


def _open(call: Call, route: Route, body: dict) -> AsyncGenerator[list[Any], None]:
    call.reported = Reported()  # this attempt's early prompt counts, none of an earlier one's
    native = route.native.responses
    if native is not None:
        return native.responses_stream({**body, "model": route.upstream_model})
    origins = param_origins()
    chat = responses_to_chat(body, route.upstream_model, origins)
    return origins.stream(route.provider.chat_stream(chat, call.reported))


class _ResponsesCodecBase:
    def __init__(self, call: Call, rate: Rate, body: dict) -> None:
        self._call, self._rate, self._body = call, rate, body
        self._seq = 0
        self._items: list[object] = []  # provider-run tool calls begun, for a stream cut short
        self.done = False

    def error(self, err: GatewayError) -> bytes:
        event = {"type": "error", "code": err.code or err.type, "message": err.message, "param": err.param,
                 "sequence_number": self._seq}
        return sse(b"error", orjson.dumps(event))

    def _estimate(self) -> None:
        """Price a stream cut short: the input as the provider reported it at the stream's start
        (a translated stream's `call.reported`), else by the whole request's size (its
        instructions, input and tools, as `relay.meter_answer` prices an answer without usage),
        the output by the text relayed."""
        call = self._call
        if call.partial or call.pricing_source is None:
            usage = call.prompt_estimate(self._body)
            usage.output_tokens = call.output_estimate(call.streamed_chars)
            usage.web_searches, usage.file_searches, usage.code_sessions = responses_tool_use(
                {"output": self._items}, self._body)
            call.meter(usage, self._rate)
            call.mark_estimated()


class NativeResponsesCodec(_ResponsesCodecBase):
    """OpenAI's events relayed as they came; the final one metered and given `usage.cost`."""

    def encode(self, batch: list[tuple[str | None, bytes]]) -> bytes:
        out = []
        for name, data in batch:
            self._seq += 1
            if name in _FINAL:
                self.done = True
                event = orjson.loads(data)
                response = event.get("response") or {}
                usage = response.get("usage")
                if isinstance(usage, dict):
                    known = responses_usage(usage)
                    known.web_searches, known.file_searches, known.code_sessions = responses_tool_use(
                        response, self._body)
                    usage["cost"] = usd_json(self._call.meter(known, self._rate))
                    data = orjson.dumps(event)
            elif name == "response.output_text.delta" or name == "response.function_call_arguments.delta":
                self._call.streamed_chars += text_chars(data)
            elif name == "response.output_item.added" and b'_call"' in data:
                item = orjson.loads(data).get("item")
                if isinstance(item, dict) and item.get("type") != "function_call":
                    self._items.append(item)
            out.append(sse((name or "message").encode(), data))
        return b"".join(out)

    def end(self) -> bytes:
        return b""

    def settle(self) -> None:
        self._estimate()


class TranslatedResponsesCodec(_ResponsesCodecBase):
    """Chat chunks from another provider, as the Responses API's typed events."""

    def __init__(self, call: Call, rate: Rate, body: dict, model: str) -> None:
        super().__init__(call, rate, body)
        self._events = ChatToResponsesStream(call.id, model, body)
        self._usage: Usage | None = None

    def _dump(self, events: list[tuple[str, dict]]) -> list[bytes]:
        self._seq += len(events)
        return [sse(name.encode(), orjson.dumps(event)) for name, event in events]

    def encode(self, batch: list[dict]) -> bytes:
        out = []
        for chunk in batch:
            if chunk.get("usage"):
                self._usage = Usage.from_openai(chunk["usage"])
            events = self._events.feed(chunk)
            for name, event in events:
                if name.endswith(".delta"):
                    self._call.streamed_chars += len(event.get("delta") or "")
            out += self._dump(events)
        return b"".join(out)

    def end(self) -> bytes:
        if self._usage is None:  # a server that ignores include_usage: estimate
            self._estimate()
        else:
            self._call.meter(self._usage, self._rate)
        events = self._events.finish(self._call.usage)
        events[-1][1]["response"]["usage"]["cost"] = usd_json(self._call.cost_pico)
        return b"".join(self._dump(events))

    def settle(self) -> None:
        self._estimate()
