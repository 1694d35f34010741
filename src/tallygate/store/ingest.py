"""Writing one batch of ledger records: raw rows, tag rows and roll-ups, exactly once.

One transaction inserts the `requests` rows (ON CONFLICT DO NOTHING on the request id), their
`request_tags` rows and the batch's roll-ups. Roll-ups must count only records whose raw row
was actually inserted, or a replayed batch would count twice: when the insert reports fewer
new rows than the batch holds, the transaction is rolled back and the batch is written again
with only the records not yet in the ledger (first occurrence of each id). Replays are rare,
so the common path costs one `rowcount` check.

Rows go to the driver's `executemany` as plain tuples built by `attrgetter` (by field name), with
JSON encoded by orjson: several times cheaper than SQLAlchemy's per-row processing.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import orjson
from sqlalchemy import Engine, select

from tallygate.core.record import COLUMNS, LedgerRecord
from tallygate.store.attempts import encode as encode_attempts
from tallygate.store.rollups import Rollups, canonical_labels, label_set_id, placeholder
from tallygate.store.schema import requests

# The record's columns as stored: its labels go to `label_sets`, the row keeps the set's id.
STORED_COLUMNS = tuple("label_set" if c == "labels" else c for c in COLUMNS)
_values = attrgetter(*COLUMNS)  # a record's values in column order, by name
_LABELS, _TAGS, _ATTEMPTS = (COLUMNS.index(c) for c in ("labels", "tags", "attempts"))


def _record_id(rec: LedgerRecord) -> str:
    return rec.id


class _Replayed(Exception):
    """Some records of the batch are already in the ledger."""


class RecordRows:
    """The `requests` and `request_tags` INSERT statements and their parameter tuples."""

    def __init__(self, engine: Engine) -> None:
        mark = placeholder(engine)
        self.requests_sql = (f"INSERT INTO requests ({', '.join(STORED_COLUMNS)}) "
                             f"VALUES ({', '.join([mark] * len(STORED_COLUMNS))}) ON CONFLICT DO NOTHING")
        self.tags_sql = (f"INSERT INTO request_tags (tag, created_at, request_id) VALUES ({mark}, {mark}, {mark}) "
                         "ON CONFLICT DO NOTHING")
        self._set_ids: dict[str, str] = {}  # canonical JSON -> label-set id

    def build(self, batch: list[LedgerRecord]) -> tuple[list[tuple[Any, ...]], list[str], list[tuple[str, int, str]]]:
        """(requests rows, each record's labels as canonical JSON, request_tags rows)."""
        dumps = orjson.dumps
        set_ids = self._set_ids
        rows: list[tuple[Any, ...]] = []
        canonical: list[str] = []
        tags: list[tuple[str, int, str]] = []
        for rec in batch:
            labels = canonical_labels(rec.labels)
            canonical.append(labels)
            ls = set_ids.get(labels)
            if ls is None:
                ls = set_ids[labels] = label_set_id(labels)
            row = list(_values(rec))
            row[_LABELS] = ls
            row[_TAGS] = dumps(rec.tags).decode()
            row[_ATTEMPTS] = encode_attempts(rec.attempts, rec.provider, rec.served_model, rec.status,
                                             rec.requested_model)
            rows.append(tuple(row))
            if rec.tags:
                rid, ca = rec.id, rec.created_at
                tags.extend((t, ca, rid) for t in rec.tags)
        return rows, canonical, tags


class BatchIngest:
    """Writes batches of ledger records with their roll-ups."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._rows = RecordRows(engine)
        self.rollups = Rollups(engine)

    def write(self, batch: list[LedgerRecord]) -> int:
        """Write `batch`; returns how many of its records were new to the ledger."""
        try:
            return self._insert(batch, replay_check=True)
        except _Replayed:
            fresh = self._fresh(batch)
            return self._insert(fresh, replay_check=False) if fresh else 0

    def _insert(self, batch: list[LedgerRecord], *, replay_check: bool) -> int:
        if self._engine.dialect.name != "sqlite":  # one lock order for concurrent writers (replays)
            batch = sorted(batch, key=_record_id)
        rows, canonical, tags = self._rows.build(batch)
        agg = self.rollups.aggregate(batch, canonical)
        with self._engine.begin() as conn:
            inserted = conn.exec_driver_sql(self._rows.requests_sql, rows).rowcount
            if inserted != len(rows):
                if replay_check:
                    raise _Replayed
                # Another writer inserted one of these ids since `_fresh` looked: start over.
                raise RuntimeError(f"ledger batch raced another writer ({inserted} of {len(rows)} new)")
            if tags:
                tags.sort()  # in key order (tag, created_at, request_id): neighbouring B-tree inserts
                conn.exec_driver_sql(self._rows.tags_sql, tags)
            self.rollups.write(conn, agg)
        self.rollups.committed(agg)
        return len(rows)

    def _fresh(self, batch: list[LedgerRecord]) -> list[LedgerRecord]:
        """The records of `batch` not in the ledger yet, each id once (its first occurrence)."""
        ids = list(dict.fromkeys(rec.id for rec in batch))
        existing: set[str] = set()
        with self._engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                existing.update(conn.execute(select(requests.c.id).where(requests.c.id.in_(chunk))).scalars())
        fresh, seen = [], set(existing)
        for rec in batch:
            if rec.id not in seen:
                seen.add(rec.id)
                fresh.append(rec)
        return fresh
