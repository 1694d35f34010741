"""Where a finished request goes: a list of observers, the ledger first.

The proxy hands every finished `Call` to `Observers.finished()` once, whatever happened to the
request. Each observer gets the same typed `LedgerRecord`; one that raises is logged and cannot
fail the request or keep the others from seeing it, with one exception: the ledger (the first
observer) raising `JournalUnavailable`, which must reach the call (`Call.finish()`) before any
other observer has seen the record. Observers run on the event loop, on the hot
path: they must not block or await (queue the work, as the ledger writer does). A
`CallObserver` also gets the call itself, for what the record does not carry (the principal's
limits and scopes, an incoming trace context).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from tallygate.core.record import LedgerRecord
from tallygate.errors import JournalUnavailable
from tallygate.pipeline.call import Call

log = logging.getLogger("tallygate.observers")


class RequestObserver(Protocol):
    """Something told about every finished request (the ledger, metrics, alerts, tracing)."""

    def request_finished(self, record: LedgerRecord) -> None: ...


class CallObserver(Protocol):
    """Something told about every finished request together with its `Call`."""

    def call_finished(self, call: Call, record: LedgerRecord) -> None: ...


class Observers:
    """Hands each finished call's record to every observer, in order, then to the call observers."""

    def __init__(self, observers: Sequence[RequestObserver], call_observers: Sequence[CallObserver] = ()) -> None:
        self._observers = tuple(observers)
        self._call_observers = tuple(call_observers)

    def finished(self, call: Call) -> LedgerRecord:
        record = call.record()
        for observer in self._observers:
            try:
                observer.request_finished(record)
            except JournalUnavailable:
                raise
            except Exception:
                log.exception("request observer %s failed on request %s", type(observer).__name__, record.id)
        for call_observer in self._call_observers:
            try:
                call_observer.call_finished(call, record)
            except Exception:
                log.exception("call observer %s failed on request %s", type(call_observer).__name__, record.id)
        return record
