"""The ledger: one record per request, never double-counted, never lost on shutdown."""

from __future__ import annotations

import asyncio
import signal
import time

import openai

from tallygate.core.record import LedgerRecord
from tallygate.store.db import migrate, open_engine
from tallygate.store.ledger import LedgerWriter
from tests.conftest import standard_config
from tests.gateway import Gateway
from tests.records import make_record

HELLO = [{"role": "user", "content": "hi"}]


def _record(rid: str, tags: list[str]) -> LedgerRecord:
    return make_record(id=rid, created_at=1_700_000_000_000, tags=tags)


def test_replayed_batch_does_not_double_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)

    async def run() -> None:
        writer = LedgerWriter(engine, flush_ms=10)
        await writer.start()
        for _ in range(2):
            writer.record(_record("req_a", ["US/CA/SF", "US/NYC"]))
            writer.record(_record("req_b", ["US"]))
            await writer.flush()
        await writer.stop()

    asyncio.run(run())
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), sum(cost_pico) FROM requests").one() == (2, 10)
        under_us = conn.exec_driver_sql(
            "SELECT sum(requests), sum(cost_pico) FROM tag_rollup_day WHERE prefix = 'US'").one()
        assert under_us == (2, 10)  # req_a once (not twice for its two US tags), req_b once
        assert conn.exec_driver_sql("SELECT sum(requests) FROM usage_rollup_month").scalar_one() == 2
        leaves = conn.exec_driver_sql(
            "SELECT tag FROM request_tags WHERE request_id = 'req_a' ORDER BY tag").all()
        assert [p for (p,) in leaves] == ["US/CA/SF", "US/NYC"]


def test_a_writer_behind_catches_up_in_bigger_transactions_up_to_its_cap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    sizes: list[int] = []

    async def run() -> None:
        writer = LedgerWriter(engine, flush_ms=10, batch=10, max_batch=300)
        writer.on_write = lambda count, _seconds: sizes.append(count)
        await writer.start()
        for i in range(1000):  # journaled with no await between: the flusher finds all of them waiting
            writer.record(make_record(id=f"req_{i:04d}", created_at=1_700_000_000_000 + i))
        await writer.flush()
        await writer.stop()

    asyncio.run(run())
    assert sizes == [300, 300, 300, 100]  # not 100 transactions of `batch`, and none over `max_batch`
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM requests").scalar_one() == 1000
        assert conn.exec_driver_sql("SELECT sum(requests) FROM usage_rollup_month").scalar_one() == 1000


def test_sigterm_flushes_every_buffered_record(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A flush interval far longer than the test: only the shutdown flush can write these.
    gw = Gateway(tmp_path, standard_config(upstream), env={"TALLYGATE_LEDGER_FLUSH_MS": "600000"}).start()
    key = gw.create_key("flush")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        ids = [client.chat.completions.create(model="gpt-4o-mini", messages=HELLO,
                                              extra_body={"request_tags": ["flush/test"]}).id
               for _ in range(25)]
        try:
            client.chat.completions.create(model="fail-500", messages=HELLO)
        except openai.InternalServerError:
            pass
    assert gw.ledger_rows() == []
    assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutdown
    assert "ledger flushed: 26 records" in gw.log()
    rows = gw.ledger_rows()
    assert {r["id"] for r in rows} >= set(ids)
    assert len(rows) == 26 and sum(r["status"] == 502 for r in rows) == 1


def test_restart_keeps_keys_and_history(upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gw = Gateway(tmp_path, standard_config(upstream)).start()
    key = gw.create_key("durable", team="core")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        first = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
    gw.stop()
    gw.start()
    try:
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
            second = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).id
        assert gw.log_record(first)["labels"] == {"team": "core"}
        assert gw.log_record(second)["key"]["name"] == "durable"
    finally:
        gw.stop()


def test_logs_filter_by_tag_subtree_label_key_model_status_and_paginate(gateway: Gateway) -> None:
    team_a = gateway.create_key("logs-a", team="alpha", env="prod")
    team_b = gateway.create_key("logs-b", team="beta", env="prod")
    start = int(time.time() * 1000)
    sent: dict[str, list[str]] = {"a": [], "b": []}
    for name, key, tags in (("a", team_a, ["geo/US/CA/SF", "geo/US/NYC"]), ("b", team_b, ["geo/EU/FR"])):
        with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
            for _ in range(3):
                sent[name].append(client.chat.completions.create(
                    model="local-llama", messages=HELLO, extra_body={"request_tags": tags}).id)
            try:
                client.chat.completions.create(model="fail-400", messages=HELLO,
                                               extra_body={"request_tags": tags})
            except openai.BadRequestError as exc:
                sent[name].append(exc.response.headers["x-request-id"])
    gateway.log_record(sent["b"][-1])

    def ids(query: str) -> list[str]:
        status, body = gateway.get(f"/v1/logs?from={start}&{query}")
        assert status == 200, body
        return [r["id"] for r in body["data"]]

    assert sorted(ids("tag=geo/US")) == sorted(sent["a"])  # each request once, not once per tag
    assert sorted(ids("tag=geo")) == sorted(sent["a"] + sent["b"])
    assert ids("tag=geo/US/CA/SF&status=400") == [sent["a"][-1]]
    assert sorted(ids("label.team=beta")) == sorted(sent["b"])
    assert ids("label.team=beta&label.env=dev") == []
    assert ids("model=fail-400&label.team=alpha") == [sent["a"][-1]]
    key_b = gateway.log_record(sent["b"][0])["key"]["id"]
    assert sorted(ids(f"key={key_b}")) == sorted(sent["b"])

    pages, cursor = [], None
    while True:
        status, body = gateway.get(f"/v1/logs?tag=geo&from={start}&limit=3"
                                   + (f"&cursor={cursor}" if cursor else ""))
        pages.append([r["id"] for r in body["data"]])
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    flat = [i for p in pages for i in p]
    assert len(pages) == 3 and sorted(flat) == sorted(sent["a"] + sent["b"]) and len(set(flat)) == 8


def test_logs_bad_parameters_are_400_and_need_manage_permission(gateway: Gateway, api_key: str) -> None:
    status, body = gateway.get("/v1/logs?from=yesterday")
    assert status == 400 and body["error"]["param"] == "from"
    status, body = gateway.get("/v1/logs?from=2026-02-01&to=2026-01-01")
    assert status == 400 and "after" in body["error"]["message"]
    status, body = gateway.get("/v1/logs?limit=100000")
    assert status == 400 and body["error"]["param"] == "limit"
    status, body = gateway.get("/v1/logs?cursor=%%%")
    assert status == 400 and body["error"]["param"] == "cursor"
    status, body = gateway.get("/v1/logs/req_nope")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    status, body = gateway.get("/v1/logs", key=api_key)  # a completions-only key
    assert status == 403 and body["error"]["type"] == "permission_error"
    status, body = gateway.get("/v1/logs", key=None)
    assert status == 401
