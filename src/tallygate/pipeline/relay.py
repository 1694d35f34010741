"""Relaying an answer to the client: a finished JSON body (`respond_json`), or a stream
(`relay_stream`), the one relay every streaming route shares (chat, messages, responses).

A route gives `relay_stream` how to open a stream on a target (`open_stream(route)`) and how to
encode what it yields for the client (`codec_for(route)`, a `Codec`). The relay lets the routing
executor try targets until one sends its first batch (until then nothing has reached the client),
then sends the headers and relays batch after batch. A failure midway marks the call partial,
tells the route's health, and ends the stream with the codec's in-band error; a stream that
stalled past its provider's timeout is charged the output cap sent (`Call.stalled`). Before the last
bytes go out the codec settles the cost (usage the provider reported, else an estimate of what
was relayed) and the call is recorded (`Call.finish()`); provider secrets are scrubbed from
the stream, a secret split across events included (`Call.stream_scrub()`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

import orjson

from tallygate.errors import GatewayError, RequestCancelled, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.routing import Plan, execute, stream_failed
from tallygate.pipeline.wire import JSON_HEADERS, SSE_HEADERS, Send, send_bytes
from tallygate.types import Usage

Batches = AsyncGenerator[Any, None]  # what a provider's stream yields, batch by batch

log = logging.getLogger("tallygate.proxy")

# The text a JSON event carries, for estimates (quotes inside strings are always escaped).
TEXT_FIELDS = re.compile(rb'"(?:content|text|delta|partial_json|thinking|arguments)":"((?:[^"\\]|\\.)*)"')


def sse(name: bytes, data: bytes) -> bytes:
    """One server-sent event with a name."""
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


async def respond_json(call: Call, data: dict[str, Any], send: Send) -> None:
    """Send a finished JSON answer with the gateway's request id; the call is recorded first."""
    out = call.scrub(orjson.dumps(data))
    call.ttft = time.perf_counter()
    call.finish()
    await send_bytes(send, 200, out, [*JSON_HEADERS, (b"x-request-id", call.id.encode())])


def meter_answer(call: Call, usage: Usage, rate: Rate, body: dict[str, Any], answer: dict[str, Any]) -> int:
    """Price a finished JSON answer's `usage`; returns the cost in picodollars. An answer whose
    provider reported no usage (a server that sends none) is priced as a stream cut short is:
    the prompt by the body's size and the output by the answer's text, about four characters a
    token, its pricing source marked `(estimated)`; never $0."""
    if usage.input_tokens or usage.output_tokens:
        return call.meter(usage, rate)
    estimate = replace(usage, input_tokens=call.prompt_estimate(body).input_tokens,
                       output_tokens=call.output_estimate(text_chars(orjson.dumps(answer))))
    cost = call.meter(estimate, rate)
    call.mark_estimated()
    return cost


def text_chars(data: bytes) -> int:
    """Characters of text in one event (escapes counted as written: close enough to estimate)."""
    return sum(len(m) for m in TEXT_FIELDS.findall(data))


class Codec(Protocol):
    done: bool  # the last batch held the stream's final event: nothing more will come

    def encode(self, batch: Any) -> bytes:
        """The bytes to send for one batch from the provider (metering what it reports)."""
        ...

    def end(self) -> bytes:
        """The bytes that close a stream the provider finished."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """The in-band error event for a stream that failed midway."""
        ...

    def settle(self) -> None:
        """Price the call if the provider never reported usage (cut short), by estimate."""
        ...


async def _first_batch(open_stream: Callable[[Route], Batches], route: Route) -> tuple[Batches, Any]:
    """One stream attempt: open it on `route` and wait for its first batch."""
    batches = open_stream(route)
    try:
        return batches, await anext(batches)
    except StopAsyncIteration:
        raise UpstreamProtocolError(f"provider {route.provider_name!r} sent an empty stream") from None
    except BaseException:
        await batches.aclose()
        raise


async def relay_stream(call: Call, plan: Plan, open_stream: Callable[[Route], Batches],
                       codec_for: Callable[[Route], Codec], send: Send) -> None:
    """Open the stream (with fallback until the first batch), then relay it to the client."""
    call.stream = True
    batches, batch = await execute(call, plan, partial(_first_batch, open_stream))
    route = call.route
    assert route is not None
    codec = codec_for(route)
    scrub = call.stream_scrub()  # holds back only a tail that could begin a secret
    try:
        call.ttft = time.perf_counter()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*SSE_HEADERS, (b"x-request-id", call.id.encode())]})
        try:
            while True:
                out = scrub.feed(codec.encode(batch))
                if codec.done:  # the final event: one write, no separate end of stream
                    _finish(call, codec)
                    return await send({"type": "http.response.body", "body": out + scrub.flush()})
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                batch = await anext(batches)
        except StopAsyncIteration:
            end = scrub.feed(codec.end())
            try:
                _finish(call, codec)
            except GatewayError as refused:  # the journal refused the record: end with that error instead
                end = scrub.flush() + codec.error(refused)
            else:
                end += scrub.flush()
            await send({"type": "http.response.body", "body": end})
        except Exception as exc:
            if not isinstance(exc, GatewayError):
                log.exception("stream %s failed unexpectedly", call.id)
            err = exc if isinstance(exc, GatewayError) else GatewayError(
                "the gateway failed while relaying this stream", code="internal_error")
            call.partial = True
            call.stalled = isinstance(err, UpstreamTimeout) and err.sent  # billed up to the cap sent
            call.fail(err)
            if isinstance(err, UpstreamError):
                stream_failed(plan, route)
            _finish(call, codec)
            await send({"type": "http.response.body", "body": scrub.flush() + codec.error(err)})
        except asyncio.CancelledError:  # shutdown ran out of grace time: end the stream properly
            call.partial = True
            cancelled = RequestCancelled("the gateway stopped before this request finished")
            call.fail(cancelled)
            _finish(call, codec)
            await send({"type": "http.response.body", "body": scrub.flush() + codec.error(cancelled)})
            raise
    finally:
        if not call.recorded:  # the client went away: the proxy's `finally` records it
            codec.settle()
        await batches.aclose()


def _finish(call: Call, codec: Codec) -> None:
    """Price what the stream cost and record the call, before its last bytes are sent. A call
    recorded already (the journal refused its success, and the 503 it became is recorded) is not
    priced again: its budget settles the cost its record has."""
    if not call.recorded:
        codec.settle()
    call.finish()
