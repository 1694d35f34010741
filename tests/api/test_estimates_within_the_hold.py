"""An answer priced by estimate (a stream cut short, an answer without usage) never costs more
than its reservation: the output estimated from the text relayed (four characters a token)
stops at the output cap the provider was sent, and an image is estimated at no more than its
target model bills for one (the reservation's count), not a flat 1,600.

Before, a Claude stream whose few tokens were long runs of characters (64 `=` a token) and which
the provider cut before its usage was charged 16 times its output cap, and a gpt-5 answer
without usage its images at 1,600 tokens against a reservation of 1,190: past the key's limit,
which held exactly the request's worst case. Real HTTP: a fake provider speaking Anthropic's and
OpenAI's wire formats, the official SDKs as clients.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest
from aiohttp import web

from tests.fakes.loopback import LoopbackServer
from tests.gateway import InProcessGateway

OUTPUT_DEAR = {"input_per_mtok": "1", "output_per_mtok": "10000"}  # the output is what costs
INPUT_DEAR = {"input_per_mtok": "10000", "output_per_mtok": "1"}  # the prompt is what costs
WIDE = "=" * 64  # one token of text that estimates (four characters a token) count as 16
CAP = 4
PNG = "data:image/png;base64,iVBORw0KGgo="


class TerseUpstream(LoopbackServer):
    """A provider that streams `CAP` wide tokens of text and then drops the connection before its
    usage (Messages), and answers a chat completion without usage (as some servers do)."""

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, data: dict) -> None:
            compact = json.dumps(data, separators=(",", ":"))  # as Anthropic writes its events
            await resp.write(f"event: {name}\ndata: {compact}\n\n".encode())

        await event("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}})
        await event("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
        for _ in range(min(CAP, body["max_tokens"])):
            await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": WIDE}})
        assert request.transport is not None
        request.transport.abort()  # cut: no message_delta (the usage), no message_stop
        return resp

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Two pictures."}}]})


@pytest.fixture(scope="module")
def terse() -> Iterator[TerseUpstream]:
    with TerseUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gw(terse: TerseUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    providers = {"anth": {"type": "anthropic", "base_url": terse.root_url, "api_key": "sk-ant-up"},
                 "oai": {"type": "openai", "base_url": terse.base_url, "api_key": "sk-up"}}
    models = {"claude-wide": {"provider": "anth", "model": "claude-sonnet-4-5", "pricing": OUTPUT_DEAR},
              "gpt5-terse": {"provider": "oai", "model": "gpt-5", "pricing": INPUT_DEAR}}
    gateway = InProcessGateway(tmp_path_factory.mktemp("estimates"),
                               {"providers": providers, "models": models}).start()
    yield gateway
    gateway.stop()


def held_key(gw: InProcessGateway, ask: object) -> tuple[str, Decimal]:
    """A key whose limit is exactly the worst case of the request `ask(key)` makes (as a key of
    a tiny limit is told in its 402), and that limit."""
    tiny = gw.create_key("tiny", "0.000000000001")
    with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as refused:
        ask(tiny)  # type: ignore[operator]
    assert refused.value.status_code == 402
    found = re.search(r"may cost up to \$([0-9.]+)", refused.value.message)
    assert found, refused.value.message
    limit = Decimal(found[1])
    return gw.create_key("exact", limit), limit


def test_a_stream_cut_before_its_usage_is_charged_no_more_output_than_its_cap(gw: InProcessGateway) -> None:
    def ask(key: str) -> None:
        with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=20) as claude:
            with claude.messages.stream(model="claude-wide", max_tokens=CAP,
                                        messages=[{"role": "user", "content": "hi"}]) as stream:
                for _ in stream.text_stream:
                    pass

    key, limit = held_key(gw, ask)
    with pytest.raises(anthropic.APIError):
        ask(key)
    assert gw.spend_when_settled(key) <= limit
    deadline = time.monotonic() + 10
    while not (rows := [r for r in gw.ledger_rows() if r["key_name"] == "exact" and r["endpoint"] == "messages"]):
        assert time.monotonic() < deadline, "no ledger record"
        time.sleep(0.05)
    [record] = rows
    assert record["partial"] == 1 and record["pricing_source"].endswith("(estimated)")
    assert record["output_tokens"] == CAP  # 256 characters relayed, but the provider was sent a cap of 4


def test_a_translated_chat_stream_cut_before_its_usage_stays_within_its_hold(gw: InProcessGateway) -> None:
    def ask(key: str) -> None:
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=20) as client:
            for _ in client.chat.completions.create(model="claude-wide", max_tokens=CAP, stream=True,
                                                    messages=[{"role": "user", "content": "hi"}]):
                pass

    key, limit = held_key(gw, ask)
    with pytest.raises(openai.APIError):
        ask(key)
    assert gw.spend_when_settled(key) <= limit


def test_an_answer_without_usage_prices_its_images_as_reserved(gw: InProcessGateway) -> None:
    parts = [{"type": "text", "text": "and these?"}] + [{"type": "image_url", "image_url": {"url": PNG}}] * 20
    answers = []

    def ask(key: str) -> None:
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=20) as client:
            answers.append(client.chat.completions.create(model="gpt5-terse", max_tokens=CAP,  # type: ignore[call-overload]
                                                          messages=[{"role": "user", "content": parts}]))

    key, limit = held_key(gw, ask)
    ask(key)
    assert answers[0].choices[0].message.content == "Two pictures."
    assert gw.spend_when_settled(key) <= limit
