"""A request body sent gzip- or deflate-encoded (`Content-Encoding`, as api.anthropic.com and
OpenAI take it) is decoded, never past the body limit (a zip bomb gets the 413 its decoded size
deserves); another coding, or data that does not decode, is a 400 naming `Content-Encoding` in
the route's shape. Before, the compressed bytes were parsed as JSON: a 400 about "surrogates"."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

import anthropic
import httpx2
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hello, compressed"}]


class Encoding(httpx2.HTTPTransport):
    """Sends each request body encoded by `encode`, with its `Content-Encoding`."""

    def __init__(self, name: str, encode: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self._name, self._encode = name, encode

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = self._encode(request.read())
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        encoded = httpx2.Request(request.method, request.url, headers={**headers, "Content-Encoding": self._name},
                                content=body, extensions=request.extensions)
        return super().handle_request(encoded)


CODINGS = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_a_gzip_or_deflate_body_is_decoded_on_chat_and_messages(
        gateway: Gateway, api_key: str, upstream: FakeUpstream, coding: str) -> None:
    transport = Encoding(coding, CODINGS[coding])
    with openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0,
                       http_client=httpx2.Client(transport=transport)) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=8,  # type: ignore[arg-type]
                                               extra_body={"request_tags": ["encoded"]})
    assert reply.choices[0].message.content
    assert upstream.requests[-1]["body"]["messages"] == HELLO
    assert gateway.log_record(reply.id)["tags"] == ["encoded"]
    with anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0,
                             http_client=httpx2.Client(transport=Encoding(coding, CODINGS[coding]))) as claude:
        assert claude.messages.create(model="claude", max_tokens=8, messages=HELLO).content  # type: ignore[arg-type]


def test_a_zip_bomb_gets_the_413_of_its_decoded_size(gateway: Gateway, api_key: str) -> None:
    bomb = json.dumps({"model": "gpt-4o-mini", "messages": HELLO, "user": "0" * (8 * 1024 * 1024)}).encode()
    with openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0,
                       http_client=httpx2.Client(transport=Encoding("gzip", gzip.compress))) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,  # type: ignore[arg-type]
                                           user="0" * (8 * 1024 * 1024))
    assert len(gzip.compress(bomb)) < 64 * 1024  # small on the wire, past the limit decoded
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "payload_too_large"  # type: ignore[index]


def test_another_coding_or_undecodable_data_is_a_400_naming_content_encoding(gateway: Gateway,
                                                                             api_key: str) -> None:
    for name, encode in (("br", gzip.compress), ("gzip", lambda raw: raw)):
        with openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0,
                           http_client=httpx2.Client(transport=Encoding(name, encode))) as client:
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
        assert refused.value.body["param"] == "Content-Encoding", refused.value.body  # type: ignore[index]
        assert "Content-Encoding" in refused.value.message and "surrogates" not in refused.value.message
    with anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0,
                             http_client=httpx2.Client(transport=Encoding("br", gzip.compress))) as claude:
        with pytest.raises(anthropic.BadRequestError) as shaped:
            claude.messages.create(model="claude", max_tokens=8, messages=HELLO)  # type: ignore[arg-type]
    assert shaped.value.body["type"] == "error"  # type: ignore[index]
    assert shaped.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
