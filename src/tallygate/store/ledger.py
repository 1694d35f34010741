"""The batched ledger writer: the hot path appends a record; one thread writes batches.

`record()` only appends to a list. A flusher task hands the list to a single writer thread
every `flush_ms` (or sooner when `batch` records are waiting), which inserts them in one
transaction with their tag rows and roll-ups (`store/ingest.py`), with ON CONFLICT DO NOTHING on
the request id and roll-ups only for records actually inserted, so a replayed batch cannot
double-count. A failed write is retried with backoff and its records kept; `close()` writes
everything still buffered (called on SIGTERM through the ASGI lifespan).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from tallygate.core.record import LedgerRecord
from tallygate.store.ingest import BatchIngest

log = logging.getLogger("tallygate.ledger")


class LedgerWriter:
    """Buffers ledger records in memory and writes them in batches off the event loop."""

    def __init__(self, engine: Engine, *, flush_ms: int = 50, batch: int = 1000) -> None:
        self._engine = engine
        self._interval = flush_ms / 1000.0
        self._batch = batch
        self._buf: list[LedgerRecord] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tallygate-ledger")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._ingest = BatchIngest(engine)  # raw rows, tag rows and roll-ups, exactly once
        self.written = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def request_finished(self, record: LedgerRecord) -> None:
        """A request observer: queue its record."""
        self.record(record)

    def record(self, rec: LedgerRecord) -> None:
        """Queue one ledger record. Never blocks."""
        self._buf.append(rec)
        if len(self._buf) == 1 or len(self._buf) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buf)

    async def _run(self) -> None:
        """Sleep until a record arrives, gather for `flush_ms` (less if a batch fills), write."""
        backoff = self._interval
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if len(self._buf) < self._batch and not self._closing:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except TimeoutError:
                    pass
                self._wake.clear()
            try:
                await self.flush()
                backoff = self._interval
            except Exception:
                log.exception("ledger write failed; %d records kept for retry", len(self._buf))
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)
                self._wake.set()

    async def flush(self) -> None:
        """Write everything buffered so far; on failure the records go back to the buffer."""
        if not self._buf:
            return
        batch, self._buf = self._buf, []
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._write_or_isolate, batch)
        except BaseException:
            self._buf[:0] = batch
            raise
        self.written += len(batch)

    async def drain(self) -> None:
        """Write everything buffered and wait for writes already in flight (the one writer
        thread runs them in order, so a no-op queued behind them finishes last)."""
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._pool, lambda: None)

    def _write_or_isolate(self, batch: list[LedgerRecord]) -> None:
        """Write a batch; if the database refuses it, write it record by record, so that one bad
        record cannot hold up the others. A record the database refuses for its content is logged
        in full and skipped; a database that is down or locked raises, and the batch is retried."""
        try:
            return self._write(batch)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            if len(batch) == 1:
                return self._skip(batch[0])
        for rec in batch:
            try:
                self._write([rec])
            except (OperationalError, InterfaceError):
                raise
            except Exception:
                self._skip(rec)

    def _skip(self, rec: LedgerRecord) -> None:
        log.exception("the database refused ledger record %s; it is kept only in this log: %s",
                      rec.id, orjson.dumps(rec._asdict(), default=str).decode())

    def _write(self, batch: list[LedgerRecord]) -> None:
        self._ingest.write(batch)

    async def stop(self) -> None:
        """Stop the flusher and write what is left (retrying a few times)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for attempt in range(5):
            try:
                await self.flush()
                break
            except Exception:
                log.exception("final ledger flush failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        self._pool.shutdown(wait=True)
