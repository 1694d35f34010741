"""`GET /v1/analytics/minutes`: requests, errors and spend per minute over at most 25 hours."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tallygate.analytics.query import parse_time, parse_zone
from tallygate.api.analytics import tz_query
from tallygate.api.deps import require
from tallygate.core.money import usd_text
from tallygate.errors import InvalidRequest
from tallygate.manage.schemas import ERRORS
from tallygate.store.minutes import MAX_RANGE_MS, MinuteSource
from tallygate.types import Principal


def minutes_window(from_: str, to: str, zone: str, why: str = "") -> tuple[int, int]:
    """[from, to) in epoch ms from the query's `from` and `to` (in `zone` where they name no
    offset): both given, in order, and at most 25 hours apart (`why` ends that refusal)."""
    start, end = parse_time(from_, "from", zone), parse_time(to, "to", zone)
    if start is None or end is None:
        raise InvalidRequest("from and to are required", param="from" if start is None else "to")
    if start > end:
        raise InvalidRequest("from is after to", param="from")
    if end - start > MAX_RANGE_MS:
        raise InvalidRequest(f"to is more than 25 hours after from{why}", param="to")
    return start, end


def minutes_router(minutes: MinuteSource) -> APIRouter:
    router = APIRouter(tags=["analytics"], responses=ERRORS)
    reader = Depends(require("manage", "read"))

    @router.get("/v1/analytics/minutes", summary="Requests, errors and spend per minute (at most 25 hours)")
    async def per_minute(
        request: Request,
        _: Annotated[Principal, reader],
        from_: Annotated[str, Query(alias="from", min_length=1, description="inclusive; ISO 8601 or epoch ms")],
        to: Annotated[str, Query(min_length=1,
                                 description="exclusive; ISO 8601 or epoch ms; at most 25 hours after from")],
        tz: Annotated[str | None, tz_query("the time zone of from/to written without an offset "
                                           "(default: the config's reporting.timezone, else UTC)")] = None,
    ) -> dict[str, Any]:
        unknown = [name for name in request.query_params if name not in ("from", "to", "tz")]
        if unknown:
            raise InvalidRequest(f"unknown query parameter {unknown[0]!r}; this route takes from, to, tz",
                                 param=unknown[0])
        zone = parse_zone(tz, getattr(request.app.state, "timezone", "UTC"))
        start, end = minutes_window(from_, to, zone, ": minutes are read from the raw ledger")
        rows = await run_in_threadpool(minutes.between, start, end)
        return {"object": "list", "from": start, "to": end,
                "data": [{"minute": m.start_ms, "requests": m.requests, "errors": m.errors,
                          "cost": usd_text(m.cost_pico)} for m in rows]}

    return router
