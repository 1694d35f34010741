"""The ledger writer: the hot path journals a record; one thread moves the journal to the database.

`record()` appends the record to the local journal (`store/journal.py`: one `os.write`, so the
kernel has it before the response's last byte leaves) and keeps it in memory with its journal
position (`store/journaled.py`, at most `max_batch` records: whatever happens to the database,
only the journal grows). A flusher task wakes when records arrive, gathers for `flush_ms` (less
when `batch` records are waiting) and has a single writer thread take the records from the
journal's checkpoint on in batches of whatever is waiting (up to `max_batch`: a writer that fell
behind catches up with bigger, cheaper transactions): from memory, without reading and decoding
their lines back, or from the journal for what memory does not hold (a previous run's records,
those journaled while memory was full). It inserts each batch in one transaction with its tag rows
and roll-ups (`store/ingest.py`: ON CONFLICT DO NOTHING on the request id, roll-ups only for
records actually inserted), and move the checkpoint. A database that is down or locked is
retried with backoff for as long as it takes; the journal holds the records meanwhile, up to
its size cap (`refusal()`: the proxy then answers 503 `ledger_unavailable`). `replay()` at start-up
writes whatever a previous run left in the journal, exactly once; `stop()` (SIGTERM, through
the ASGI lifespan) writes what it can and leaves the rest in the journal for the next start.

When the journal's disk refuses a write (full, failing, read-only), a record that would answer a
request successfully is not taken: `record()` raises `JournalUnavailable`, and the call is
answered 503 instead (`Call.finish()`). The record of an error answer, and that 503, wait in
memory (bounded). From then on `refusal()` turns requests away with 503 `journal_unavailable`
before any provider is called, until the healer, every `HEAL_S`, has journaled what waits in
memory and `Journal.probe()` finds the disk writable again: no restart.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from tallygate.core.record import LedgerRecord
from tallygate.errors import GatewayError, JournalUnavailable, LedgerUnavailable
from tallygate.store.ingest import BatchIngest
from tallygate.store.journal import Journal
from tallygate.store.journaled import Journaled
from tallygate.store.record_codec import Unreadable, decode_record, encode_record, salvage

log = logging.getLogger("tallygate.ledger")
Position = tuple[int, int]
HEAL_S = 0.5  # how often a journal that refused a write is tried again
MAX_HELD = 10_000  # records kept in memory while the journal refuses writes


def _for_content(exc: Exception) -> bool:
    """Whether a write failed for what the record holds (a data or constraint error, or an error
    raised before the database saw it), rather than for the database's state."""
    if isinstance(exc, (DataError, IntegrityError)):
        return True
    if isinstance(exc, DBAPIError | OSError):
        return False
    return isinstance(exc, StatementError) or not isinstance(exc, SQLAlchemyError)  # (not: a pool timeout)


def _described(exc: Exception) -> str:
    """A write failure, named without its message (which may name hosts and users): the driver's
    error class and the SQLSTATE when there is one."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None)
    return f"{type(orig).__name__}{f' (SQLSTATE {state})' if state else ''}"


class LedgerWriter:
    """Journals ledger records and writes them to the database in batches off the event loop.

    The journal in `journal_dir` is opened (and what it holds replayed) by `start()`. Without a
    `journal_dir` (tests, benchmarks) a throw-away one in a temporary directory is used."""

    def __init__(self, engine: Engine, *, flush_ms: int = 250, batch: int = 1000,
                 journal_dir: str | Path | None = None, fsync: str = "batch",
                 max_bytes: int = 1 << 30, max_batch: int | None = None, segment_bytes: int = 8 << 20) -> None:
        self._engine = engine
        self._interval = flush_ms / 1000.0
        self._batch = batch
        self._max_batch = max_batch or 25 * batch
        self._own_journal = journal_dir is None
        self._journal_args = (journal_dir, "off" if journal_dir is None else fsync, max_bytes, segment_bytes)
        self.journal: Journal = None  # type: ignore[assignment]  # opened by start()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tallygate-ledger")
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._ingest = BatchIngest(engine)  # raw rows, tag rows and roll-ups, exactly once
        self._journaled = Journaled(self._max_batch)  # this run's records, not to read back from the journal
        self._pending = 0
        self.written = 0
        self.on_write: Callable[[int, float], None] | None = None  # (records, seconds) per batch written
        # (request id, cost) of each record a previous run left in the journal, once written: a
        # shared budget counts the costs its killed process never settled (blocking, writer thread)
        self.on_replayed: Callable[[list[tuple[str, int]]], object] | None = None
        self._left: Position = (0, 0)  # the end of what a previous run left in the journal
        self.failing = False  # the last write failed (the database is away or refuses writes)
        self.error: str | None = None  # why, without anything secret (for `/readyz`)
        self.on_failure: Callable[[], None] | None = None  # a write failed (records wait in the journal)
        self._held: deque[LedgerRecord] = deque()  # records the journal refused, to journal when it can
        self._healer: asyncio.Task[None] | None = None
        self._outage = False  # the journal refused a write and has not been found writable since

    async def start(self) -> None:
        """Open the journal, write what a previous run left in it (before spend is loaded from
        the database), then start the flusher."""
        directory, fsync, max_bytes, segment_bytes = self._journal_args
        self.journal = Journal.claim(directory or tempfile.mkdtemp(prefix="tallygate-journal-"), fsync=fsync,
                                     max_bytes=max_bytes, segment_bytes=segment_bytes)
        self._left = self.journal.end
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self.replay)
        except Exception as exc:  # the database is away: the flusher keeps trying
            log.error("replaying the ledger journal failed (%s); retrying in the background",
                      type(exc).__name__)
            self.failing = True
        self._task = loop.create_task(self._run())
        self._healer = loop.create_task(self._heal())
        if self.journal.backlog:
            self._wake.set()

    def request_finished(self, record: LedgerRecord) -> None:
        """A request observer: journal its record."""
        self.record(record)

    def record(self, rec: LedgerRecord) -> None:
        """Journal one ledger record. Never blocks on the database. If the disk refuses: a
        success (status < 400) raises `JournalUnavailable` (it must not be answered); any other
        record waits in memory until the journal takes writes again."""
        line = encode_record(rec)
        try:
            self._append(rec, line)
        except OSError:
            if not self._outage:
                self._outage = True
                log.error("the ledger journal %s refuses writes (%s): requests are refused with 503 until "
                          "it takes them again", self.journal.dir, self.journal.error)
            if rec.status < 400:
                raise JournalUnavailable("the gateway cannot record requests now (its ledger journal "
                                         f"cannot be written: {self.journal.error}); retry later") from None
            self._hold(rec, line)
            return
        self._pending += 1
        if self._pending == 1 or self._pending >= self._batch:
            self._wake.set()

    def _append(self, rec: LedgerRecord, line: bytes) -> None:
        """Journal one record's line and keep the record in memory with its position, when that is
        known (a failed write's clean-up may have moved the journal to a new segment first)."""
        j = self.journal
        start = j.end
        j.append(line)
        stop = (start[0], start[1] + len(line))
        end = j.end
        if end == stop or end == (start[0] + 1, 0):  # (the append may start a new segment after it)
            self._journaled.add(rec, start, stop)

    def _hold(self, rec: LedgerRecord, line: bytes) -> None:
        if len(self._held) < MAX_HELD:
            self._held.append(rec)
        else:
            log.error("cannot journal ledger record %s; it is kept only in this log: %s", rec.id, line.decode())

    @property
    def pending(self) -> int:
        """Records of this run journaled but not yet in the database."""
        return self._pending

    def refusal(self) -> GatewayError | None:
        """Why no request that needs a record can be taken now (None: they can): the journal's
        disk refuses writes, or its backlog has reached its cap."""
        j = self.journal
        if j is None:
            return None
        if j.error is not None or self._held:
            return JournalUnavailable("the gateway cannot record requests now (its ledger journal cannot be "
                                      f"written: {j.error or 'records wait in memory'}); retry later")
        if j.full:
            return LedgerUnavailable("the ledger cannot record requests now (its database has been away "
                                     "too long); retry later")
        return None

    @property
    def full(self) -> bool:
        """The journal cannot take the record of another request (see `refusal`)."""
        return self.refusal() is not None

    def status(self) -> dict[str, object]:
        """The backlog, for `/readyz` and the logs."""
        j = self.journal
        return {"pending_records": self._pending, "backlog_bytes": j.backlog if j else 0,
                "max_bytes": j.max_bytes if j else self._journal_args[2], "full": self.full,
                "journal_error": j.error if j else None, "held_records": len(self._held),
                "database_failing": self.failing, "database_error": self.error, "written": self.written}

    async def _heal(self) -> None:
        """Every `HEAL_S` while the journal refuses writes: journal what waits in memory, then
        see whether the disk takes writes again."""
        while not self._closing:
            await asyncio.sleep(HEAL_S)
            if self.journal.error is not None or self._held:
                self.heal()

    def heal(self) -> bool:
        """Journal the records held in memory and probe the journal; True if it takes writes."""
        j = self.journal
        while self._held:
            try:
                self._append(self._held[0], encode_record(self._held[0]))
            except OSError:
                return False
            self._held.popleft()
            self._pending += 1
            self._wake.set()
        if j.error is None or j.probe():
            self._outage = False
            log.info("the ledger journal %s takes writes again; requests are served", j.dir)
            return True
        return False

    async def _run(self) -> None:
        """Sleep until a record arrives, gather for `flush_ms` (less if a batch fills), write."""
        backoff = self._interval
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._pending < self._batch and not self._closing:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except TimeoutError:
                    pass
                self._wake.clear()
            try:
                await self.flush()
                backoff = self._interval
                if self._pending:  # records journaled while that flush ran
                    self._wake.set()
            except Exception as exc:
                if not self.failing:
                    log.error("ledger write failed (%s: %s); %d records wait in the journal %s and are "
                              "retried", type(exc).__name__, exc, self._pending, self.journal.dir)
                self.failing, self.error = True, _described(exc)
                if self.on_failure is not None:
                    self.on_failure()
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)
                self._wake.set()

    async def flush(self) -> None:
        """Write everything journaled so far (in batches). Raises if the database fails; the
        records stay in the journal."""
        async with self._lock:
            end = self.journal.end
            loop = asyncio.get_running_loop()
            while self.journal.checkpoint < end:
                started = time.perf_counter()
                count, position = await loop.run_in_executor(self._pool, self._move, end)
                self.journal.advance(position)
                self.written += count
                if self.on_write is not None and count:
                    self.on_write(count, time.perf_counter() - started)
                self._pending = max(0, self._pending - count)
            if self.failing:
                log.info("ledger writes resumed; the journal backlog is written")
                self.failing, self.error = False, None

    async def drain(self) -> None:
        """Write everything journaled so far and wait for it (feedback on a fresh request)."""
        await self.flush()

    def replay(self) -> int:
        """Write what a previous run left in the journal (blocking; call at start-up, before
        budgets are loaded from the database). Returns how many records that was."""
        end, moved = self.journal.end, 0
        while self.journal.checkpoint < end:
            count, position = self._move(end)
            self.journal.advance(position)
            moved += count
        if moved:
            log.info("replayed %d ledger records from the journal %s", moved, self.journal.dir)
        return moved

    def _move(self, end: Position) -> tuple[int, Position]:
        """(writer thread) Take one batch from the checkpoint on (from memory, else read from the
        journal), write it, return (count, position). A batch of what a previous run left is read
        alone, and handed to `on_replayed` once written."""
        self.journal.sync()
        checkpoint = self.journal.checkpoint
        replayed = checkpoint < self._left
        if not replayed:
            kept, position = self._journaled.take(checkpoint, end, self._max_batch)
            if kept:
                self._write_or_isolate(kept)
                return len(kept), position
            end = position  # read the journal up to what memory holds
        lines, position = self.journal.read(checkpoint, min(end, self._left) if replayed else end,
                                            self._max_batch)
        batch = []
        for line in lines:
            try:
                batch.append(decode_record(line))
            except Unreadable:
                behind = salvage(line)  # a whole record behind the bytes of a torn write
                if behind is not None:
                    batch.append(behind)
                log.error("unreadable journal bytes skipped%s: %r",
                          f" (the record {behind.id} behind them is kept)" if behind else "", line[:2000])
        if batch:
            self._write_or_isolate(batch)
            if replayed and self.on_replayed is not None:
                self._replayed(batch)
        return len(lines), position

    def _replayed(self, batch: list[LedgerRecord]) -> None:
        assert self.on_replayed is not None
        try:
            self.on_replayed([(rec.id, rec.cost_pico) for rec in batch])
        except Exception as exc:  # Redis away: its counters may lack these costs until rebuilt
            log.error("settling the %d replayed ledger records in the shared budget failed (%s: %s)",
                      len(batch), type(exc).__name__, exc)

    def _write_or_isolate(self, batch: list[LedgerRecord]) -> None:
        """Write a batch; if the database refuses it, write it record by record, so that one bad
        record cannot hold up the others. A record the database refuses for its content (a data
        or constraint error, or one raised before the database saw it) is logged in full and
        skipped; a database that is down, locked or refusing writes (read-only, permissions, a
        full disk) raises, and the batch stays in the journal to be retried."""
        try:
            return self._write(batch)
        except Exception as exc:
            if not _for_content(exc):
                raise
            if len(batch) == 1:
                return self._skip(batch[0])
        for rec in batch:
            try:
                self._write([rec])
            except Exception as exc:
                if not _for_content(exc):
                    raise
                self._skip(rec)

    def _skip(self, rec: LedgerRecord) -> None:
        log.exception("the database refused ledger record %s; it is kept only in this log: %s",
                      rec.id, encode_record(rec).decode())

    def _write(self, batch: list[LedgerRecord]) -> None:
        self._ingest.write(batch)

    async def stop(self) -> None:
        """Stop the flusher and write what is left (a few tries); what the database does not
        take stays in the journal for the next start."""
        self._closing = True
        self._wake.set()
        if self._healer is not None:
            self._healer.cancel()
            await asyncio.gather(self._healer, return_exceptions=True)
        if self._held and not self.heal():
            for rec in self._held:
                log.error("cannot journal ledger record %s; it is kept only in this log: %s", rec.id,
                          encode_record(rec).decode())
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for attempt in range(3):
            try:
                await self.flush()
                break
            except Exception as exc:
                log.warning("final ledger flush failed (attempt %d): %s", attempt + 1, type(exc).__name__)
                await asyncio.sleep(0.2 * (attempt + 1))
        self._pool.shutdown(wait=True)
        if self.journal is None:
            return
        if self.journal.backlog:
            log.warning("%d ledger records (%d bytes) stay in the journal %s: they are written at the "
                        "next start", self._pending, self.journal.backlog, self.journal.dir)
        self.journal.close()
        if self._own_journal and not self.journal.backlog:
            shutil.rmtree(self.journal.dir.parent, ignore_errors=True)
