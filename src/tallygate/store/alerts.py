"""Alerts in the database: inserted once by id (the cross-process guard), read back by filters."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallygate.core.textrules import ALERT_CURSOR_SHAPE
from tallygate.errors import InvalidRequest
from tallygate.store.schema import alerts


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """What `GET /v1/alerts` filters on; `subject` is a subject id (key id, 'budget:<id>', group)."""

    kind: str | None = None
    subject: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None


_CURSOR = re.compile(ALERT_CURSOR_SHAPE)


def _cursor(created_at: int, alert_id: str) -> str:
    """`<created_at>.<the id's UTF-8 in hex>`: opaque to clients, and any string of that shape
    (`textrules.ALERT_CURSOR`) is a valid cursor."""
    return f"{created_at}.{alert_id.encode().hex()}"


def _decode(cursor: str) -> tuple[int, str]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    ms, _, hexid = cursor.partition(".")
    alert_id = bytes.fromhex(hexid).decode("utf-8", "replace")
    if "\x00" in alert_id:  # no alert id holds one, and PostgreSQL could not even compare it
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    return int(ms), alert_id


class AlertStore:
    """Synchronous (run from worker threads): `insert_new` and `page`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def insert_new(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Insert each event unless an alert of its id exists (fired by this or another
        process); returns the events this call inserted, which only this caller delivers."""
        fresh = []
        with self._engine.begin() as conn:
            for e in events:
                subject = e["subject"]
                stmt = self._insert(alerts).values(
                    id=e["id"], kind=e["kind"], subject_kind=subject["kind"], subject_id=subject["id"],
                    subject_name=subject["name"], created_at=e["created_at_ms"], event=dict(e),
                ).on_conflict_do_nothing(index_elements=["id"]).returning(alerts.c.id)
                if conn.execute(stmt).first() is not None:  # (rowcount is not reliable here on every driver)
                    fresh.append(e)
        return fresh

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` are already stored."""
        if not ids:
            return set()
        with self._engine.connect() as conn:
            return set(conn.execute(select(alerts.c.id).where(alerts.c.id.in_(list(ids)))).scalars())

    def page(self, f: AlertFilter, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the events and the cursor of the next page (None at the end)."""
        c = alerts.c
        where: list[ColumnElement[bool]] = []
        if f.kind is not None:
            where.append(c.kind == f.kind)
        if f.subject is not None:
            where.append(c.subject_id == f.subject)
        if f.from_ms is not None:
            where.append(c.created_at >= f.from_ms)
        if f.to_ms is not None:
            where.append(c.created_at < f.to_ms)
        if cursor:
            ms, aid = _decode(cursor)
            where.append(or_(c.created_at < ms, and_(c.created_at == ms, c.id < aid)))
        query = (select(c.created_at, c.id, c.event).where(*where)
                 .order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1))
        with self._engine.connect() as conn:
            rows = list(conn.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = _cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return [dict(r.event) for r in rows], nxt
