"""A provider that answers with a redirect is an upstream error: the prompt and the provider
key are never re-sent to the `Location` (aiohttp would follow a 307 with the body and keep
headers such as `x-api-key`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway import ADMIN_KEY, InProcessGateway
from tests.observe.receiver import Receiver


@pytest.fixture()
def servers() -> Iterator[tuple[Receiver, Receiver]]:
    """A provider answering 307 to another server on loopback, which records what reaches it."""
    with Receiver("unused") as redirector, Receiver("unused") as elsewhere:
        redirector.redirect_to = elsewhere.url
        yield redirector, elsewhere


@pytest.mark.parametrize("ptype,path,body", [
    ("openai", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "secret plan"}]}),
    ("openai", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                        "stream": True}),
    ("anthropic", "/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
])
def test_a_provider_redirect_is_not_followed(servers: tuple[Receiver, Receiver], tmp_path: Path, ptype: str,
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
    assert len(redirector.received) == 1 and elsewhere.received == []
