"""The records this run journaled, kept in memory with their journal positions, so that the ledger
writer takes them from here instead of reading their lines back and decoding them.

The journal stays the truth: every record is journaled first (`LedgerWriter.record`), and
whatever is not here (a previous run's records, the ones journaled while this was full, a record
whose position is not known) the writer reads from the journal as before (`take` says up to
where). At most `cap` records are kept: a database that is away makes the journal grow, never
this. The event loop adds, the writer thread takes: `deque` append and popleft are atomic.
"""

from __future__ import annotations

from collections import deque

from tallygate.core.record import LedgerRecord

Position = tuple[int, int]  # (journal segment, byte offset)


class Journaled:
    """Records in journal order, each with where its line starts and ends."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._items: deque[tuple[LedgerRecord, Position, Position]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, rec: LedgerRecord, start: Position, stop: Position) -> None:
        """(event loop) `rec` was journaled between `start` and `stop`; dropped when full."""
        if len(self._items) < self._cap:
            self._items.append((rec, start, stop))

    def take(self, checkpoint: Position, end: Position, limit: int) -> tuple[list[LedgerRecord], Position]:
        """(writer thread) The records from `checkpoint` on, not past `end`, at most `limit`, and
        the position after them. None here (an empty list): the position up to which the journal
        must be read instead (the next record kept here, or `end`)."""
        items = self._items
        while items and items[0][2] <= checkpoint:  # written already (read from the journal)
            items.popleft()
        if not items:
            return [], end
        first = items[0][1]
        if first != checkpoint:
            if first < checkpoint:  # out of step with the journal: trust the journal alone
                items.clear()
                return [], end
            return [], min(end, first)  # a gap (or a new segment): read it from the journal
        taken: list[LedgerRecord] = []
        position = checkpoint
        while items and len(taken) < limit:
            rec, start, stop = items[0]
            if start != position or stop > end:  # a gap, a new segment, or journaled after `end`
                break
            taken.append(rec)
            position = stop
            items.popleft()
        return (taken, position) if taken else ([], end)
