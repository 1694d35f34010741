"""Chat completions and embeddings, relayed: `ChatRelay`, and `ChatCodec` for streams.

A chat stream is relayed touching only the bytes that change.

Each upstream chunk arrives as its JSON bytes. Nearly all of them only need their `id` replaced
by the gateway's request id. When every chunk of a batch starts with the same `{"id":"<id>"`,
as OpenAI's and every compatible server's do, the batch is framed with one join and re-ided with
one replace, whatever its length. Only a chunk that carries `usage` (the last) is parsed,
metered and re-serialised with `usage.cost`; when the client did not ask for usage, the
`"usage":null` that `include_usage` adds to every chunk is cut out and the usage chunk dropped.
Anything unusual (another key order, spaces) takes the parse-and-serialise path, so the bytes
the client receives are those `orjson` would write for the same chunk.

For estimates of a stream cut short, each text-bearing delta counts as one token (four
characters), which is how OpenAI and compatible servers stream; a batch's text is counted only
when the next batch comes or an estimate is made, so the batch that carries the provider's usage
(which makes an estimate moot) is never scanned for it; a stream translated from another
API (Gemini, Bedrock, Anthropic: many tokens a chunk) counts its text, four characters a token.
The prompt is what the provider reported at the stream's start where it did (Anthropic's
`message_start`, Gemini's first `usageMetadata`: `Call.reported`), else estimated by its size.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import orjson

from tallygate.core.money import usd_json
from tallygate.errors import GatewayError, InvalidRequest
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.relay import meter_answer, relay_stream, respond_json, text_chars
from tallygate.pipeline.routing import Plan, execute
from tallygate.pipeline.tool_fees import chat_searches
from tallygate.pipeline.validate import check_chat, check_embeddings
from tallygate.pipeline.wire import Send
from tallygate.types import Reported, Usage

Rates = Callable[[Route], Rate]

_ID = b'{"id":"'
_USAGE = b'"usage":'
_NULL = b'"usage":null'
_NULL_USAGE = b',"usage":null'
_NOT_NULL = re.compile(rb'"usage":(?!null)')  # a usage that is not null
_TEXT, _EMPTY = b'"content":"', b'"content":""'
_ARGS, _NO_ARGS = b'"arguments":"', b'"arguments":""'


def deltas(data: bytes) -> int:
    """Text and tool-argument deltas with something in them, in one chunk or a batch."""
    return (data.count(_TEXT) - data.count(_EMPTY)) + (data.count(_ARGS) - data.count(_NO_ARGS))


class ChatCodec:
    """Encodes batches of chat chunk bytes for the client; meters the usage chunk."""

    def __init__(self, call: Call, rate: Rate, body: dict, wants_usage: bool, searches: int = 0,
                 by_text: bool = False) -> None:
        self._call, self._rate, self._body, self._wants_usage = call, rate, body, wants_usage
        self._searches = searches  # web searches a search model bills for this request
        self._by_text = by_text  # translated chunks: estimate by their text, not a token a delta
        self._id = call.id.encode()
        self._metered = False  # the provider's usage chunk came: the record has its usage
        self._uncounted: list[bytes] = []  # relayed chunks whose text is not in `streamed_chars` yet
        self.done = False

    def encode(self, batch: list[bytes]) -> bytes:
        if self._uncounted:  # the previous batch's text: no usage came with it
            self._count()
        return self._encode(batch)

    def _encode(self, batch: list[bytes]) -> bytes:
        if batch and batch[-1] == b"[DONE]":
            self.done = True
            return self._encode(batch[:-1]) + self._estimated_usage() + b"data: [DONE]\n\n"
        # The usage chunk (normally the last: looked for from the end) is parsed on its own; the
        # rest goes in one piece (which `_batch` checks holds no other usage chunk).
        for i in range(len(batch) - 1, -1, -1):
            data = batch[i]
            if _USAGE in data and _NULL not in data:
                before = self._batch(batch[:i])
                usage = self._chunk(data)
                after = self._batch(batch[i + 1:]) if i + 1 < len(batch) else b""  # (usually none: no call)
                return before + (b"data: " + usage + b"\n\n" if usage else b"") + after
        return self._batch(batch)

    def _batch(self, batch: list[bytes]) -> bytes:
        """Chunks without usage: one join and one replace when they share their `id` prefix."""
        if not batch:
            return b""
        first = batch[0]
        end = first.find(b'"', 7) if first.startswith(_ID) else -1
        head = b"data: " + first[:end + 1]
        out = b"data: " + b"\n\ndata: ".join(batch) + b"\n\n"
        if end > 0 and b"\\" not in head:
            # No chunk has usage: every `"usage":` is a `"usage":null` (kept) or, for a client
            # that did not ask for usage, a `,"usage":null` (cut: none is left after the cut).
            if self._wants_usage:
                cut = out
                plain = _NOT_NULL.search(out) is None  # (one regex pass: a third of two counts)
            else:
                cut = out.replace(_NULL_USAGE, b"")
                plain = _USAGE not in cut
            if plain:
                # Re-ided in one replace; every chunk starts with `head` when it was made as many
                # times as there are chunks (told by the length it added: no separate count).
                ours = b'data: {"id":"' + self._id + b'"'
                out_ided = cut.replace(head, ours)
                grown = len(ours) - len(head)
                if (len(out_ided) - len(cut) == grown * len(batch) if grown
                        else cut.count(head) == len(batch)):
                    if not self._metered:
                        self._uncounted.append(out)
                    return out_ided
        return b"".join(b"data: " + c + b"\n\n" for c in map(self._chunk, batch) if c is not None)

    def _chunk(self, data: bytes) -> bytes | None:
        """One chunk on its own: re-ided by a splice, or parsed when it carries usage."""
        if not self._metered:
            self._uncounted.append(data)
        at = data.find(_USAGE)
        if at >= 0 and not data.startswith(b"null", at + 8):
            return self._usage_chunk(data)
        if at >= 0 and not self._wants_usage:
            cut = data.replace(_NULL_USAGE, b"", 1)
            if len(cut) == len(data):
                return self._usage_chunk(data)  # not the compact form: parse it
            data = cut
        end = data.find(b'"', 7) if data.startswith(_ID) else -1
        if end < 0 or b"\\" in data[7:end]:
            return self._usage_chunk(data)
        return _ID + self._id + data[end:]

    def _count(self) -> None:
        """Add the text of the chunks relayed since the last count to `streamed_chars` (for an
        estimate: four characters a token)."""
        chars = text_chars if self._by_text else lambda data: 4 * deltas(data)
        self._call.streamed_chars += sum(map(chars, self._uncounted))
        self._uncounted.clear()

    def _usage_chunk(self, data: bytes) -> bytes | None:
        """The slow path: parse, re-id, meter `usage` if any, serialise."""
        chunk = orjson.loads(data)
        chunk["id"] = self._call.id
        usage_obj = chunk.get("usage")
        if usage_obj:
            usage = Usage.from_openai(usage_obj)
            usage.web_searches = self._searches
            usage_obj["cost"] = usd_json(self._call.meter(usage, self._rate))
            self._metered = True
            self._uncounted.clear()  # no estimate will be made: its text need not be counted
        if not self._wants_usage:
            chunk.pop("usage", None)
            if usage_obj and not chunk.get("choices"):
                return None
        return orjson.dumps(chunk)

    def _estimated_usage(self) -> bytes:
        """For a client that asked for usage of a stream the provider sent none for (a server
        that ignores `include_usage`), the usage chunk it would have had: the estimate the
        record carries, with its `cost` (as an unstreamed answer without usage gets)."""
        if not self._wants_usage or self._call.pricing_source is not None:
            return b""
        self.settle()
        call = self._call
        usage = {**call.usage.to_openai(), "cost": usd_json(call.cost_pico)}
        chunk: dict[str, object] = {"id": call.id, "object": "chat.completion.chunk",
                                    "created": int(time.time()), "model": self._body.get("model"),
                                    "choices": [], "usage": usage}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self) -> bytes:
        return self._estimated_usage() + b"data: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        return b"data: " + err.body() + b"\n\n"

    def settle(self) -> None:
        """Price a stream the provider sent no usage for by estimate. One cut after its usage
        chunk (before `[DONE]`) keeps that usage: the cost the client was told."""
        call = self._call
        if not self._metered and (call.partial or call.pricing_source is None):
            self._count()
            call.meter_estimate(self._body, self._rate)  # cut short: no usage from the provider
            if self._searches:  # a search model searched before it answered
                call.usage.web_searches = self._searches
                call.cost_pico += self._rate.under(call.price_context).tool_fees(Usage(web_searches=self._searches))


class ChatRelay:
    """`/v1/chat/completions` and `/v1/embeddings`: relay to the plan's targets, meter, respond."""

    def __init__(self, rates: Rates) -> None:
        self._rate = rates

    async def chat(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        if check_chat(body):
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await relay_stream(call, plan, lambda route: _chat_chunks(call, body, route),
                                      lambda route: ChatCodec(call, self._rate(route), body, wants_usage,
                                                              chat_searches(route.upstream_model, body),
                                                              route.native.raw_chat_stream is None), send)

        def attempt(route: Route) -> Awaitable[tuple[dict, Usage]]:
            return route.provider.chat(upstream_body(body, route))

        data, usage = await execute(call, plan, attempt)
        data["id"] = call.id
        assert call.route is not None
        usage.web_searches = chat_searches(call.route.upstream_model, body)
        await self._respond(call, body, data, usage, send)

    async def embeddings(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        check_embeddings(body)

        def attempt(route: Route) -> Awaitable[tuple[dict, Usage]]:
            native = route.native.embeddings
            if native is None:
                raise InvalidRequest(f"model {route.name!r} is served by provider {route.provider_name!r}, "
                                     "which has no embeddings endpoint", param="model")
            return native.embed(upstream_body(body, route))

        data, usage = await execute(call, plan, attempt)
        await self._respond(call, body, data, usage, send)

    async def _respond(self, call: Call, body: dict, data: dict, usage: Usage, send: Send) -> None:
        assert call.route is not None
        cost = meter_answer(call, usage, self._rate(call.route), body, data)
        usage_obj = data.get("usage")
        if not isinstance(usage_obj, dict):
            usage_obj = data["usage"] = usage.to_openai()
        usage_obj["cost"] = usd_json(cost)
        await respond_json(call, data, send)


def upstream_body(body: dict, route: Route) -> dict:
    """The body one attempt sends: the client's, with the target's model, as a copy of its own."""
    return {**body, "model": route.upstream_model}


def _chat_chunks(call: Call, body: dict, route: Route) -> AsyncGenerator[list[bytes], None]:
    """The provider's chat stream as batches of chunk JSON bytes (raw when it can give them);
    a translated one reports the prompt's counts it has early in `call.reported`."""
    call.reported = Reported()  # this attempt's, none of an earlier one's
    raw = route.native.raw_chat_stream
    if raw is not None:
        return raw.chat_stream_raw(upstream_body(body, route))
    return _dumped(route.provider.chat_stream(upstream_body(body, route), call.reported))


async def _dumped(batches: AsyncGenerator[list[dict], None]) -> AsyncGenerator[list[bytes], None]:
    try:
        async for batch in batches:
            yield [orjson.dumps(chunk) for chunk in batch]
    finally:
        await batches.aclose()
