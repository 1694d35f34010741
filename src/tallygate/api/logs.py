"""`GET /v1/logs` and `GET /v1/logs/{id}`: the ledger, record by record."""

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tallygate.analytics.query import parse_time, parse_zone
from tallygate.api.analytics import only_params, tz_query
from tallygate.api.deps import label_filters, require
from tallygate.core.metrics import SCORE_SCALE
from tallygate.core.money import usd_text
from tallygate.errors import InvalidRequest, NotFound
from tallygate.manage.schemas import ERRORS
from tallygate.pipeline.tags import check_tag_filter
from tallygate.store.logs import LogFilter, LoggedRequest, LogReader
from tallygate.types import Principal


def log_json(logged: LoggedRequest) -> dict[str, Any]:
    """A ledger record as the API shows it: exact cost as a decimal string, times in ms and ISO."""
    r, fb = logged.record, logged.feedback
    return {
        "id": r.id, "object": "request_log", "created_at": r.created_at,
        "created": dt.datetime.fromtimestamp(r.created_at / 1000, dt.UTC).isoformat(),
        "key": {"id": r.key_id, "name": r.key_name}, "labels": r.labels,
        "tags": list(r.tags), "endpoint": r.endpoint, "requested_model": r.requested_model,
        "served_model": r.served_model, "provider": r.provider, "status": r.status,
        "error": ({"type": r.error_type, "code": r.error_code, "message": r.error_message}
                  if r.error_type else None),
        "stream": r.stream, "partial": r.partial,
        "usage": {"input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                  "cached_tokens": r.cached_tokens, "cache_write_tokens": r.cache_write_tokens,
                  "reasoning_tokens": r.reasoning_tokens},
        "cost": usd_text(r.cost_pico), "pricing_source": r.pricing_source,
        "latency_ms": r.latency_us / 1000,
        "ttft_ms": None if r.ttft_us is None else r.ttft_us / 1000,
        "attempts": [a.to_dict() for a in r.attempts],
        "feedback": None if fb is None else {"score": fb.score_milli / SCORE_SCALE, "comment": fb.comment,
                                             "updated_at": fb.updated_at},
    }


_LOGS = {"tag", "key", "model", "status", "error_code", "provider", "served_model", "from", "to", "limit", "cursor",
         "tz"}


def logs_router(logs: LogReader) -> APIRouter:
    router = APIRouter(tags=["logs"], responses=ERRORS)
    reader = Depends(require("manage", "read"))

    @router.get("/v1/logs", summary="Request logs, newest first")
    async def list_logs(
        request: Request,
        _: Annotated[Principal, reader],
        tag: Annotated[str | None, Query(description="a tag; matches it and every tag under it")] = None,
        key: Annotated[str | None, Query(description="API key id")] = None,
        model: Annotated[str | None, Query(description="requested model")] = None,
        status: Annotated[int | None, Query(ge=100, le=599)] = None,
        error_code: Annotated[str | None, Query(description="the error's code (`upstream_rate_limited` ...)")] = None,
        provider: Annotated[str | None, Query(description="the provider that served the request")] = None,
        served_model: Annotated[str | None, Query(description="the model the provider served")] = None,
        from_: Annotated[str | None, Query(alias="from", description="inclusive; ISO 8601 or epoch ms")] = None,
        to: Annotated[str | None, Query(description="exclusive; ISO 8601 or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
        tz: Annotated[str | None, tz_query("the time zone of from/to written without an offset "
                                           "(default: the config's reporting.timezone, else UTC)")] = None,
    ) -> dict[str, Any]:
        only_params(request, _LOGS, labels=True)
        check_tag_filter(tag)
        zone = parse_zone(tz, getattr(request.app.state, "timezone", "UTC"))
        f = LogFilter(tag=tag, labels=label_filters(request), key_id=key, model=model, status=status,
                      error_code=error_code, provider=provider, served_model=served_model,
                      from_ms=parse_time(from_, "from", zone), to_ms=parse_time(to, "to", zone))
        if f.from_ms is not None and f.to_ms is not None and f.from_ms > f.to_ms:
            raise InvalidRequest("from is after to", param="from")
        page = await run_in_threadpool(logs.page, f, limit, cursor)
        return {"object": "list", "data": [log_json(r) for r in page.rows], "has_more": page.next_cursor is not None,
                "next_cursor": page.next_cursor, "partial": page.partial}

    @router.get("/v1/logs/{request_id}", summary="One request's ledger record")
    async def get_log(request_id: str, _: Annotated[Principal, reader]) -> dict[str, Any]:
        record = await run_in_threadpool(logs.get, request_id)
        if record is None:
            raise NotFound(f"no request with id {request_id!r}", param="request_id")
        return log_json(record)

    return router
