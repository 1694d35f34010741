"""Keeping a columnar copy of the ledger: what to copy, and how to know the copy is complete.

The ledger (SQLite or PostgreSQL) stays the record of truth; a columnar engine
(`analytics/columnar.py`, `analytics/clickhouse.py`) holds a copy of its settled part and
answers questions from it. `Mirror` is the engine-neutral bookkeeping of that copy:

* records whose `created_at` is before `watermark` are copied, once, in time order, in chunks
  (`copy_range`). Records younger than `SETTLED_MS` are not copied yet: a request is recorded
  when it ends, so records of a still-open minute keep arriving; the reader takes that tail from
  the ledger itself.
* every sync also compares the copy's count per UTC hour with the ledger's own (the hour
  roll-up's every-request row, written in the same transaction as the records): an hour that
  differs (a record replayed from the journal after a crash, a record that took longer than
  `SETTLED_MS` to arrive) is copied again whole; so is the watermark's own hour, up to the
  watermark, when the ledger holds more of it than was copied. Records are never updated in place; a
  feedback score is, and is copied by its `updated_at`.

The copy is therefore exact for every hour before the watermark whose count matches, which is
every hour after a sync. A sync that finds nothing new writes nothing to the copy: the watermark
moves on in memory and is stored with the next records copied (a restart copies the empty
stretch again, which replaces nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Text, cast, func, select

from tallygate.analytics.columnar_sql import ColumnarQuestion
from tallygate.core.metrics import Agg
from tallygate.core.timebuckets import HOUR_MS
from tallygate.store.hours import records_between
from tallygate.store.schema import api_keys, dim_rollups, feedback, label_sets, requests

SETTLED_MS = 600_000  # records younger than this may still arrive: read from the ledger (as `cover.py`)
CHUNK_MS = 6 * HOUR_MS  # one copy transaction: 6 hours (about 80,000 records at 10M a month)

# The columns copied, in order: what a question can group, filter or sum by.
COLUMNS = ("id", "created_at", "key_id", "label_set", "tags", "requested_model", "served_model", "provider",
           "status", "error_code", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
           "reasoning_tokens", "cost_pico", "latency_us", "ttft_us")
_SELECT = [requests.c[name] if name != "tags" else cast(requests.c.tags, Text) for name in COLUMNS]


class Sink(Protocol):
    """What a columnar engine offers the mirror: replace a time range's records, and small tables."""

    def replace_range(self, from_ms: int, to_ms: int, rows: list[tuple[Any, ...]]) -> None: ...

    def hour_counts(self) -> dict[int, int]: ...

    def set_feedback(self, rows: list[tuple[str, int]]) -> None: ...

    def set_labels(self, label_sets: dict[str, dict[str, Any]], key_labels: dict[str, dict[str, Any]]) -> None: ...

    def get_meta(self, name: str) -> int | None: ...

    def set_meta(self, name: str, value: int) -> None: ...

    def settle(self, watermark: int) -> int: ...


class ColumnarEngine(Sink, Protocol):
    """A columnar engine: the mirror's sink, and the answer to one question over its copy."""

    name: str

    def answer(self, question: ColumnarQuestion) -> dict[tuple[Any, ...], Agg]: ...

    def count(self) -> int: ...

    def keys(self, question: ColumnarQuestion, after: tuple[int, str] | None, limit: int) -> list[tuple[int, str]]: ...

    def minutes(self, from_ms: int, to_ms: int) -> list[tuple[int, int, int, int]]: ...


def ledger_rows(conn: Connection, from_ms: int, to_ms: int) -> list[tuple[Any, ...]]:
    """The ledger's records in [from, to), as `COLUMNS` (tags as their JSON text)."""
    c = requests.c
    query = select(*_SELECT).where(c.created_at >= from_ms, c.created_at < to_ms)
    return [tuple(r) for r in conn.execute(query)]


def label_value(value: Any) -> str | None:
    """A label's value as the columnar engines keep it (text)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


class Mirror:
    """Copies the settled ledger into a `Sink` and repairs the hours whose counts differ."""

    def __init__(self, engine: Engine, sink: Sink) -> None:
        self.engine = engine
        self.sink = sink
        self.counts: dict[int, int] = sink.hour_counts()  # the copy's records per UTC hour
        self._sets_seen = -1
        self._keys_seen: tuple[int, int] = (-1, -1)
        mark = sink.get_meta("watermark") or 0
        # the watermark and the records copied in its own hour before it, published together: a sync
        # adds a chunk's records to `counts` before it moves the watermark past them
        self._open = (mark, self.counts.get(mark - mark % HOUR_MS, 0))
        self._feedback_seen: tuple[int, set[str]] = (-1, set())  # the last score time copied, its ids
        self.repairs = 0  # hours copied again so far (what was counted from the copy before may have changed)
        self.side_synced = False  # the label sets and scores have been copied once since it was opened
        self.stopping = False  # set at shutdown: a sync stops after the chunk it is copying

    @property
    def watermark(self) -> int:
        """Records before this time are in the copy (0: nothing copied yet)."""
        return self._open[0]

    @property
    def open_hour(self) -> tuple[int, int]:
        """The watermark and how many records of its own hour before it the copy holds, as of one
        moment (`counts` of that hour may already hold the next chunk's records: it runs ahead)."""
        return self._open

    def _advance(self, mark: int, *, store: bool) -> None:
        self._open = (mark, self.counts.get(mark - mark % HOUR_MS, 0))  # nothing at or after `mark` is copied yet
        if store:
            self.sink.set_meta("watermark", mark)

    def sync(self, now_ms: int) -> int:
        """Bring the copy up to `now_ms - SETTLED_MS`; returns the records copied."""
        target = now_ms - SETTLED_MS
        copied = 0
        with self.engine.connect() as conn:
            self._sync_labels(conn)
            self._sync_feedback(conn)
            self.side_synced = True
            start = self.watermark
            if start == 0:
                first = conn.execute(select(func.min(requests.c.created_at))).scalar()
                if first is None:
                    return 0
                start = int(first) - int(first) % HOUR_MS
            for lo, hi in _chunks(start, target):
                if self.stopping:
                    return copied
                n = self._copy(conn, lo, hi)
                self._advance(hi, store=n > 0)
                copied += n
            copied += self._repair(conn)
            # again after the records: the label sets and scores of records that arrived while they
            # were copied (a first copy takes minutes) are in the copy when the sync ends
            self._sync_labels(conn)
            self._sync_feedback(conn)
        if not self.stopping:
            self.sink.settle(self.watermark)  # what the engine derives from settled days (DuckDB: its tag roll-up)
        return copied

    def _copy(self, conn: Connection, lo: int, hi: int, *, whole_hours: bool = False) -> int:
        """Copy [lo, hi): past the watermark (the copy holds nothing there: an empty range writes
        nothing), or `whole_hours` again (their counts are replaced)."""
        rows = ledger_rows(conn, lo, hi)
        if not rows and not whole_hours:
            return 0
        self.sink.replace_range(lo, hi, rows)
        if whole_hours:
            for hour in range(lo - lo % HOUR_MS, hi, HOUR_MS):
                self.counts.pop(hour, None)
        for row in rows:
            hour = row[1] - row[1] % HOUR_MS
            self.counts[hour] = self.counts.get(hour, 0) + 1
        return len(rows)

    def _repair(self, conn: Connection) -> int:
        """Copy again every whole hour before the watermark whose count differs from the ledger's,
        and the watermark's own hour up to it if its count does."""
        mark = self.watermark
        t = dim_rollups["hour"]
        ledger = dict(conn.execute(select(t.c.bucket, t.c.requests).where(t.c.dim == "", t.c.value == "",
                                                                           t.c.bucket < mark - mark % HOUR_MS)).all())
        stale = [h for h in set(ledger) | {h for h in self.counts if h < mark - mark % HOUR_MS}
                 if ledger.get(h, 0) != self.counts.get(h, 0)]
        copied = 0
        for hour in sorted(stale):
            if self.stopping:
                break
            copied += self._copy(conn, hour, hour + HOUR_MS, whole_hours=True)
        part = mark - mark % HOUR_MS  # the watermark's own hour, copied up to the watermark
        if part < mark and not self.stopping and records_between(conn, part, mark) != self.counts.get(part, 0):
            copied += self._copy(conn, part, mark, whole_hours=True)
            self._open = (mark, self.counts.get(part, 0))
            stale.append(part)
        self.repairs += len(stale)
        return copied

    @staticmethod
    def _labels_seen(conn: Connection) -> tuple[int, tuple[int, int]]:
        n_sets = conn.execute(select(func.count()).select_from(label_sets)).scalar_one()
        keys = conn.execute(select(func.count(), func.coalesce(func.max(api_keys.c.updated_at), 0))
                            .select_from(api_keys)).one()
        return int(n_sets), (int(keys[0]), int(keys[1]))

    def side_tables_current(self, conn: Connection) -> bool:
        """Whether the copy holds the ledger's label sets, keys' labels and scores as they are now
        (a sync copies them; this only reads, from any thread)."""
        if self._labels_seen(conn) != (self._sets_seen, self._keys_seen):
            return False
        last = conn.execute(select(func.max(feedback.c.updated_at))).scalar()
        return last is None or int(last) <= self._feedback_seen[0]

    def _sync_labels(self, conn: Connection) -> None:
        n_sets, keys_seen = self._labels_seen(conn)
        if n_sets == self._sets_seen and keys_seen == self._keys_seen:
            return
        sets = {sid: labels or {} for sid, labels in conn.execute(select(label_sets.c.id, label_sets.c.labels))}
        current = {kid: labels or {} for kid, labels in conn.execute(select(api_keys.c.id, api_keys.c.labels))}
        self.sink.set_labels(sets, current)
        self._sets_seen, self._keys_seen = n_sets, keys_seen

    def _sync_feedback(self, conn: Connection) -> None:
        since = self.sink.get_meta("feedback_at") or 0
        f = feedback.c
        # >=: a score set in the same millisecond as the last one copied is copied too (again)
        rows = conn.execute(select(f.request_id, f.score_milli, f.updated_at).where(f.updated_at >= since)
                            .order_by(f.updated_at)).all()
        last, ids = self._feedback_seen
        if rows and not (int(rows[-1][2]) == last and {r[0] for r in rows} <= ids):  # not only those copied
            self.sink.set_feedback([(r[0], int(r[1])) for r in rows])
            at = int(rows[-1][2])
            self.sink.set_meta("feedback_at", at)
            self._feedback_seen = (at, {r[0] for r in rows if int(r[2]) == at})


def _chunks(start: int, end: int) -> Iterator[tuple[int, int]]:
    lo = start
    while lo < end:
        hi = min(lo - lo % CHUNK_MS + CHUNK_MS, end)
        yield lo, hi
        lo = hi
