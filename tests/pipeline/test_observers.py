"""Where a finished request goes: every observer sees it once, a failing one harms nobody."""

from __future__ import annotations

import logging

import pytest

from tallygate.core.record import LedgerRecord
from tallygate.pipeline.call import Call
from tallygate.pipeline.observers import Observers
from tallygate.types import Principal


class Seen:
    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def request_finished(self, record: LedgerRecord) -> None:
        self.records.append(record)


class Broken:
    def request_finished(self, record: LedgerRecord) -> None:
        raise RuntimeError("observer bug")


def test_a_failing_observer_is_logged_and_the_others_still_see_the_request(
        caplog: pytest.LogCaptureFixture) -> None:
    first, last = Seen(), Seen()
    call = Call("req_1", "chat", Principal(key_id="k", name="key", labels={"team": "a"}))
    call.tags = ("team/a",)
    with caplog.at_level(logging.ERROR, logger="tallygate.observers"):
        record = Observers([first, Broken(), last]).finished(call)
    assert first.records == [record] and last.records == [record]
    assert record.id == "req_1" and record.tags == ("team/a",) and record.labels == {"team": "a"}
    assert "Broken failed on request req_1" in caplog.text


def test_the_record_is_in_the_requests_column_order() -> None:
    from tallygate.core.record import COLUMNS
    from tallygate.store.ingest import STORED_COLUMNS
    from tallygate.store.schema import requests

    # the record's labels are stored as a label-set id; `labels` only holds rows older than 0003
    assert STORED_COLUMNS == tuple("label_set" if c == "labels" else c for c in COLUMNS)
    assert STORED_COLUMNS == tuple(c.name for c in requests.columns if c.name != "labels")
