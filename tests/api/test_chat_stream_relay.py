"""The byte-splicing chat relay sends exactly what parsing and re-serialising every chunk would."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tallygate.pipeline.call import Call
from tallygate.pipeline.chat import ChatCodec, deltas
from tallygate.pipeline.pricing import Rate
from tallygate.types import Principal, Usage
from tests.fakes import wire, wire_openai

RATE = Rate(input=150_000, output=600_000, cached=75_000, cache_write=150_000, source="test")
FIXTURE = Path(__file__).parents[1] / "providers" / "fixtures" / "openai" / "chat_stream_tool_call.sse"


def upstream_chunks() -> list[bytes]:
    """Chunks as OpenAI sends them (recorded) and as the fake does, with and without usage."""
    frames = FIXTURE.read_bytes().strip().split(b"\n\n")
    frames += wire_openai.openai_chat_events({"model": "gpt-4o-mini", "stream_options": {"include_usage": True},
                                       "messages": [{"role": "user", "content": 'a "quoted" ünïcode \\ story'}]},
                                      wire.Scenario())
    frames += [b'data: {"object":"chat.completion.chunk","id":"x","choices":[]}',  # id not first
               b'data: {"id": "spaced", "choices": [], "usage": null}']
    return [f.strip()[6:] for f in frames if f.strip() != b"data: [DONE]"]


def reference(call_id: str, data: bytes, wants_usage: bool) -> bytes | None:
    """What the relay did before: parse, re-id, cost the usage, drop it if not asked for."""
    chunk = orjson.loads(data)
    chunk["id"] = call_id
    usage = chunk.get("usage")
    if usage:
        usage["cost"] = orjson.Fragment(b"0.000084")
    if not wants_usage:
        chunk.pop("usage", None)
        if usage and not chunk.get("choices"):
            return None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


@pytest.mark.parametrize("wants_usage", [True, False])
def test_relayed_bytes_equal_a_full_reserialisation(wants_usage: bool) -> None:
    call = Call("req_0123456789abcdefghijklmnop", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, wants_usage)
    for data in upstream_chunks():
        expected = reference(call.id, data, wants_usage)
        out = codec.encode([data])
        if b'"usage":{' in data:  # the cost depends on the chunk's own usage: compare its shape
            assert (out == b"") == (expected is None)
            if out:
                assert orjson.loads(out[6:])["usage"]["cost"] > 0
                assert orjson.loads(out[6:])["id"] == call.id
            continue
        assert out == (expected or b""), data


@pytest.mark.parametrize("wants_usage", [True, False])
def test_a_whole_batch_is_relayed_as_its_chunks_would_be(wants_usage: bool) -> None:
    call = Call("req_0123456789abcdefghijklmnop", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, wants_usage)
    plain = [d for d in upstream_chunks() if b'"usage":{' not in d]
    recorded, fake, odd = plain[:6], plain[6:-2], plain[-2:]
    # one id each (the spliced path), then mixed ids and odd chunks (chunk by chunk)
    for batch in (recorded, fake, odd, recorded[-2:] + fake[:2]):
        assert codec.encode(batch) == b"".join(reference(call.id, d, wants_usage) or b"" for d in batch)
    assert call.streamed_chars > 0



@pytest.mark.parametrize("wants_usage", [True, False])
def test_a_batch_of_mixed_ids_as_long_as_ours_is_relayed_chunk_by_chunk(wants_usage: bool) -> None:
    """The splice tells that every chunk started with the first one's id by the length its
    replace added; an upstream id as long as the gateway's adds none, so that case is counted."""
    call = Call("req_x", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, wants_usage)
    batch = [b'{"id":"%s","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}],'
             b'"usage":null}' % cid for cid in (b"abcde", b"vwxyz", b"abcde")]
    assert codec.encode(batch) == b"".join(reference(call.id, d, wants_usage) or b"" for d in batch)
    same = [batch[0], batch[2]]
    assert codec.encode(same) == b"".join(reference(call.id, d, wants_usage) or b"" for d in same)

def test_usage_chunk_is_metered_exactly() -> None:
    call = Call("req_x", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, True)
    usage = {"prompt_tokens": 312, "completion_tokens": 41, "prompt_tokens_details": {"cached_tokens": 256}}
    out = codec.encode([orjson.dumps({"id": "c", "choices": [], "usage": usage})])
    assert call.cost_pico == RATE.cost(Usage.from_openai(usage)) == 56 * 150_000 + 256 * 75_000 + 41 * 600_000
    assert b'"cost":0.0000522' in out


def test_the_text_of_a_batch_that_carries_usage_is_not_counted_for_an_estimate() -> None:
    """The provider's usage makes an estimate moot: the chunks that came with it are not scanned."""
    call = Call("req_x", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, True)
    plain = [d for d in upstream_chunks() if b'"usage":{' not in d][6:-2]
    usage = orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    codec.encode(plain + [usage, b"[DONE]"])
    codec.settle()
    assert call.streamed_chars == 0 and call.pricing_source == "test"


def test_a_stream_cut_short_is_estimated_from_every_batch_relayed() -> None:
    call = Call("req_x", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, True)
    plain = [d for d in upstream_chunks() if b'"usage":{' not in d][6:-2]
    batches = [plain[:3], plain[3:5], plain[5:]]
    for batch in batches:
        codec.encode(batch)
    call.partial = True
    codec.settle()
    assert call.streamed_chars == sum(4 * deltas(b"".join(batch)) for batch in batches) > 0
    assert call.pricing_source == "test (estimated)"


def test_a_batch_with_usage_chunks_anywhere_is_relayed_as_its_chunks_would_be() -> None:
    """The usage chunk is looked for from the end of a batch; one elsewhere is still parsed and
    metered in order (the last one counts), and every other chunk relayed unchanged but its id."""
    call = Call("req_x", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, True)
    plain = [d for d in upstream_chunks() if b'"usage":{' not in d][6:-2]
    first, last = ({"prompt_tokens": n, "completion_tokens": n} for n in (5, 7))
    usage_a = orjson.dumps({"id": "c", "choices": [], "usage": first})
    usage_b = orjson.dumps({"id": "c", "choices": [], "usage": last})
    out = codec.encode(plain[:2] + [usage_a] + plain[2:4] + [usage_b] + plain[4:5])
    events = [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e]
    assert len(events) == 7 and {e["id"] for e in events} == {call.id}
    assert [e["usage"]["prompt_tokens"] for e in events if e.get("usage")] == [5, 7]
    assert call.usage.input_tokens == 7 and call.cost_pico == RATE.cost(Usage.from_openai(last))


@pytest.mark.parametrize("wants_usage", [True, False])
def test_a_usage_chunk_among_chunks_of_one_id_is_not_spliced_past(wants_usage: bool) -> None:
    """Chunks sharing their id are spliced in one piece only when none has usage (a provider
    that reports usage on every chunk, say): with or without the client asking for usage."""
    call = Call("req_x", "chat", Principal(None, "t"))
    codec = ChatCodec(call, RATE, {"messages": []}, wants_usage)
    text = b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}'
    usage_a, usage_b = (orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [],
                                      "usage": {"prompt_tokens": n, "completion_tokens": n}}) for n in (5, 7))
    out = codec.encode([text, usage_a, text, text, usage_b])
    events = [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e]
    assert {e["id"] for e in events} == {call.id} and len([e for e in events if e["choices"]]) == 3
    assert [e["usage"]["prompt_tokens"] for e in events if e.get("usage")] == ([5, 7] if wants_usage else [])
    assert wants_usage or b'"usage"' not in out
    assert all(e["usage"]["cost"] > 0 for e in events if e.get("usage"))
    assert call.usage.input_tokens == 7
