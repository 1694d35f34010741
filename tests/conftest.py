"""Shared fixtures: a fake provider speaking OpenAI's and Anthropic's wire formats, a factory of
real gateway processes configured against it, and a Redis server (`rds`) and PostgreSQL (`pg`)
for a test module, on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.loopback import closed_port_url
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway
from tests.postgres import PostgresInstance, postgres_instance
from tests.redis import RedisServer, redis_server


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def rds() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresInstance]:
    with postgres_instance() as server:
        yield server


def standard_config(upstream: FakeUpstream) -> dict:
    """Models on the fake OpenAI and Anthropic sides, each failure scenario as its own model."""
    models = {
        "gpt-4o-mini": {"provider": "openai", "model": "gpt-4o-mini"},
        "embed": {"provider": "openai", "model": "text-embedding-3-small"},
        "claude": {"provider": "anthropic", "model": "claude-3-5-haiku-latest"},
        "local-llama": {"provider": "openai", "model": "llama-3.1-8b",
                        "pricing": {"input_per_mtok": "0.05", "output_per_mtok": "0.10"}},
        "cached": {"provider": "openai", "model": "cached-100",
                   "pricing": {"input_per_mtok": "2", "output_per_mtok": "8",
                               "cached_input_per_mtok": "0.5"}},
        "refused": {"provider": "nowhere", "model": "gpt-4o-mini"},
        "priced": {"provider": "openai", "model": "echo-priced",  # $0.001 a token, both ways
                   "pricing": {"input_per_mtok": "1000", "output_per_mtok": "1000"}},
        "priced-bytes": {"provider": "openai", "model": "bytetokens",  # billed a token per prompt byte
                         "pricing": {"input_per_mtok": "1000", "output_per_mtok": "1000"}},
        "priced-slow": {"provider": "openai", "model": "slow-400",
                        "pricing": {"input_per_mtok": "1000", "output_per_mtok": "1000"}},
        "slowstream": {"provider": "openai", "model": "slowstream-400",
                       "pricing": {"input_per_mtok": "1", "output_per_mtok": "2"}},
        "claude-slowstream": {"provider": "anthropic", "model": "slowstream-400",
                              "pricing": {"input_per_mtok": "1", "output_per_mtok": "2"}},
    }
    for scenario in ("fail-400", "fail-401", "fail-429", "fail-500", "fail-503", "slow-3000",
                     "cut-stream", "reset", "garbage"):
        models[scenario] = {"provider": "openai", "model": scenario}
        models["claude-" + scenario] = {"provider": "anthropic", "model": scenario}
    return {
        "providers": {
            "openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream",
                       "timeout_s": 1.0},
            "anthropic": {"type": "anthropic", "base_url": upstream.root_url, "api_key": "sk-ant-up",
                          "timeout_s": 1.0},
            "nowhere": {"type": "openai", "base_url": closed_port_url(), "api_key": "x"},
        },
        "models": models,
    }


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway per test module on the standard config, served in this process."""
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), standard_config(upstream)).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def api_key(gateway: Gateway) -> str:
    return gateway.create_key("tests", team="growth", env="test")


@pytest.fixture()
def client(gateway: Gateway, api_key: str):  # type: ignore[no-untyped-def]
    import openai

    with openai.OpenAI(base_url=gateway.base_url, api_key=api_key, max_retries=0, timeout=10) as c:
        yield c


__all__ = ["ADMIN_KEY"]
