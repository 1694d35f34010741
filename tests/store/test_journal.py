"""The ledger journal on its own: append, read back in batches, checkpoint, rotate, replay after
a restart, a torn last line, one process per directory, and records any text can go into."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tallygate.core.record import Attempt, LedgerRecord, replace
from tallygate.store.db import migrate, open_engine
from tallygate.store.journal import Journal, JournalLocked
from tallygate.store.ledger import LedgerWriter
from tallygate.store.logs import LogReader
from tallygate.store.record_codec import decode_record, encode_record


def _record(rid: str, **changes: object) -> LedgerRecord:
    rec = LedgerRecord(id=rid, created_at=1_700_000_000_000, key_id="k1", key_name="key", labels={"team": "a"},
                       tags=("t/u",), endpoint="chat", requested_model="m", served_model="m", provider="p",
                       status=200, error_type=None, error_message=None, stream=False, partial=False,
                       input_tokens=1, output_tokens=2, cached_tokens=0, cache_write_tokens=0, reasoning_tokens=0,
                       cost_pico=5, pricing_source="config", latency_us=10, ttft_us=None,
                       attempts=(Attempt(provider="p", model="m", status=200, latency_ms=1.5, target="m"),))
    return replace(rec, **changes)


def _lines(journal: Journal, start: tuple[int, int], batch: int = 1000) -> tuple[list[bytes], tuple[int, int]]:
    return journal.read(start, journal.end, batch)


def test_records_read_back_in_batches_and_the_checkpoint_moves(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync="off")
    for i in range(25):
        j.append(encode_record(_record(f"req_{i}")))
    assert j.backlog > 0
    first, pos = _lines(j, j.checkpoint, batch=10)
    assert [decode_record(x).id for x in first] == [f"req_{i}" for i in range(10)]
    j.advance(pos)
    rest, end = _lines(j, j.checkpoint)
    assert len(rest) == 15 and end == j.end
    j.advance(end)
    assert j.backlog == 0 and _lines(j, j.checkpoint)[0] == []
    j.close()


def test_restart_reads_from_the_checkpoint_only(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync="batch")
    for i in range(6):
        j.append(encode_record(_record(f"req_{i}")))
    lines, pos = j.read(j.checkpoint, j.end, 4)
    j.advance(pos)
    j.close()
    again = Journal(tmp_path)  # a new process: a fresh segment, the old one still to be read
    left, _ = _lines(again, again.checkpoint)
    assert [decode_record(x).id for x in left] == ["req_4", "req_5"]
    again.close()


@pytest.mark.parametrize("damage", ["torn", "older format"])
def test_a_torn_checkpoint_reads_the_segments_again_and_an_older_one_is_honoured(tmp_path: Path,
                                                                                damage: str) -> None:
    j = Journal(tmp_path, fsync="batch")
    for i in range(6):
        j.append(encode_record(_record(f"req_{i}")))
    _, pos = j.read(j.checkpoint, j.end, 4)
    j.advance(pos)
    j.close()
    checkpoint = tmp_path / "checkpoint"
    if damage == "torn":  # an OS crash mid-write: the offset changed, its checksum did not
        checkpoint.write_bytes(checkpoint.read_bytes().replace(b" %d " % pos[1], b" %d " % (pos[1] + 7), 1))
    else:  # "<segment> <offset>\n", renamed into place by earlier versions
        checkpoint.write_text(f"{pos[0]} {pos[1]}\n")
    again = Journal(tmp_path)
    left, _ = _lines(again, again.checkpoint)
    expected = range(6) if damage == "torn" else range(4, 6)
    assert [decode_record(x).id for x in left] == [f"req_{i}" for i in expected]
    again.close()


def test_segments_rotate_and_are_deleted_behind_the_checkpoint(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync="off", segment_bytes=2000)
    for i in range(40):
        j.append(encode_record(_record(f"req_{i}")))
    assert len(list(tmp_path.glob("*.log"))) > 3
    lines, pos = _lines(j, j.checkpoint)
    assert [decode_record(x).id for x in lines] == [f"req_{i}" for i in range(40)]
    j.advance(pos)
    j.prepare()  # the writer thread unlinks what is behind the checkpoint and opens the next segment ahead
    assert sorted(p.stat().st_size for p in tmp_path.glob("*.log")) == [0, 0] and j.backlog == 0
    j.close()


def test_rotating_on_the_event_loop_opens_syncs_and_unlinks_nothing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread opens the next segment ahead and unlinks the old ones (`prepare`, in
    each `sync`): a rotation by `append` or `advance` on the event loop makes no blocking call."""
    import os

    j = Journal(tmp_path, fsync="batch", segment_bytes=2000, release_bytes=1000)
    calls: list[str] = []
    for name in ("open", "fsync", "fdatasync", "unlink"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _n=name, _f=real, **k: (calls.append(_n), _f(*a, **k))[1])
    written, rotations = 0, {"append": 0, "advance": 0}
    for round_ in range(6):
        j.sync()  # the writer's step before each batch
        loop_calls, segment = len(calls), j.end[0]
        for i in range(5):  # 559 bytes each: past a segment's 2000 bytes once, a rotation by append
            j.append(encode_record(_record(f"req_{round_}_{i}")))
        assert calls[loop_calls:] == [], calls[loop_calls:]
        rotations["append"] += j.end[0] - segment
        lines, pos = _lines(j, j.checkpoint)
        written += len(lines)
        j.sync()
        loop_calls, segment = len(calls), j.end[0]
        j.advance(pos)  # past release_bytes: a rotation by advance, and segments left behind
        assert calls[loop_calls:] == [], calls[loop_calls:]
        rotations["advance"] += j.end[0] - segment
    assert written == 30 and j.backlog == 0
    assert rotations["append"] >= 3 and rotations["advance"] >= 3, rotations
    j.close()
    again = Journal(tmp_path)
    assert _lines(again, again.checkpoint)[0] == []  # nothing left to replay, no segment lost
    again.close()


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync="off")
    j.append(encode_record(_record("req_whole")))
    j.close()
    segment = sorted(tmp_path.glob("*.log"))[-1]
    with open(segment, "ab") as f:
        f.write(encode_record(_record("req_torn"))[:40])  # what an OS crash mid-write can leave
    again = Journal(tmp_path)
    lines, _ = _lines(again, again.checkpoint)
    assert [decode_record(x).id for x in lines] == ["req_whole"]
    again.close()


def test_one_process_per_journal_directory(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    with pytest.raises(JournalLocked):
        Journal(tmp_path)
    j.close()
    Journal(tmp_path).close()


def test_any_text_becomes_a_storable_record(tmp_path: Path) -> None:
    rec = _record("req_text", key_name="a\x00b", error_message="bad \ud800 surrogate\x00",
                  labels={"team\x00": "x\udfff"},
                  attempts=(Attempt(provider="p\x00", model="m", status=500, latency_ms=1.0, error="E"),))
    back = decode_record(encode_record(rec))
    assert back.key_name == "a\ufffdb" and back.error_message == "bad ? surrogate\ufffd"
    assert back.labels == {"team\ufffd": "x?"} and back.attempts[0].provider == "p\ufffd"
    clean = _record("req_clean")
    assert decode_record(encode_record(clean)) == clean  # and a clean record is exactly itself


# A 429's line as the version before `error_code` journaled it (25 fields, attempts as objects).
OLD_LINE = (b'["req_old",1700000000000,"k1","key",{"team":"a"},["t/u"],"chat","m","m","p",429,'
            b'"rate_limit_error","slow down",false,false,0,0,0,0,0,0,null,10,null,'
            b'[{"target":"m","provider":"p","model":"m","status":429,"latency_ms":1.5,"error":"UpstreamHTTPError"}]]\n')


def test_a_journal_line_from_before_error_code_replays(tmp_path: Path) -> None:
    old = decode_record(OLD_LINE)
    assert (old.status, old.error_type, old.error_code) == (429, "rate_limit_error", None)
    directory = tmp_path / "journal"
    j = Journal(directory / "0", fsync="off")  # what the previous version left behind, unwritten
    j.append(OLD_LINE)
    j.close()
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)

    async def restart() -> None:
        writer = LedgerWriter(engine, journal_dir=directory)
        await writer.start()  # replays the old line
        writer.record(_record("req_new", status=402, error_type="budget_exceeded", error_code="budget_exceeded"))
        await writer.stop()

    asyncio.run(restart())
    logs = LogReader(engine)
    got = logs.get("req_old")
    new = logs.get("req_new")
    assert got is not None and new is not None
    assert got.record == old
    assert (new.record.error_type, new.record.error_code) == ("budget_exceeded", "budget_exceeded")
