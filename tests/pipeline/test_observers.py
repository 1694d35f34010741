"""Where a finished request goes: every observer sees it once, a failing one harms nobody."""

from __future__ import annotations

import logging

import pytest

from tallygate.core.record import LedgerRecord
from tallygate.errors import JournalUnavailable
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


class FullDisk:
    """A ledger whose journal refuses every write: successes raise, other records are kept."""

    def __init__(self) -> None:
        self.kept: list[LedgerRecord] = []

    def request_finished(self, record: LedgerRecord) -> None:
        if record.status < 400:
            raise JournalUnavailable("the journal cannot be written")
        self.kept.append(record)


@pytest.mark.parametrize("stream", [False, True])
def test_a_success_the_journal_refuses_is_not_answered_but_recorded_as_the_503(stream: bool) -> None:
    ledger, later = FullDisk(), Seen()
    call = Call("req_1", "chat", Principal(key_id="k", name="key"), Observers([ledger, later]).finished)
    call.stream = stream
    call.ttft = 1.0  # the answer is about to leave
    with pytest.raises(JournalUnavailable):
        call.finish()
    assert call.status == 503 and call.recorded
    assert [r.error_code for r in ledger.kept] == ["journal_unavailable"]
    assert later.records == ledger.kept  # the other observers see only what the ledger kept
    if stream:  # the stream's head was sent: it ends with an error event, cut short
        assert ledger.kept[0].partial and call.ttft is not None
    else:  # nothing of the JSON answer was sent: the 503 is
        assert call.ttft is None
