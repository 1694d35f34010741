"""A finished stream gives its upstream connection back to the pool: the provider's chunked
body ends (its `0\\r\\n\\r\\n`) a moment after `[DONE]`, as it does when the two arrive in separate
reads, and the gateway reads that end before releasing the connection instead of closing it.
The same for every provider that streams over HTTP: OpenAI-style SSE, Anthropic's SSE (native
and translated), Gemini's SSE (no terminator: its last chunk carries the `finishReason`) and
Bedrock's binary event stream (Converse's `metadata` event, InvokeModel's `message_stop`)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.bedrock import event, frame
from tests.gateway import ADMIN_KEY, InProcessGateway

EVENT_STREAM = "application/vnd.amazon.eventstream"

CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
USAGE = {**CHUNK, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


_MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "up-model", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}}
ANTHROPIC_EVENTS = [
    (b"message_start", {"type": "message_start", "message": _MESSAGE}),
    (b"content_block_start", {"type": "content_block_start", "index": 0,
                              "content_block": {"type": "text", "text": ""}}),
    (b"content_block_delta", {"type": "content_block_delta", "index": 0,
                              "delta": {"type": "text_delta", "text": "hi"}}),
    (b"content_block_stop", {"type": "content_block_stop", "index": 0}),
    (b"message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 1}}),
    (b"message_stop", {"type": "message_stop"}),
]


GEMINI_CHUNK = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP",
                                 "index": 0}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}
CONVERSE_EVENTS = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("messageStop", {"stopReason": "end_turn"}),
    ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}, "metrics": {"latencyMs": 1}}),
]


def _events(path: str) -> tuple[str, list[bytes]]:
    """The content type and the body pieces (one chunk each) answered on `path`."""
    if path.endswith("/messages"):
        return "text/event-stream", [b"event: " + name + b"\ndata: " + json.dumps(data).encode() + b"\n\n"
                                     for name, data in ANTHROPIC_EVENTS]
    if ":streamGenerateContent" in path:
        return "text/event-stream", [b"data: " + json.dumps(GEMINI_CHUNK).encode() + b"\r\n\r\n"]
    if path.endswith("/converse-stream"):
        return EVENT_STREAM, [event(kind, data) for kind, data in CONVERSE_EVENTS]
    if path.endswith("/invoke-with-response-stream"):
        chunks = [{"bytes": base64.b64encode(json.dumps(data).encode()).decode()} for _name, data in ANTHROPIC_EVENTS]
        return EVENT_STREAM, [frame({":event-type": "chunk", ":content-type": "application/json",
                                     ":message-type": "event"}, json.dumps(c).encode()) for c in chunks]
    return "text/event-stream", [b"data: " + e + b"\n\n" for e in (json.dumps(CHUNK).encode(),
                                                                    json.dumps(USAGE).encode(), b"[DONE]")]


class LateEndProvider:
    """An OpenAI- or Anthropic-style streaming provider whose chunked body ends `end_delay_s`
    after its last event (`[DONE]`, `message_stop`); it records the client port of every request
    (one port: one kept-alive connection)."""

    def __init__(self, end_delay_s: float) -> None:
        self.ports: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.ports.append(self.client_address[1])
                content_type, pieces = _events(self.path)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for data in pieces:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(end_delay_s)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = self.root + "/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)


@pytest.fixture()
def late_end(request: pytest.FixtureRequest) -> Iterator[LateEndProvider]:
    p = LateEndProvider(request.param)
    p._thread.start()
    yield p
    p._server.shutdown()
    p._server.server_close()


def _provider(route: str, provider: LateEndProvider) -> dict:
    """The provider config of `route`: `chat` on an openai provider, `messages` (native) or
    `chat-on-anthropic` (translated) on an anthropic one, `chat-on-gemini`, `chat-on-bedrock`
    (Converse), `messages-on-bedrock` (InvokeModel) and `messages-on-bedrock-converse`."""
    if route == "chat":
        return {"type": "openai", "base_url": provider.url, "api_key": "sk-provider-secret"}
    if "bedrock" in route:
        return {"type": "bedrock", "region": "us-east-1", "base_url": provider.root, "api_key": "bedrock-key-secret",
                "anthropic_messages": route == "messages-on-bedrock"}
    kind = "gemini" if route.endswith("gemini") else "anthropic"
    return {"type": kind, "base_url": provider.root, "api_key": "sk-provider-secret"}


def _three_streams(provider: LateEndProvider, tmp_path: Path, pause_s: float, route: str = "chat") -> list[float]:
    """Three streams through the gateway on the provider of `route` (see `_provider`)."""
    config = {"providers": {"p": _provider(route, provider)},
              "models": {"m": {"provider": "p", "model": "up-model",  # a price: Bedrock models must have one
                               "pricing": {"input_per_mtok": "1", "output_per_mtok": "2"}}}}
    path, end = (("/v1/messages", b"message_stop") if route.startswith("messages")
                 else ("/v1/chat/completions", b"data: [DONE]\n\n"))
    gw = InProcessGateway(tmp_path, config).start()
    took = []
    try:
        for _ in range(3):
            time.sleep(pause_s)  # the previous stream's connection is back in the pool by then
            body = {"model": "m", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
            t0 = time.perf_counter()
            status, _, answer = gw.request("POST", path, json.dumps(body).encode(), ADMIN_KEY,
                                           {"Content-Type": "application/json", "anthropic-version": "2023-06-01"})
            took.append(time.perf_counter() - t0)
            assert status == 200 and b"hi" in answer and end in answer[-200:], answer
    finally:
        gw.stop()
    return took


@pytest.mark.parametrize("route", ["chat", "messages", "chat-on-anthropic", "chat-on-gemini", "chat-on-bedrock",
                                   "messages-on-bedrock", "messages-on-bedrock-converse"])
@pytest.mark.parametrize("late_end", [0.01], indirect=True)
def test_a_finished_stream_keeps_its_connection(late_end: LateEndProvider, tmp_path: Path, route: str) -> None:
    _three_streams(late_end, tmp_path, 0.2, route)
    assert len(late_end.ports) == 3 and len(set(late_end.ports)) == 1, late_end.ports


@pytest.mark.parametrize("route", ["chat", "chat-on-gemini"])
@pytest.mark.parametrize("late_end", [1.0], indirect=True)
def test_a_body_that_does_not_end_is_not_waited_for(late_end: LateEndProvider, tmp_path: Path, route: str) -> None:
    """The client has its whole answer at once; the connection is then closed, not kept."""
    took = _three_streams(late_end, tmp_path, 0.2, route)
    assert max(took) < 0.8, took
    assert len(set(late_end.ports)) == 3, late_end.ports
