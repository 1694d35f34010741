"""The servers the multiprocess tests share, one of each per test module, on free ports:
`pg` (PostgreSQL) and `rds` (Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import PostgresInstance, postgres_instance
from tests.redis import RedisServer, redis_server


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresInstance]:
    with postgres_instance() as server:
        yield server


@pytest.fixture(scope="module")
def rds() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server
