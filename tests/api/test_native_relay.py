"""Native stream relays pass the provider's events through byte for byte: only the request id in
`message_start` and `usage.cost` in the event that closes the stream change."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tallygate.pipeline.call import Call
from tallygate.pipeline.messages import NativeMessagesCodec
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.responses import NativeResponsesCodec
from tallygate.types import Principal
from tests.fakes import wire, wire_responses

RATE = Rate(input=3_000_000, output=15_000_000, cached=300_000, cache_write=3_750_000, source="test")
FIXTURES = Path(__file__).parents[1] / "providers" / "fixtures" / "anthropic"


def events(raw: bytes) -> list[tuple[str, bytes]]:
    out = []
    for frame in raw.strip().split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in frame.split(b"\n"))
        out.append((lines[b"event"].decode(), lines[b"data"]))
    return out


@pytest.mark.parametrize("name", ["stream_text.sse", "stream_thinking.sse", "stream_tool_use.sse"])
def test_anthropic_events_pass_through_untouched_but_id_and_cost(name: str) -> None:
    recorded = events((FIXTURES / name).read_bytes())
    call = Call("req_native", "messages", Principal(None, "t"))
    codec = NativeMessagesCodec(call, RATE, {"messages": []})
    relayed = events(codec.encode(recorded))
    assert codec.done and [n for n, _ in relayed] == [n for n, _ in recorded]
    for (kind, before), (_, after) in zip(recorded, relayed, strict=True):
        if kind == "message_start":
            assert orjson.loads(after)["message"]["id"] == "req_native"
        elif kind == "message_delta":
            usage = orjson.loads(after)["usage"]
            assert usage.pop("cost") > 0 and usage == orjson.loads(before)["usage"]
        else:
            assert after == before
    assert call.cost_pico > 0 and call.usage.output_tokens > 0


def test_responses_events_pass_through_untouched_but_cost() -> None:
    body = {"model": "gpt-4o-mini", "input": "hello"}
    recorded = events(b"".join(wire_responses.events(body, wire.Scenario("cached", cached=10))))
    call = Call("req_native", "responses", Principal(None, "t"))
    codec = NativeResponsesCodec(call, RATE, body)
    relayed = events(codec.encode(recorded))
    assert codec.done
    for (kind, before), (_, after) in zip(recorded, relayed, strict=True):
        if kind == "response.completed":
            usage = orjson.loads(after)["response"]["usage"]
            assert usage.pop("cost") > 0 and usage == orjson.loads(before)["response"]["usage"]
        else:
            assert after == before
    assert call.usage.cached_tokens == 10
