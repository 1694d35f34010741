"""The gateway's Redis connections are opened once: after warm-up, requests (one after the other
or 50 in flight, each reserving and settling) and the shared-circuit poll open none (counted on a
real redis-server: `INFO stats` total_connections_received). A connection handshake on a
request's path would be a second round trip before the upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import redis

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway
from tests.redis import RedisServer

HELLO = [{"role": "user", "content": "hello connections"}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, rds: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[InProcessGateway]:
    config = standard_config(upstream)
    for provider in config["providers"].values():  # 50 in flight in this process on 2 busy cores: no 504s
        provider["timeout_s"] = 30.0
    config["policies"] = {"mini-first": {"strategy": "fallback", "targets": ["gpt-4o-mini", "local-llama"]}}
    config["alerts"] = {"enabled": False}
    gw = InProcessGateway(tmp_path_factory.mktemp("redis-conns"), config,
                          env={"TALLYGATE_REDIS_URL": rds.url}).start()
    yield gw
    gw.stop()


def _opened(client: redis.Redis) -> int:
    """Connections Redis has accepted so far (`client` reads them on the one it keeps)."""
    return int(client.info("stats")["total_connections_received"])


def _requests(gw: InProcessGateway, key: str, n: int, in_flight: int) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as client:
        def one(_: int) -> None:
            client.chat.completions.create(model="policy/mini-first", messages=HELLO,  # type: ignore[arg-type]
                                           max_tokens=5)
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(one, range(n)))


def test_requests_and_the_circuit_poll_open_no_redis_connection_once_started(
        gateway: InProcessGateway, rds: RedisServer) -> None:
    """The connections the gateway keeps are opened as it starts (and for the management API's
    reads): none by requests, not even the first to overlap a settle being sent."""
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": "conns", "monthly_limit": "100"})
    assert status == 201, key
    time.sleep(0.7)  # the shared circuits' first poll
    counting = redis.Redis.from_url(rds.url)
    before = _opened(counting)
    _requests(gateway, key["key"], 100, 1)
    _requests(gateway, key["key"], 500, 50)
    _requests(gateway, key["key"], 100, 1)
    time.sleep(1.2)  # two more polls
    opened = _opened(counting) - before
    counting.close()
    assert opened == 0
