"""No answered request without a record: kill -9 under load, SIGTERM with the database away,
a bounded journal that turns into 503 `ledger_unavailable`, and a backlog `/readyz` shows."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import aiohttp
import openai
import psutil
import pytest
from sqlalchemy import text

from tallygate.store.db import open_engine
from tests.conftest import standard_config
from tests.gateway import ADMIN_KEY, Gateway
from tests.postgres import PostgresInstance, postgres_instance

HELLO = [{"role": "user", "content": "hi"}]


async def _burst(url: str, key: str, total: int, concurrency: int, on_answered=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Send up to `total` chat requests, `concurrency` at a time; the ids of those fully answered
    (status 200 and the whole body read). Stops at the first connection failure of each worker."""
    answered: list[str] = []
    left = iter(range(total))
    body = json.dumps({"model": "gpt-4o-mini", "messages": HELLO, "request_tags": ["load/burst"]})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in left:
            try:
                async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as resp:
                    data = await resp.json()
            except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                return
            if resp.status == 200:
                answered.append(data["id"])
                if on_answered is not None:
                    on_answered(len(answered))

    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return answered


def _kill_hard(gw: Gateway) -> None:
    assert gw.proc is not None
    gw.proc.kill()  # SIGKILL: no shutdown, no flush
    gw.proc.wait()
    gw.proc = None
    gw._log.close()


def test_kill_9_under_load_loses_no_answered_request(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A flush interval longer than a trial: every record is still in the journal when it dies.
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_LEDGER_FLUSH_MS": "2000"}).start()
    key = gw.create_key("kill9", team="durable")
    lost_per_trial, answered_all = [], []
    try:
        _trials(gw, key, lost_per_trial, answered_all)
    finally:
        gw.stop()
    print(f"kill -9 trials: answered {len(answered_all)} in total, lost per trial {lost_per_trial}")
    assert lost_per_trial == [0, 0, 0]


def _trials(gw: Gateway, key: str, lost_per_trial: list[int], answered_all: list[str]) -> None:
    """Three bursts, each cut by SIGKILL after 300 answers, then a restart that replays."""
    for _trial in range(3):
        def maybe_kill(n: int) -> None:
            if n == 300 and gw.proc is not None:
                _kill_hard(gw)

        answered = asyncio.run(_burst(gw.url, key, total=2000, concurrency=24, on_answered=maybe_kill))
        if gw.proc is not None:
            _kill_hard(gw)
        assert len(answered) >= 300
        answered_all += answered
        gw.start()  # replays the journal before it serves
        stored = {r["id"] for r in gw.ledger_rows()}
        lost_per_trial.append(len(set(answered) - stored))
    rows = gw.ledger_rows()
    assert len(rows) == len({r["id"] for r in rows})  # replay wrote each record once
    # Roll-ups count each replayed record once: the month roll-up agrees with the raw ledger.
    engine = open_engine(gw.db_url)
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT count(*) FROM requests WHERE key_name = 'kill9'")).scalar_one()
        rolled = conn.execute(text(
            "SELECT sum(requests) FROM tag_rollup_month WHERE prefix = 'load'")).scalar_one()
    engine.dispose()
    assert raw == rolled >= len(answered_all)


@pytest.fixture()
def pg() -> Iterator[PostgresInstance]:
    with postgres_instance() as server:
        yield server


def test_sigterm_with_postgres_stopped_keeps_every_record_for_the_next_start(
        upstream, tmp_path, pg: PostgresInstance) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path, standard_config(upstream),
                 env={"TALLYGATE_DB_URL": pg.url, "TALLYGATE_JOURNAL_DIR": str(tmp_path / "journal")})
    gw.db_url = pg.url
    gw.start()
    key = gw.create_key("outage", team="ops")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        before = [client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id for _ in range(20)]
        pg.stop()  # the database goes away; the cached key keeps working
        during = [client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id for _ in range(300)]
    status, ready = gw.get("/readyz", key=None)  # not ready (no database), and the backlog shows
    assert status == 503 and ready["ledger"]["database_failing"] is True
    assert ready["ledger"]["pending_records"] > 0 and ready["ledger"]["backlog_bytes"] > 0
    assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "stay in the journal" in gw.log()
    pg.start()
    gw.start()  # replays the journal into the database that is back
    try:
        engine = open_engine(pg.url)
        with engine.connect() as conn:
            stored = set(conn.execute(text("SELECT id FROM requests")).scalars())
            months = conn.execute(text("SELECT sum(requests) FROM usage_rollup_month")).scalar_one()
        engine.dispose()
        assert set(before + during) <= stored
        assert months == len(stored)  # roll-ups counted each record once
    finally:
        gw.stop()


def test_full_journal_answers_503_ledger_unavailable_and_memory_stays_bounded(
        upstream, tmp_path, pg: PostgresInstance) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path, standard_config(upstream),
                 env={"TALLYGATE_DB_URL": pg.url, "TALLYGATE_JOURNAL_MAX_BYTES": str(700_000)})
    gw.db_url = pg.url
    gw.start()
    key = gw.create_key("capped", team="ops")
    pg.stop()
    try:
        assert gw.proc is not None
        rss_start = psutil.Process(gw.proc.pid).memory_info().rss
        answered = asyncio.run(_burst(gw.url, key, total=3000, concurrency=16))
        rss_end = psutil.Process(gw.proc.pid).memory_info().rss
        # 700 kB of journal holds ~950 records: the rest are refused, not kept in memory.
        assert 500 < len(answered) < 1500
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
            with pytest.raises(openai.InternalServerError) as exc:
                client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert exc.value.status_code == 503 and exc.value.body["code"] == "ledger_unavailable"
        status, ready = gw.get("/readyz", key=None)
        assert status == 503 and ready["ledger"]["full"] is True
        print(f"database down: {len(answered)} answered before the cap, RSS {rss_start >> 20} -> "
              f"{rss_end >> 20} MB")
        assert rss_end - rss_start < 30 << 20
        pg.start()
        deadline = time.monotonic() + 30
        while gw.get("/readyz", key=None)[0] != 200:  # the writer drains the journal once it is back
            assert time.monotonic() < deadline, gw.get("/readyz", key=None)
            time.sleep(0.2)
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
            assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
        engine = open_engine(pg.url)
        with engine.connect() as conn:
            stored = set(conn.execute(text("SELECT id FROM requests")).scalars())
        engine.dispose()
        assert set(answered) <= stored
    finally:
        gw.stop()


def test_uncached_key_during_an_outage_gets_503_auth_unavailable(
        upstream, tmp_path, pg: PostgresInstance) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_DB_URL": pg.url})
    gw.db_url = pg.url
    gw.start()
    cached = gw.create_key("cached")
    try:
        with openai.OpenAI(base_url=gw.base_url, api_key=cached, max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # now in memory
        pg.stop()
        # Keys this gateway has never seen (new to it, or no key at all) must be looked up.
        for secret in ("tg-not-a-key-at-all-0123456789", "tg-" + "x" * 43, "random"):
            status, headers, body = gw.request("POST", "/v1/chat/completions",
                                               json.dumps({"model": "gpt-4o-mini", "messages": HELLO}).encode(),
                                               secret, {"Content-Type": "application/json"})
            error = json.loads(body)["error"]
            assert (status, error["code"]) in ((503, "auth_unavailable"), (401, "invalid_api_key")), body
            assert "Traceback" not in body.decode()
        status, _, body = gw.request("GET", "/v1/manage/apikey", key=ADMIN_KEY)
        assert status == 503 and json.loads(body)["error"]["code"] == "database_unavailable"
        with openai.OpenAI(base_url=gw.base_url, api_key=cached, max_retries=0) as client:
            assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
    finally:
        pg.start()
        gw.stop()


def _read_only(pg: PostgresInstance, on: bool) -> None:
    """Make the whole server refuse writes (every session, at its next transaction), or take them again."""
    engine = open_engine(pg.url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SET default_transaction_read_only = off"))  # (this session can undo it)
            conn.execute(text("ALTER SYSTEM SET default_transaction_read_only = on" if on
                              else "ALTER SYSTEM RESET default_transaction_read_only"))
            conn.execute(text("SELECT pg_reload_conf()"))
    finally:
        engine.dispose()


def _ledger_metrics(gw: Gateway) -> tuple[float, float]:
    """(tallygate_ledger_database_failing, tallygate_ledger_backlog) from /metrics."""
    _, _, raw = gw.request("GET", "/metrics", key=None)
    values = dict(line.split(" ", 1) for line in raw.decode().splitlines() if line.startswith("tallygate_ledger_"))
    return float(values["tallygate_ledger_database_failing"]), float(values["tallygate_ledger_backlog"])


def test_a_database_refusing_writes_loses_no_record_and_readyz_and_metrics_say_so(
        upstream, tmp_path, pg: PostgresInstance) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL up but read-only: requests are still answered (readiness 200: they are
    journaled), `/readyz` and the metrics say the ledger database fails writes and how many
    records wait, and every record reaches the database once it takes writes again (they used
    to be skipped one by one as if each were refused for its content)."""
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_DB_URL": pg.url})
    gw.db_url = pg.url
    gw.start()
    key = gw.create_key("read-only", team="ops")
    try:
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
            before = [client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id for _ in range(3)]
            _read_only(pg, True)
            during = [client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id for _ in range(20)]
        deadline = time.monotonic() + 10
        while not (ready := gw.get("/readyz", key=None))[1]["ledger"]["database_failing"]:
            assert time.monotonic() < deadline, ready
            time.sleep(0.1)
        status, body = ready
        assert status == 200 and body["status"] == "ready", body  # served, and safe in the journal
        assert body["ledger"]["database_error"] == "ReadOnlySqlTransaction (SQLSTATE 25006)"
        assert body["ledger"]["pending_records"] >= len(during)
        [degraded] = body["degraded"]
        assert "ledger database fails writes" in degraded and "records wait in the journal" in degraded
        failing, backlog = _ledger_metrics(gw)
        assert failing == 1 and backlog >= len(during)
        _read_only(pg, False)
        deadline = time.monotonic() + 20
        while (ready := gw.get("/readyz", key=None))[1]["ledger"]["database_failing"] \
                or ready[1]["ledger"]["pending_records"]:
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        assert ready[1]["degraded"] == [] and _ledger_metrics(gw) == (0, 0)
        engine = open_engine(pg.url)
        with engine.connect() as conn:
            stored = set(conn.execute(text("SELECT id FROM requests")).scalars())
        engine.dispose()
        assert set(before + during) <= stored
        assert "refused ledger record" not in gw.log()
    finally:
        gw.stop()
