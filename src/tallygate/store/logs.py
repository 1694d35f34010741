"""Reading the ledger back: filtered, cursor-paginated request logs, as typed records."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, exists, func, or_, select

from tallygate.core.record import Attempt, LedgerRecord
from tallygate.errors import InvalidRequest
from tallygate.store.schema import feedback, request_tags, requests


@dataclass(slots=True)
class LogFilter:
    """What `GET /v1/logs` may filter on; `tag` matches the tag and everything under it."""

    tag: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None
    model: str | None = None
    status: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None


def encode_cursor(created_at: int, row_id: str) -> str:
    """`<created_at>.<id>`: opaque to clients, and any string of that shape is a valid cursor."""
    return f"{created_at}.{row_id}"


_CURSOR = re.compile(r"[0-9]{1,15}\.[A-Za-z0-9_-]{1,64}")


def decode_cursor(cursor: str) -> tuple[int, str]:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidRequest("cursor is not one this API returned", param="cursor")
    ms, _, row_id = cursor.partition(".")
    return int(ms), row_id


@dataclass(frozen=True, slots=True)
class Feedback:
    """A request's feedback: the score in thousandths, the comment, when it was last set (ms)."""

    score_milli: int
    comment: str | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One ledger record as read back, with its feedback if any."""

    record: LedgerRecord
    feedback: Feedback | None


def _attempt(a: Mapping[str, Any]) -> Attempt:
    return Attempt(a["provider"], a["model"], a["status"], a["latency_ms"], a.get("error"), a.get("target"))


def logged_request(row: Mapping[Any, Any]) -> LoggedRequest:
    """A row of `with_feedback()` as typed objects."""
    values = {name: row[name] for name in LedgerRecord._fields}
    values["tags"] = tuple(values["tags"] or ())
    values["labels"] = values["labels"] or {}
    values["attempts"] = tuple(_attempt(a) for a in values["attempts"] or ())
    fb = None if row["feedback_score"] is None else Feedback(row["feedback_score"], row["feedback_comment"],
                                                             row["feedback_at"])
    return LoggedRequest(LedgerRecord(**values), fb)


def with_feedback() -> Select[Any]:
    """SELECT of ledger rows with their feedback (if any) as feedback_* columns."""
    return (select(requests, feedback.c.score_milli.label("feedback_score"),
                   feedback.c.comment.label("feedback_comment"), feedback.c.updated_at.label("feedback_at"))
            .select_from(requests.outerjoin(feedback, feedback.c.request_id == requests.c.id)))


def under_tag(tag: str) -> ColumnElement[bool]:
    """A request carries `tag` or a tag under it (exact on both dialects, whatever the collation)."""
    t = request_tags.c.tag
    return exists().where(request_tags.c.request_id == requests.c.id,
                          or_(t == tag, func.substr(t, 1, len(tag) + 1) == tag + "/"))


class LogReader:
    """Synchronous queries over the ledger (run from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, request_id: str) -> LoggedRequest | None:
        with self._engine.connect() as conn:
            row = conn.execute(with_feedback().where(requests.c.id == request_id)).mappings().first()
        return logged_request(row) if row else None

    def page(self, f: LogFilter, limit: int, cursor: str | None) -> tuple[list[LoggedRequest], str | None]:
        """Newest first; returns the rows and the cursor of the next page (None at the end)."""
        c = requests.c
        where: list[ColumnElement[bool]] = []
        if f.tag is not None:
            where.append(under_tag(f.tag))
        for name, value in f.labels.items():
            where.append(c.labels[name].as_string() == value)
        if f.key_id is not None:
            where.append(c.key_id == f.key_id)
        if f.model is not None:
            where.append(c.requested_model == f.model)
        if f.status is not None:
            where.append(c.status == f.status)
        if f.from_ms is not None:
            where.append(c.created_at >= f.from_ms)
        if f.to_ms is not None:
            where.append(c.created_at < f.to_ms)
        if cursor:
            ms, rid = decode_cursor(cursor)
            where.append(or_(c.created_at < ms, and_(c.created_at == ms, c.id < rid)))
        query = (with_feedback().where(*where).order_by(c.created_at.desc(), c.id.desc())
                 .limit(limit + 1))
        with self._engine.connect() as conn:
            rows = [logged_request(r) for r in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].record.created_at, rows[-1].record.id) if more and rows else None
        return rows, nxt
