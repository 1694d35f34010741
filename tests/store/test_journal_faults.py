"""A disk that fills up or fails under the journal loses no acknowledged record: a failed write
leaves no torn bytes behind, the journal says why it refuses and takes writes again by itself,
torn bytes an older version left never hide the record behind them, and segments already in
the database are released at once. On a real small filesystem (tmpfs) and with an injected EIO."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tallygate.core.record import LedgerRecord
from tallygate.errors import JournalUnavailable
from tallygate.store import journal as journal_module
from tallygate.store.db import migrate, open_engine
from tallygate.store.journal import Journal
from tallygate.store.ledger import HEAL_S, LedgerWriter
from tallygate.store.logs import LogReader
from tallygate.store.record_codec import decode_record, encode_record
from tests.records import make_record
from tests.store.small_disk import fill, small_disk


def _record(rid: str, **fields: Any) -> LedgerRecord:
    return make_record(id=rid, created_at=1_700_000_000_000, error_message="x" * 900, **fields)  # ~1.3 kB a line


def _ids(journal: Journal) -> list[str]:
    lines, _ = journal.read(journal.checkpoint, journal.end, 1_000_000)
    return [decode_record(line).id for line in lines]


def _segment_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.log"))


def test_a_disk_that_fills_mid_record_keeps_every_acknowledged_record_whole(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        j = Journal(disk / "0", fsync="batch")
        fill(disk, leave=100_000)
        acked: list[str] = []
        for i in range(1000):
            try:
                j.append(encode_record(_record(f"req_{i:05d}")))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
            acked.append(f"req_{i:05d}")
        else:
            pytest.fail("the disk never filled")
        segment = max((disk / "0").glob("*.log"))
        assert segment.stat().st_size == j.end[1]  # no torn bytes behind the last whole record
        assert j.error is not None and j.error.startswith("ENOSPC")
        assert not j.probe()  # still full
        (disk / "filler").unlink()  # room comes back
        assert j.probe() and j.error is None
        for i in range(1000, 1050):
            j.append(encode_record(_record(f"req_{i:05d}")))
            acked.append(f"req_{i:05d}")
        assert _ids(j) == acked
        j.close()
        again = Journal(disk / "0")  # a restart replays every acknowledged record, whole
        assert _ids(again) == acked
        again.close()


class _FailingOS(ModuleType):
    """`os` as the journal sees it, but the disk answers EIO: a write takes half the line first."""

    def __init__(self, fail: str) -> None:
        super().__init__("os")
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.fail == "write":
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.EIO, "Input/output error")
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.fail == "fdatasync":
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if self.fail == "pwrite":
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwrite(fd, data, offset)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        if self.fail == "open" and str(path).endswith(".log"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.open(path, flags, mode)


@pytest.mark.parametrize(("fsync", "fail"), [("batch", "write"), ("always", "fdatasync")])
def test_an_injected_eio_refuses_the_record_whole_and_the_journal_heals(tmp_path: Path, fsync: str, fail: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path, fsync=fsync)
    for i in range(3):
        j.append(encode_record(_record(f"req_{i}")))
    monkeypatch.setattr(journal_module, "os", _FailingOS(fail))
    with pytest.raises(OSError) as refused:
        j.append(encode_record(_record("req_refused")))
    assert refused.value.errno == errno.EIO
    assert max(tmp_path.glob("*.log")).stat().st_size == j.end[1]  # nothing of it stays
    assert j.error is not None and j.error.startswith("EIO")
    monkeypatch.setattr(journal_module, "os", os)  # the disk is back
    assert j.probe() and j.error is None
    j.append(encode_record(_record("req_3")))
    assert _ids(j) == ["req_0", "req_1", "req_2", "req_3"]
    j.close()


def test_a_checkpoint_the_disk_refuses_only_means_records_are_read_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path, fsync="batch")
    for i in range(5):
        j.append(encode_record(_record(f"req_{i}")))
    _, position = j.read(j.checkpoint, j.end, 3)
    monkeypatch.setattr(journal_module, "os", _FailingOS("pwrite"))
    j.advance(position)  # the database has req_0..2; the checkpoint file keeps its old value
    assert _ids(j) == ["req_3", "req_4"] and j.error is None  # requests are still taken
    monkeypatch.setattr(journal_module, "os", os)
    j.close()
    again = Journal(tmp_path)  # nothing is skipped: the database ignores the ids it has
    assert _ids(again) == [f"req_{i}" for i in range(5)]
    again.close()


def test_a_segment_that_cannot_be_started_leaves_the_current_one_in_use(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path, fsync="batch", segment_bytes=4 << 10)
    monkeypatch.setattr(journal_module, "os", _FailingOS("open"))
    for i in range(10):  # each append past 4 kB tries to rotate, and goes on in the same segment
        j.append(encode_record(_record(f"req_{i}")))
    monkeypatch.setattr(journal_module, "os", os)
    j.append(encode_record(_record("req_10")))  # and rotates once it can
    assert len(list(tmp_path.glob("*.log"))) == 2
    assert _ids(j) == [f"req_{i}" for i in range(11)]
    j.close()


def test_the_ledger_refuses_a_success_it_cannot_journal_and_heals_without_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)

    async def run() -> None:
        writer = LedgerWriter(engine, journal_dir=tmp_path / "journal")
        await writer.start()
        writer.record(_record("req_before"))
        monkeypatch.setattr(journal_module, "os", _FailingOS("write"))
        with pytest.raises(JournalUnavailable):
            writer.record(_record("req_success"))  # must not be answered
        writer.record(_record("req_refused", status=503, error_code="journal_unavailable"))  # waits in memory
        refusal = writer.refusal()
        assert isinstance(refusal, JournalUnavailable) and "EIO" in refusal.message
        assert writer.status()["journal_error"] is not None
        monkeypatch.setattr(journal_module, "os", os)
        for _ in range(int(10 / HEAL_S)):
            await asyncio.sleep(HEAL_S)
            if writer.refusal() is None:
                break
        assert writer.refusal() is None  # healed by itself
        writer.record(_record("req_after"))
        await writer.stop()

    asyncio.run(run())
    logs = LogReader(engine)
    assert all(logs.get(rid) is not None for rid in ("req_before", "req_refused", "req_after"))
    assert logs.get("req_success") is None


@pytest.mark.parametrize("version", ["named", "positional"])
def test_a_torn_write_an_older_version_left_does_not_hide_the_record_behind_it(tmp_path: Path, version: str) -> None:
    whole = [encode_record(_record(f"req_{i}")) for i in range(3)]
    if version == "positional":  # as 268846c journaled: a JSON array (see fixtures/journal_268846c)
        whole = [next((Path(__file__).parent / "fixtures" / "journal_268846c" / "0").glob("*.log")).read_bytes()
                 .splitlines(keepends=True)[i] for i in range(3)]
    slot = tmp_path / "journal" / "0"
    slot.mkdir(parents=True)
    # A write torn by a full disk, and the next record appended right behind it.
    (slot / f"{1:020d}.log").write_bytes(whole[0] + whole[1][:200] + whole[1] + whole[2])
    engine = open_engine(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)

    async def restart() -> None:
        writer = LedgerWriter(engine, journal_dir=tmp_path / "journal")
        await writer.start()
        await writer.stop()

    asyncio.run(restart())
    logs = LogReader(engine)
    for line in whole:
        assert logs.get(decode_record(line).id) is not None


def test_segments_already_in_the_database_are_released_at_once(tmp_path: Path) -> None:
    j = Journal(tmp_path, fsync="batch", segment_bytes=32 << 10, release_bytes=4 << 10)
    for i in range(10):
        j.append(encode_record(_record(f"req_{i}")))
    assert _segment_bytes(tmp_path) > 10_000  # all in the active segment
    _, position = j.read(j.checkpoint, j.end, 1000)
    j.advance(position)  # all of it is in the database
    j.prepare()  # the writer thread unlinks what is behind the checkpoint
    assert _segment_bytes(tmp_path) == 0 and j.backlog == 0
    for i in range(10, 110):
        j.append(encode_record(_record(f"req_{i}")))
    _, position = j.read(j.checkpoint, j.end, 60)
    j.advance(position)
    j.prepare()
    assert _segment_bytes(tmp_path) <= j.backlog + (32 << 10)  # the backlog and what is done of one segment
    assert _ids(j) == [f"req_{i}" for i in range(70, 110)]
    j.close()
