"""A provider key that a provider streams back split across events (here: in tool-call
arguments, which the fake streams eight characters at a time) never reaches the client whole,
on chat, Messages and Responses streams, relayed natively or translated."""

from __future__ import annotations

import json

import pytest

from tests.gateway import ADMIN_KEY, Gateway

KEYS = ("sk-upstream", "sk-ant-up")  # the providers' keys in the standard config
PROMPT = "sk-upstream sk-ant-up"  # echoed as {"query": "Echo: sk-upstream sk-ant-up"}: split by 8s
SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}}
BODIES = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": PROMPT}], "stream": True,
                             "tools": [{"type": "function", "function": {"name": "search", "parameters": SCHEMA}}]},
    "/v1/messages": {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50, "stream": True,
                     "tools": [{"name": "search", "input_schema": SCHEMA}]},
    "/v1/responses": {"input": PROMPT, "stream": True,
                      "tools": [{"type": "function", "name": "search", "parameters": SCHEMA}]},
}
TEXT_FIELDS = {"arguments", "partial_json", "delta", "text", "content"}


def _texts(value: object) -> list[str]:
    """The strings of the text fields a client joins, in document order."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in ([v] if k in TEXT_FIELDS and isinstance(v, str) else _texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])  # openai and anthropic: native or translated
def test_a_key_split_across_stream_events_never_reaches_the_client(gateway: Gateway, path: str, model: str) -> None:
    raw = json.dumps({**BODIES[path], "model": model}).encode()
    status, _, stream = gateway.request("POST", path, raw, ADMIN_KEY, {"Content-Type": "application/json",
                                                                      "anthropic-version": "2023-06-01"})
    assert status == 200, stream[:500]
    joined = ""
    for line in stream.decode().splitlines():
        if line.startswith("data: {"):
            joined += "".join(_texts(json.loads(line[6:])))
    assert "[redacted]" in joined, joined  # the arguments were streamed, the keys in them cut
    for key in KEYS:
        assert key not in joined and key.encode() not in stream, (key, joined)
