"""A provider that answers with a redirect is an upstream error: the prompt and the provider
key are never re-sent to the `Location` (aiohttp would follow a 307 with the body and keep
headers such as `x-api-key`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import ADMIN_KEY, InProcessGateway


class Server:
    """A loopback HTTP server answering every POST with `status` (and `location`), recording them."""

    def __init__(self, status: int, location: str | None = None) -> None:
        self.posts: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def servers() -> Iterator[tuple[Server, Server]]:
    elsewhere = Server(200)
    redirector = Server(307, elsewhere.url + "/steal")
    yield redirector, elsewhere
    redirector.close()
    elsewhere.close()


@pytest.mark.parametrize("ptype,path,body", [
    ("openai", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "secret plan"}]}),
    ("openai", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                        "stream": True}),
    ("anthropic", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
])
def test_a_provider_redirect_is_not_followed(servers: tuple[Server, Server], tmp_path: Path, ptype: str,
                                             path: str, body: dict) -> None:
    redirector, elsewhere = servers
    base = redirector.url + ("/v1" if ptype == "openai" else "")
    config = {"providers": {"p": {"type": ptype, "base_url": base, "api_key": "sk-provider-secret"}},
              "models": {"m": {"provider": "p", "model": "up-model"}}}
    gw = InProcessGateway(tmp_path, config).start()
    try:
        status, _, answer = gw.post_json(path, body, ADMIN_KEY, {"anthropic-version": "2023-06-01"})
    finally:
        gw.stop()
    assert status == 502, answer
    assert len(redirector.posts) == 1 and elsewhere.posts == []
