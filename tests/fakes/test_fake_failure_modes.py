"""The fake upstream's failure scenarios (slow, cut, in-band errors, resets, garbage, flaky), with raw HTTP."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import pytest

from .raw_client import AN_HEADERS, OA_HEADERS, anthropic_events, chat, fetch, msg, openai_chunks, post


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat(), OA_HEADERS),
    ("/v1/messages", msg(), AN_HEADERS),
])
def test_slow(up, path, body, headers):
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        fetch(up, path, dict(body, model="slow-2000"), headers=headers, timeout=0.1)
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert post(up, path, dict(body, model="slow-200"), headers=headers)[0] == 200
    assert time.monotonic() - t0 >= 0.2


def test_slowstream_spaces_events(up):
    times: list[float] = []
    _, _, raw = fetch(up, "/v1/chat/completions", chat("slowstream-40", stream=True), on_event=times.append)
    chunks = openai_chunks(raw)  # + [DONE]: len(chunks) gaps of 40 ms after the first event
    assert times[-1] - times[0] >= 0.04 * (len(chunks) - 1)


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat("cut-stream", stream=True), OA_HEADERS),
    ("/v1/messages", msg("cut-stream", stream=True), AN_HEADERS),
])
def test_cut_stream(up, path, body, headers):
    got = []

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(up.root_url + path, json=body, headers=headers) as r:
                assert r.status == 200
                async for piece in r.content.iter_any():
                    got.append(piece)
    with pytest.raises(aiohttp.ClientPayloadError):
        asyncio.run(go())
    raw = b"".join(got)
    assert raw.count(b"data: ") == 3 and b"[DONE]" not in raw and b"message_stop" not in raw


def test_cut_json_body(up):
    for path, body, headers in [("/v1/chat/completions", chat("cut-stream"), OA_HEADERS),
                                ("/v1/messages", msg("cut-stream"), AN_HEADERS),
                                ("/v1/embeddings", {"model": "cut-stream", "input": "x"}, OA_HEADERS)]:
        with pytest.raises(aiohttp.ClientPayloadError):
            fetch(up, path, body, headers=headers)


def test_slow_request_does_not_block_others(up):
    slow = threading.Thread(target=post, args=(up, "/v1/chat/completions", chat("slow-800")))
    slow.start()
    up.wait_for_requests(1)
    t0 = time.monotonic()
    assert post(up, "/v1/chat/completions", chat())[0] == 200
    assert time.monotonic() - t0 < 0.6
    slow.join(5)


def test_stream_error_events(up):
    raw = fetch(up, "/v1/chat/completions", chat("stream-error", stream=True))[2]
    last = json.loads(raw.split(b"\n\n")[-2][6:])
    assert last["error"]["type"] == "server_error" and b"[DONE]" not in raw
    events = anthropic_events(fetch(up, "/v1/messages", msg("stream-error", stream=True),
                                    headers=AN_HEADERS)[2])
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                "message": "Overloaded"}})


@pytest.mark.parametrize("path,body,headers", [
    ("/v1/chat/completions", chat("reset"), OA_HEADERS),
    ("/v1/messages", msg("reset", stream=True), AN_HEADERS),
    ("/v1/embeddings", {"model": "reset", "input": "x"}, OA_HEADERS),
])
def test_reset(up, path, body, headers):
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        fetch(up, path, body, headers=headers)
    assert up.requests[-1]["body"]["model"] == "reset"


def test_garbage(up):
    status, headers, raw = post(up, "/v1/chat/completions", chat("garbage"))
    assert status == 200 and headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(raw)


def test_flaky_then_ok(up):
    assert [post(up, "/v1/chat/completions", chat("flaky-503-2"))[0] for _ in range(3)] == [503, 503, 200]
    up.clear()
    assert post(up, "/v1/messages", msg("flaky-529-1"), headers=AN_HEADERS)[0] == 529
