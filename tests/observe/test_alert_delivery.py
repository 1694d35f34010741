"""Every alert kind, on a simulated clock, through the real store (SQLite), the real sender and a
webhook receiver on loopback: each arrives once per window, signed; a receiver that fails is
retried; a second process evaluating the same facts delivers nothing again."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path

from tallygate.observe.alerts import AlertService
from tallygate.observe.spikes import ErrorRates, SpendSpikes
from tallygate.observe.thresholds import ThresholdWatcher
from tallygate.observe.webhooks import WebhookSender
from tallygate.pipeline.budget import MemoryBudget, key_scopes
from tallygate.pipeline.call import Call
from tallygate.settings import ErrorRateConfig, SpikeConfig, WebhookConfig
from tallygate.store.alerts import AlertFilter, AlertStore
from tallygate.store.db import migrate, open_engine
from tallygate.types import Principal
from tests.observe.receiver import Receiver
from tests.records import make_record

USD = 10**12
DAY10 = int(dt.datetime(2026, 7, 10, 12, tzinfo=dt.UTC).timestamp() * 1000)


class Clock:
    def __init__(self) -> None:
        self.ms = DAY10

    def __call__(self) -> float:
        return self.ms / 1000


class Process:
    """What one gateway process runs for alerts, over a shared database."""

    def __init__(self, db: Path, clock: Clock, hook: WebhookConfig) -> None:
        engine = open_engine(f"sqlite:///{db}")
        migrate(engine)
        self.store = AlertStore(engine)
        self.budget = MemoryBudget(clock)
        self.thresholds = ThresholdWatcher(self.budget, lambda p, _t: key_scopes(p), [50, 80, 100], clock=clock)
        self.spikes = SpendSpikes(SpikeConfig(group_by=["label.team"], min_usd=Decimal(1)), clock)
        self.errors = ErrorRates(ErrorRateConfig(group_by=["provider"], window_s=300, baseline_windows=3,
                                                 min_requests=3), clock)
        self.sender = WebhookSender([hook], first_backoff_s=0.05)
        self.service = AlertService(self.store, self.sender, self.thresholds, [self.spikes, self.errors])
        self.principal = Principal(key_id="key-1", name="growth-bot", labels={"team": "growth"},
                                   monthly_limit=10 * USD)

    def finish(self, cost: int, status: int = 200) -> None:
        record = make_record(key_id="key-1", key_name="growth-bot", labels={"team": "growth"}, cost_pico=cost,
                             status=status, provider="openai", requested_model="gpt-4o")
        self.thresholds.call_finished(Call(record.id, "chat", self.principal), record)
        self.spikes.request_finished(record)
        self.errors.request_finished(record)


def test_each_kind_arrives_once_per_window_signed_and_retried(tmp_path: Path) -> None:
    clock = Clock()
    with Receiver("s") as receiver:
        receiver.fail_next = 2  # the first deliveries meet a receiver that is down
        hook = WebhookConfig(url=receiver.url, secret="s", allow_private=True)

        async def run() -> list[dict]:
            a, b = Process(tmp_path / "db.sqlite", clock, hook), Process(tmp_path / "db.sqlite", clock, hook)
            for p in (a, b):
                await p.sender.start()
                p.budget.load({"key-1": 6 * USD}, p.budget.month)  # both see $6 of $10 on day 10
            for _ in range(5 * 12):  # five quiet hours: $0.01 every 5 minutes, no errors
                for p in (a, b):
                    p.finish(USD // 100)
                    await p.service.evaluate()
                clock.ms += 300_000
            for _ in range(12):  # an hour at 10x the spend, half the requests failing
                for p in (a, b):
                    for status in (200, 503, 503):
                        p.finish(USD // 10 if status == 200 else 0, status)
                    await p.service.evaluate()
                clock.ms += 300_000
            events = await asyncio.to_thread(receiver.wait_for, lambda ev: len(ev) >= 4)
            await asyncio.sleep(0.3)  # anything extra would arrive by now
            for p in (a, b):
                await p.sender.stop()
            stored, _ = a.store.page(AlertFilter(), 100, None)
            assert sorted(e["id"] for e in stored) == sorted(e["id"] for e in receiver.events())
            return events

        events = asyncio.run(run())
    got = receiver.events()
    assert sorted(e["kind"] for e in got) == ["error_rate", "projected_overrun", "spend_spike", "threshold"]
    assert len(receiver.received) == 4 + 2  # two tries refused, then each alert accepted once
    by = {e["kind"]: e for e in got}
    assert by["threshold"]["threshold"] == 50 and by["threshold"]["spend"] == "6"
    assert by["projected_overrun"]["projected_date"] < "2026-07-31"
    assert by["spend_spike"]["subject"]["id"] == "label.team=growth"
    assert by["error_rate"]["subject"] == {"kind": "provider", "id": "openai", "name": "provider openai"}
    assert events


def test_slack_webhooks_get_slack_text(tmp_path: Path) -> None:
    with Receiver("s") as receiver:
        hook = WebhookConfig(url=receiver.url, secret="s", format="slack", kinds=["threshold"],
                             allow_private=True)

        async def run() -> None:
            p = Process(tmp_path / "db.sqlite", Clock(), hook)
            await p.sender.start()
            p.budget.load({"key-1": 9 * USD}, p.budget.month)
            p.finish(USD)
            fresh = await p.service.evaluate()
            assert sorted(e.get("threshold", 0) for e in fresh) == [0, 50, 80]  # and the projection
            await asyncio.to_thread(receiver.wait_for, lambda ev: len(ev) >= 2)
            await p.sender.stop()

        asyncio.run(run())
        import json

        texts = sorted(json.loads(body)["text"] for _, body, _ in receiver.received)
    assert len(texts) == 2
    assert all(t.startswith("[tallygate] API key 'growth-bot' ") and "spend is at 90%" in t for t in texts)


def test_a_receiver_that_stays_down_is_retried_then_given_up_without_logging_its_path(
        tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from tests.fakes.loopback import closed_port_url

    url = closed_port_url() + "/services/T000/B000/secret-token"
    sender = WebhookSender([WebhookConfig(url=url, secret="s", retry_for_s=0.3, allow_private=True)],
                           first_backoff_s=0.05)

    async def run() -> float:
        await sender.start()
        t0 = asyncio.get_running_loop().time()
        sender.deliver([{"id": "a1", "kind": "threshold", "summary": "x"}])
        queued = asyncio.get_running_loop().time() - t0  # deliver() only queues
        while sender.pending:
            await asyncio.sleep(0.02)
        await sender.stop()
        return queued

    assert asyncio.run(run()) < 0.01
    assert sender.dropped == 1 and sender.delivered == 0
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) >= 2
    assert "giving up on alert a1" in caplog.text and "secret-token" not in caplog.text
