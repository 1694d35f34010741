"""Where a finished request goes: a list of observers, the ledger first.

The proxy hands every finished `Call` to `Observers.finished()` once, whatever happened to the
request. Each observer gets the same typed `LedgerRecord`; one that raises is logged and cannot
fail the request or keep the others from seeing it. Observers run on the event loop, on the hot
path: they must not block or await (queue the work, as the ledger writer does).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from tallygate.core.record import LedgerRecord
from tallygate.pipeline.call import Call

log = logging.getLogger("tallygate.observers")


class RequestObserver(Protocol):
    """Something told about every finished request (the ledger, metrics, alerts, tracing)."""

    def request_finished(self, record: LedgerRecord) -> None: ...


class Observers:
    """Hands each finished call's record to every observer, in order."""

    def __init__(self, observers: Sequence[RequestObserver]) -> None:
        self._observers = tuple(observers)

    def finished(self, call: Call) -> LedgerRecord:
        record = call.record()
        for observer in self._observers:
            try:
                observer.request_finished(record)
            except Exception:
                log.exception("request observer %s failed on request %s", type(observer).__name__, record.id)
        return record
