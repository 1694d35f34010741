"""The gateway the fuzz tests share (`test_fuzz.py`, `test_fuzz_proxy.py`): one real process on
SQLite and one on PostgreSQL for the whole session, with a model on each provider type; and the
fake clouds a module's gateway talks to (`clouds`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import standard_config
from tests.fakes.clouds import FakeClouds
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.postgres import postgres_server


def fuzz_config(upstream: FakeUpstream) -> dict:
    """The standard config plus a `mock` provider, so that every provider type is fuzzed."""
    config = standard_config(upstream)
    config["providers"]["mockp"] = {"type": "mock"}
    config["models"]["mocked"] = {"provider": "mockp", "model": "mock-1"}
    return config


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def gw(request, upstream, tmp_path_factory) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """A gateway process; after the session its log must hold no traceback and no refused record."""
    if request.param == "sqlite":
        g = Gateway(tmp_path_factory.mktemp("fuzz"), fuzz_config(upstream)).start()
        yield g
        g.stop()
    else:
        with postgres_server() as url:
            g = Gateway(tmp_path_factory.mktemp("fuzz-pg"), fuzz_config(upstream), env={"TALLYGATE_DB_URL": url})
            g.db_url = url
            g.start()
            yield g
            g.stop()
    log = g.log()
    for sign in ("Traceback", "failed unexpectedly", "Exception in ASGI", "refused ledger record"):
        assert sign not in log, log[log.find(sign) - 2000:log.find(sign) + 3000]


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeClouds]:
    """Every fake cloud (Azure, Bedrock, Gemini, Vertex, OpenAI, Anthropic) for one module."""
    with FakeClouds(tmp_path_factory.mktemp("sa")) as fakes:
        yield fakes
