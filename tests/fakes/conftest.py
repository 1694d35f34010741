"""The fake upstream the fakes' own tests share: one server a module, cleared before each test."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="module")
def _upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server
    assert not [t for t in threading.enumerate() if t.name == f"fake-upstream-{server.port}"]


@pytest.fixture()
def up(_upstream: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream, with no recorded requests and fresh flaky-<status>-<k> counters."""
    _upstream.clear()
    return _upstream
