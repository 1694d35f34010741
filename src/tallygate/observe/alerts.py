"""The alert service: every `evaluate_every_s` it asks the detectors what is due, stores each
alert once (the database's primary key on the alert id decides, across processes) and hands the
ones this process stored to the webhook sender. Requests only feed the detectors (observers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from tallygate.observe.events import Event
from tallygate.observe.spikes import ErrorRates, SpendSpikes
from tallygate.observe.thresholds import ThresholdWatcher
from tallygate.observe.webhooks import WebhookSender
from tallygate.store.alerts import AlertStore

log = logging.getLogger("tallygate.alerts")


class _Detector(Protocol):
    def due(self) -> list[Event]: ...


class AlertService:
    """A service: evaluates the detectors, stores new alerts once, delivers them."""

    def __init__(self, store: AlertStore, sender: WebhookSender, thresholds: ThresholdWatcher,
                 detectors: Sequence[SpendSpikes | ErrorRates], every_s: float = 1.0) -> None:
        self._store = store
        self._sender = sender
        self._thresholds = thresholds
        self._detectors = list(detectors)
        self._every = every_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.evaluate()  # what the last requests crossed
        except Exception:
            log.exception("final alert evaluation failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.evaluate()
            except Exception:
                log.exception("alert evaluation failed; retrying at the next interval")

    async def evaluate(self) -> list[Event]:
        """One round; returns the alerts this process stored (and is delivering)."""
        candidates: list[Event] = []
        for d in self._detectors:
            candidates += d.due()
        scopes, refused = self._thresholds.take()
        if scopes:
            candidates += await asyncio.to_thread(self._thresholds.due, scopes, refused)
        if not candidates:
            return []
        fresh = await asyncio.to_thread(self._store.insert_new, candidates)
        self._thresholds.fired.update(e["id"] for e in candidates if e["kind"] in ("threshold", "projected_overrun"))
        if len(self._thresholds.fired) > 100_000:
            self._thresholds.fired.clear()
        for e in fresh:
            log.info("alert %s: %s", e["kind"], e["summary"])
        self._sender.deliver(fresh)
        return [dict(e) for e in fresh]
