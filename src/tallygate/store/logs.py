"""Reading the ledger back: filtered, cursor-paginated request logs."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from sqlalchemy import Engine, and_, exists, func, or_, select

from tallygate.analytics.metrics import SCORE_SCALE
from tallygate.errors import InvalidRequest
from tallygate.pipeline.pricing import usd_text
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


def encode_cursor(created_at: int, request_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}:{request_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, _, rid = raw.partition(":")
        if not ms.isdigit() or len(ms) > 15:
            raise ValueError
        return int(ms), rid
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("cursor is not one this API returned", param="cursor") from None


def render(row: dict) -> dict:
    """A ledger row as the API shows it: exact cost as a decimal string, times in ms and ISO."""
    import datetime as dt

    err = {"type": row["error_type"], "message": row["error_message"]} if row["error_type"] else None
    return {
        "id": row["id"], "object": "request_log", "created_at": row["created_at"],
        "created": dt.datetime.fromtimestamp(row["created_at"] / 1000, dt.UTC).isoformat(),
        "key": {"id": row["key_id"], "name": row["key_name"]}, "labels": row["labels"],
        "tags": row["tags"], "endpoint": row["endpoint"], "requested_model": row["requested_model"],
        "served_model": row["served_model"], "provider": row["provider"], "status": row["status"],
        "error": err, "stream": row["stream"], "partial": row["partial"],
        "usage": {"input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
                  "cached_tokens": row["cached_tokens"], "cache_write_tokens": row["cache_write_tokens"],
                  "reasoning_tokens": row["reasoning_tokens"]},
        "cost": usd_text(row["cost_pico"]), "pricing_source": row["pricing_source"],
        "latency_ms": row["latency_us"] / 1000,
        "ttft_ms": None if row["ttft_us"] is None else row["ttft_us"] / 1000,
        "attempts": row["attempts"],
        "feedback": None if row.get("feedback_score") is None else {
            "score": row["feedback_score"] / SCORE_SCALE, "comment": row["feedback_comment"],
            "updated_at": row["feedback_at"]},
    }


def with_feedback():  # type: ignore[no-untyped-def]
    """SELECT of ledger rows with their feedback (if any) as feedback_* columns."""
    return (select(requests, feedback.c.score_milli.label("feedback_score"),
                   feedback.c.comment.label("feedback_comment"), feedback.c.updated_at.label("feedback_at"))
            .select_from(requests.outerjoin(feedback, feedback.c.request_id == requests.c.id)))


def under_tag(tag: str):  # type: ignore[no-untyped-def]
    """A request carries `tag` or a tag under it (exact on both dialects, whatever the collation)."""
    t = request_tags.c.tag
    return exists().where(request_tags.c.request_id == requests.c.id,
                          or_(t == tag, func.substr(t, 1, len(tag) + 1) == tag + "/"))


class LogReader:
    """Synchronous queries over the ledger (run from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, request_id: str) -> dict | None:
        with self._engine.connect() as conn:
            row = conn.execute(with_feedback().where(requests.c.id == request_id)).mappings().first()
        return render(dict(row)) if row else None

    def page(self, f: LogFilter, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
        """Newest first; returns the rows and the cursor of the next page (None at the end)."""
        c = requests.c
        where = []
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
            rows = [dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
        return [render(r) for r in rows], nxt
