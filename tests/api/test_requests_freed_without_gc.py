"""A finished request's objects are freed by reference counting, not left to the garbage collector.

The call held a closure over its exchange (the timed-out attempt's worst case), and the exchange
holds the call: a cycle, so each request's call, exchange, holds, usage and the HTTP cycle they
refer to outlived it until a collection found them. At 8 streams in flight (bench s8) those
collections cost some 14-20 us a stream (4-6 % of its CPU). Now nothing of a request is left once
it is answered and recorded, even with the collector off: a stream and a JSON answer, both with
a budget (so the worst case is set), through the real app and HTTP.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import openai
import pytest

from tallygate.pipeline.call import Call
from tallygate.pipeline.exchange import Exchange
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

PRICED = {"input_per_mtok": "1", "output_per_mtok": "2"}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    providers = {"openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-up"}}
    models = {"fast": {"provider": "openai", "model": "echo-fast", "pricing": PRICED}}
    gw = InProcessGateway(tmp_path_factory.mktemp("freed"), {"providers": providers, "models": models}).start()
    yield gw
    gw.stop()


def _alive() -> list[object]:
    return [o for o in gc.get_objects() if isinstance(o, (Call, Exchange))]


def _left(collect: bool) -> list[object]:
    """The request objects still there once the server is done (it records and settles after the
    last byte), by collections too when `collect`."""
    deadline = time.monotonic() + 3
    while (alive := _alive()) and time.monotonic() < deadline:
        if collect:
            gc.collect()
        time.sleep(0.02)
    return alive


@pytest.mark.parametrize("stream", [True, False])
def test_a_finished_request_leaves_nothing_for_the_collector(gateway: InProcessGateway, stream: bool) -> None:
    key = gateway.create_key("freed", monthly_limit="5")  # a budget: the worst case of an attempt is set
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "warm up"}])
        assert not _left(collect=True)
        gc.disable()
        try:
            if stream:
                chunks = list(client.chat.completions.create(
                    model="fast", messages=[{"role": "user", "content": "hello there"}], stream=True,
                    stream_options={"include_usage": True}))
                assert chunks[-1].usage is not None
            else:
                assert client.chat.completions.create(
                    model="fast", messages=[{"role": "user", "content": "hello there"}]).usage is not None
            left = _left(collect=False)
            assert not left, f"{len(left)} request objects wait for the garbage collector: {left[:2]}"
        finally:
            gc.enable()
