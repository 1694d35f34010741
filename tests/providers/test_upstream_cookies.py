"""A provider's `Set-Cookie` is never sent back: the gateway's upstream clients keep no cookie
jar, so one caller's provider session (load balancer or bot-check cookies) never rides along on
another caller's request. Streams and JSON answers alike."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import ADMIN_KEY, InProcessGateway

CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
USAGE = {**CHUNK, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-model",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class CookieSettingProvider:
    """An OpenAI-style provider that sets a cookie on every answer and records the cookies sent."""

    def __init__(self) -> None:
        self.cookies: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.cookies.append(self.headers.get("Cookie"))
                if body.get("stream"):
                    out = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in (CHUNK, USAGE))
                    out += b"data: [DONE]\n\n"
                    kind = "text/event-stream"
                else:
                    out, kind = json.dumps(ANSWER).encode(), "application/json"
                self.send_response(200)
                self.send_header("Set-Cookie", f"session=caller-{len(outer.cookies)}; Path=/")
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a host name: aiohttp's default jar would refuse cookies from a bare IP address
        self.url = f"http://localhost:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)


@pytest.fixture()
def provider() -> Iterator[CookieSettingProvider]:
    p = CookieSettingProvider()
    p._thread.start()
    yield p
    p._server.shutdown()
    p._server.server_close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_cookie_is_not_sent_back(provider: CookieSettingProvider, tmp_path: Path, stream: bool) -> None:
    config = {"providers": {"p": {"type": "openai", "base_url": provider.url, "api_key": "sk-provider-secret"}},
              "models": {"m": {"provider": "p", "model": "up-model"}}}
    gw = InProcessGateway(tmp_path, config).start()
    try:
        for _ in range(3):
            body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]}
            status, _, answer = gw.request("POST", "/v1/chat/completions", json.dumps(body).encode(), ADMIN_KEY,
                                           {"Content-Type": "application/json"})
            assert status == 200 and b"hi" in answer, answer
    finally:
        gw.stop()
    assert provider.cookies == [None, None, None]
