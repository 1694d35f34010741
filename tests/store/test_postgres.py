"""The same ledger, keys and logs on PostgreSQL: migrations, batched writes, subtree queries."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from sqlalchemy import text

from tallygate.store.db import migrate, open_engine, schema_behind
from tallygate.store.keys import KeyStore
from tests.conftest import standard_config
from tests.gateway import Gateway
from tests.postgres import postgres_server

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_gateway_on_postgres_records_flushes_and_queries(upstream, tmp_path, pg_url: str) -> None:
    gw = Gateway(tmp_path, standard_config(upstream),
                 env={"TALLYGATE_DB_URL": pg_url, "TALLYGATE_LEDGER_FLUSH_MS": "600000"})
    gw.db_url = pg_url
    gw.start()
    key = gw.create_key("pg", team="data")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        ids = [client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO,
            extra_body={"request_tags": ["US/California/SF", "US/NYC"]}).id for _ in range(5)]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                           extra_body={"request_tags": ["bad//tag"]})
    gw.stop(signal.SIGTERM)  # the long flush interval leaves the shutdown flush to write them
    gw.start()
    try:
        status, body = gw.get("/v1/logs?tag=US&label.team=data")
        assert status == 200 and sorted(r["id"] for r in body["data"]) == sorted(ids)
        status, body = gw.get("/v1/logs?status=400&label.team=data")
        assert len(body["data"]) == 1
    finally:
        gw.stop()
    engine = open_engine(pg_url)
    with engine.connect() as conn:
        per_prefix = dict(conn.execute(text(
            "SELECT prefix, sum(requests) FROM tag_rollup_day GROUP BY prefix")).all())
        total = conn.execute(text("SELECT sum(cost_pico) FROM requests WHERE status = 200")).scalar_one()
    engine.dispose()
    assert per_prefix["US"] == 5 and per_prefix["US/California/SF"] == 5
    assert total > 0


def test_migrations_are_idempotent_on_postgres(pg_url: str) -> None:
    engine = open_engine(pg_url)
    migrate(engine)
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    assert schema_behind(engine) is None  # at the newest revision
    engine.dispose()


def test_postgres_connections_have_no_jit(pg_url: str) -> None:
    """JIT compiled each analytics sum whose plan cost passed jit_above_cost: 420 ms of compiling for
    30 ms of work (an hour roll-up over a ragged range at 10M records). The engine turns it off."""
    engine = open_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW jit")).scalar_one() == "off"
    engine.dispose()


def test_workers_starting_together_share_one_bootstrap_user(pg_url: str) -> None:
    """`serve --workers N` makes every worker ensure the `admin` user at once: all get the same one."""
    engine = open_engine(pg_url)
    migrate(engine)
    store = KeyStore(engine)
    for round_no in range(5):
        name = f"bootstrap-{round_no}"
        start = threading.Barrier(8)

        def ensure(store: KeyStore = store, name: str = name, start: threading.Barrier = start) -> str:
            start.wait()
            return store.ensure_user(name).id

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: ensure(), range(8)))
        assert len(set(ids)) == 1
        with pytest.raises(ValueError, match="already exists"):
            store.create_user(name)
    engine.dispose()


def test_gateways_starting_together_on_a_fresh_database_all_migrate(pg_url: str) -> None:
    """Several machines started at once on an empty database: one migrates, none crashes."""
    engine = open_engine(pg_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CREATE DATABASE fresh_together"))
    engine.dispose()
    fresh_url = pg_url.rsplit("/", 1)[0] + "/fresh_together"
    code = "import sys; from tallygate.store.db import migrate, open_engine; migrate(open_engine(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, fresh_url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    failures = [p.stderr.read()[-800:] for p in procs if p.wait(timeout=120) != 0]  # type: ignore[union-attr]
    assert failures == []
    engine = open_engine(fresh_url)
    assert schema_behind(engine) is None
    engine.dispose()
