"""A finished request's objects are freed by reference counting, not left to the garbage collector.

The call held a closure over its exchange (the timed-out attempt's worst case), and the exchange
holds the call: a cycle, so each request's call, exchange, holds, usage and the HTTP cycle they
refer to outlived it until a collection found them. At 8 streams in flight (bench s8) those
collections cost some 14-20 us a stream (4-6 % of its CPU). Now nothing of a request is left once
it is answered and recorded, even with the collector off: a chat stream, a JSON answer, a
/v1/responses stream and a /v1/messages stream, each with a budget (so the worst case is set),
through the real app and HTTP.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tallygate.pipeline.call import Call
from tallygate.pipeline.exchange import Exchange
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

PRICED = {"input_per_mtok": "1", "output_per_mtok": "2"}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    providers = {"openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-up"},
                 "anthropic": {"type": "anthropic", "base_url": upstream.root_url, "api_key": "sk-ant-up"}}
    models = {"fast": {"provider": "openai", "model": "echo-fast", "pricing": PRICED},
              "claude": {"provider": "anthropic", "model": "echo-fast", "pricing": PRICED}}
    gw = InProcessGateway(tmp_path_factory.mktemp("freed"), {"providers": providers, "models": models}).start()
    yield gw
    gw.stop()


def _alive() -> list[object]:
    return [o for o in gc.get_objects() if isinstance(o, (Call, Exchange))]


def _garbage() -> list[object]:
    """The request objects only a collection would free (in a reference cycle, unreachable)."""
    deadline = time.monotonic() + 3  # the server records and settles after the last byte
    while _alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    gc.set_debug(gc.DEBUG_SAVEALL)  # a collection keeps what it found unreachable in gc.garbage
    try:
        gc.collect()
        return [o for o in gc.garbage if isinstance(o, (Call, Exchange))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _ask(gateway: InProcessGateway, key: str, client: openai.OpenAI, kind: str) -> None:
    """One request of `kind`, read to its end."""
    hello = [{"role": "user", "content": "hello there"}]
    if kind == "chat stream":
        chunks = list(client.chat.completions.create(model="fast", messages=hello, stream=True,  # type: ignore[arg-type]
                                                     stream_options={"include_usage": True}))
        assert chunks[-1].usage is not None
    elif kind == "chat":
        assert client.chat.completions.create(model="fast", messages=hello).usage is not None  # type: ignore[arg-type]
    elif kind == "responses stream":
        events = list(client.responses.create(model="fast", input="hello there", stream=True))
        assert events[-1].type == "response.completed"
    else:
        with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20) as claude:
            with claude.messages.stream(model="claude", messages=hello, max_tokens=50) as stream:  # type: ignore[arg-type]
                assert stream.get_final_message().usage.output_tokens > 0


@pytest.mark.parametrize("kind", ["chat stream", "chat", "responses stream", "messages stream"])
def test_a_finished_request_leaves_nothing_for_the_collector(gateway: InProcessGateway, kind: str) -> None:
    key = gateway.create_key("freed", monthly_limit="5")  # a budget: the worst case of an attempt is set
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "warm up"}])
        gc.collect()
        gc.disable()  # (so that what the request leaves in cycles stays until `_garbage` looks)
        try:
            _ask(gateway, key, client, kind)
            left = _garbage()
            assert not left, f"{len(left)} request objects wait for the garbage collector: {left[:2]}"
        finally:
            gc.enable()
