"""A finished stream gives its upstream connection back to the pool: the provider's chunked
body ends (its `0\\r\\n\\r\\n`) a moment after `[DONE]`, as it does when the two arrive in separate
reads, and the gateway reads that end before releasing the connection instead of closing it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import ADMIN_KEY, InProcessGateway

CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
USAGE = {**CHUNK, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class LateEndProvider:
    """An OpenAI-style streaming provider whose chunked body ends `end_delay_s` after `[DONE]`;
    it records the client port of every request (one port: one kept-alive connection)."""

    def __init__(self, end_delay_s: float) -> None:
        self.ports: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in (json.dumps(CHUNK).encode(), json.dumps(USAGE).encode(), b"[DONE]"):
                    data = b"data: " + event + b"\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(end_delay_s)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)


@pytest.fixture()
def late_end(request: pytest.FixtureRequest) -> Iterator[LateEndProvider]:
    p = LateEndProvider(request.param)
    p._thread.start()
    yield p
    p._server.shutdown()
    p._server.server_close()


def _three_streams(provider: LateEndProvider, tmp_path: Path, pause_s: float) -> list[float]:
    config = {"providers": {"p": {"type": "openai", "base_url": provider.url, "api_key": "sk-provider-secret"}},
              "models": {"m": {"provider": "p", "model": "up-model"}}}
    gw = InProcessGateway(tmp_path, config).start()
    took = []
    try:
        for _ in range(3):
            time.sleep(pause_s)  # the previous stream's connection is back in the pool by then
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            t0 = time.perf_counter()
            status, _, answer = gw.request("POST", "/v1/chat/completions", json.dumps(body).encode(), ADMIN_KEY,
                                           {"Content-Type": "application/json"})
            took.append(time.perf_counter() - t0)
            assert status == 200 and b"hi" in answer and answer.endswith(b"data: [DONE]\n\n"), answer
    finally:
        gw.stop()
    return took


@pytest.mark.parametrize("late_end", [0.01], indirect=True)
def test_a_finished_stream_keeps_its_connection(late_end: LateEndProvider, tmp_path: Path) -> None:
    _three_streams(late_end, tmp_path, 0.2)
    assert len(late_end.ports) == 3 and len(set(late_end.ports)) == 1, late_end.ports


@pytest.mark.parametrize("late_end", [1.0], indirect=True)
def test_a_body_that_does_not_end_is_not_waited_for(late_end: LateEndProvider, tmp_path: Path) -> None:
    """The client has its whole answer at once; the connection is then closed, not kept."""
    took = _three_streams(late_end, tmp_path, 0.2)
    assert max(took) < 0.8, took
    assert len(set(late_end.ports)) == 3, late_end.ports
