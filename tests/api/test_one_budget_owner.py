"""Two `tallygate serve` processes on one ledger without Redis would each enforce every limit in
memory, on its own: the second refuses to start, naming --redis (a SQLite file's lock; a
PostgreSQL advisory lock, which every machine sees)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway
from tests.postgres import postgres_server


def test_a_second_process_on_the_ledger_without_redis_refuses_to_start(upstream: FakeUpstream,
                                                                        tmp_path: Path) -> None:
    first = Gateway(tmp_path, standard_config(upstream)).start()
    try:
        key = first.create_key("twice", monthly_limit="0.5")
        second = Gateway(tmp_path, standard_config(upstream))  # the same ledger.db
        try:
            with pytest.raises(RuntimeError, match="--redis"):
                second.start()
        finally:
            second.stop()
        # Before: both served, each holding the key to $0.50 alone, and the ledger took $0.50 twice.
        body = {"model": "priced", "max_tokens": 100, "messages": [{"role": "user", "content": "spend"}]}
        status, _, answer = first.post_json("/v1/chat/completions", body, key=key)
        assert status == 200, answer
    finally:
        first.stop()
    again = Gateway(tmp_path, standard_config(upstream)).start()  # the first one gone: the ledger is free
    again.stop()


def test_on_postgresql_too(upstream: FakeUpstream, tmp_path: Path) -> None:
    with postgres_server() as url:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = Gateway(tmp_path / "a", standard_config(upstream), db_url=url).start()
        try:
            second = Gateway(tmp_path / "b", standard_config(upstream), db_url=url)  # another machine
            try:
                with pytest.raises(RuntimeError, match="--redis"):
                    second.start()
            finally:
                second.stop()
        finally:
            first.stop()
        Gateway(tmp_path / "b", standard_config(upstream), db_url=url).start().stop()  # free once it stopped
