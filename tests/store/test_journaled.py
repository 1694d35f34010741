"""The ledger writer takes this run's records from memory, and the journal still has the last
word: what memory does not hold (dropped when full, across new segments, a previous run's
records) is read from the journal, each record written once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tallygate.store.db import migrate, open_engine
from tallygate.store.journaled import Journaled
from tallygate.store.ledger import LedgerWriter
from tests.records import make_record


def _count(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return (conn.exec_driver_sql("SELECT count(DISTINCT id) FROM requests").scalar_one(),
                conn.exec_driver_sql("SELECT sum(requests) FROM usage_rollup_month").scalar_one() or 0)


def test_the_writer_takes_this_runs_records_from_memory_not_back_from_the_journal(tmp_path: Path) -> None:
    """Journal lines garbled on disk after they were written: the records still reach the
    database whole, so they were not read back (a read-back would skip them as unreadable)."""
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)

    async def run() -> None:
        writer = LedgerWriter(engine, flush_ms=60_000, journal_dir=tmp_path / "journal")
        await writer.start()
        for i in range(50):
            writer.record(make_record(id=f"req_{i:03d}", created_at=1_700_000_000_000 + i, tags=["a/b"]))
        for segment in writer.journal.dir.glob("*.log"):
            data = segment.read_bytes()
            segment.write_bytes(bytes(b if b == ord("\n") else ord("#") for b in data))
        await writer.flush()
        assert writer.journal.backlog == 0
        await writer.stop()

    asyncio.run(run())
    assert _count(engine) == (50, 50)


def test_records_memory_dropped_or_split_across_segments_are_read_from_the_journal_once(tmp_path: Path) -> None:
    """Memory holds at most `max_batch` records and the journal starts a new segment every few
    records: every record is written exactly once, from memory or from the journal."""
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    sizes: list[int] = []

    async def run() -> None:
        writer = LedgerWriter(engine, flush_ms=5, batch=20, max_batch=70, segment_bytes=2048,
                              journal_dir=tmp_path / "journal")
        writer.on_write = lambda count, _seconds: sizes.append(count)
        await writer.start()
        for i in range(600):
            writer.record(make_record(id=f"req_{i:04d}", created_at=1_700_000_000_000 + i))
            if i % 97 == 0:
                await asyncio.sleep(0.02)  # let the writer run between bursts
        await writer.flush()
        assert writer.journal.backlog == 0 and writer.pending == 0
        await writer.stop()

    asyncio.run(run())
    assert _count(engine) == (600, 600)
    assert sum(sizes) == 600 and max(sizes) <= 70


def test_a_previous_runs_records_are_replayed_from_the_journal_before_this_runs(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/l.db")
    migrate(engine)
    journal = tmp_path / "journal"

    async def crashed() -> None:  # journals records, and never writes them (a killed process)
        writer = LedgerWriter(engine, flush_ms=60_000, journal_dir=journal)
        await writer.start()
        for i in range(30):
            writer.record(make_record(id=f"old_{i:03d}", created_at=1_700_000_000_000 + i))
        writer.journal.close()

    async def restarted() -> None:
        writer = LedgerWriter(engine, flush_ms=60_000, journal_dir=journal)
        await writer.start()
        assert _count(engine) == (30, 30)  # replayed at start
        for i in range(30):
            writer.record(make_record(id=f"new_{i:03d}", created_at=1_700_000_000_000 + i))
        await writer.stop()

    asyncio.run(crashed())
    asyncio.run(restarted())
    assert _count(engine) == (60, 60)


def test_take_gives_contiguous_records_from_the_checkpoint_or_says_how_far_to_read() -> None:
    kept = Journaled(cap=3)
    recs = [make_record(id=f"req_{i}") for i in range(5)]
    kept.add(recs[0], (1, 0), (1, 10))
    kept.add(recs[1], (1, 10), (1, 20))
    kept.add(recs[2], (2, 0), (2, 10))  # the journal went on in a new segment
    kept.add(recs[3], (2, 10), (2, 20))  # full: dropped (the journal has it)
    assert len(kept) == 3
    assert kept.take((1, 0), (1, 10), 10) == ([recs[0]], (1, 10))  # not past `end`
    assert kept.take((1, 10), (2, 20), 10) == ([recs[1]], (1, 20))  # stops at the new segment
    assert kept.take((1, 20), (2, 20), 10) == ([], (2, 0))  # read the journal up to the next one kept
    assert kept.take((2, 0), (2, 20), 10) == ([recs[2]], (2, 10))
    assert kept.take((2, 10), (2, 20), 10) == ([], (2, 20))  # dropped: all from the journal
    kept.add(recs[4], (2, 20), (2, 30))
    assert kept.take((2, 25), (2, 40), 10) == ([], (2, 40))  # out of step: the journal alone
    assert len(kept) == 0
