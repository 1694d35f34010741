"""Raw HTTP to the fake upstream and the parsing of its streams, for the fakes' own tests (which check
it against the real wire formats, with raw HTTP and the official SDKs)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import aiohttp

OA_HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
AN_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
              "Content-Type": "application/json"}
MSGS = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France, in one word please?"}]
AN_MSGS = [{"role": "user", "content": [{"type": "text", "text": "Say hello to the tests"}]}]


def chat(model="gpt-4o-mini", **kw):
    return {"model": model, "messages": MSGS, **kw}


def msg(model="claude-sonnet-4-5", **kw):
    return {"model": model, "max_tokens": 100, "messages": AN_MSGS, **kw}


def post(up, path, body, headers=OA_HEADERS, timeout=5.0):
    """(status, headers, raw body) via urllib -- raises URLError for transport failures."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(up.root_url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def fetch(up, path, body, headers=OA_HEADERS, timeout=5.0, on_event=None):
    """Raw aiohttp POST; returns (status, headers, body bytes). on_event(time) per chunk read."""
    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(up.root_url + path, json=body, headers=headers) as r:
                chunks = []
                async for piece in r.content.iter_any():
                    chunks.append(piece)
                    if on_event:
                        on_event(time.monotonic())
                return r.status, {k.lower(): v for k, v in r.headers.items()}, b"".join(chunks)
    return asyncio.run(go())


def openai_chunks(raw: bytes) -> list:
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]", raw[-200:]
    assert all(e.startswith(b"data: ") for e in events[:-1])
    return [json.loads(e[6:]) for e in events[:-2]]


def anthropic_events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            ev, data = block.split("\n")
            assert ev.startswith("event: ") and data.startswith("data: ")
            payload = json.loads(data[6:])
            assert payload["type"] == ev[7:]
            out.append((ev[7:], payload))
    return out
