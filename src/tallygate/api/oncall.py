"""`GET /v1/analytics/oncall`: the on-call page's figures in one answer (`analytics/oncall.py`)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from tallygate.analytics.oncall import OnCall
from tallygate.analytics.query import DIMENSION_HELP, parse_group_by, parse_zone
from tallygate.api.analytics import _json, only_params, tz_query
from tallygate.api.deps import require
from tallygate.api.minutes import minutes_window
from tallygate.errors import InvalidRequest
from tallygate.manage.schemas import ERRORS
from tallygate.types import Principal

MAX_DAYS = 7


def oncall_router(oncall: OnCall) -> APIRouter:
    router = APIRouter(tags=["analytics"], responses=ERRORS)
    reader = Depends(require("manage", "read"))

    @router.get("/v1/analytics/oncall", summary="The last hours against the same hours of the previous days",
                description="Minutes of [from, to) and of the same window 24 hours earlier for each of `days` "
                            "previous days (at most 25 hours long); for each dimension of group_by, the groups "
                            "of [from, to) (`now`) and those of the previous days' windows summed (`before`), "
                            "each the first `limit` by spend with `row_count` the number of groups.")
    async def oncall_figures(
        request: Request,
        _: Annotated[Principal, reader],
        from_: Annotated[str, Query(alias="from", min_length=1, description="inclusive; ISO 8601 or epoch ms")],
        to: Annotated[str, Query(min_length=1, description="exclusive; ISO 8601 or epoch ms")],
        days: Annotated[int, Query(ge=0, le=MAX_DAYS, description="previous days compared")] = 1,
        group_by: Annotated[str | None, Query(description=f"comma-separated, each compared alone: {DIMENSION_HELP} "
                                                          "(no time dimension)")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="groups per dimension and part")] = 1000,
        minutes: Annotated[bool, Query(description="with the minutes of each window")] = True,
        tz: Annotated[str | None, tz_query()] = None,
    ) -> Response:
        only_params(request, {"from", "to", "days", "group_by", "limit", "minutes", "tz"}, labels=False)
        zone = parse_zone(tz, getattr(request.app.state, "timezone", "UTC"))
        start, end = minutes_window(from_, to, zone)
        dims = parse_group_by(group_by)
        if any(d.kind == "time" for d in dims):
            raise InvalidRequest("group_by takes no time dimension here: the minutes are the time series",
                                 param="group_by")
        return await run_in_threadpool(_json, oncall.compare, start, end, days, dims, zone, limit, minutes)

    return router
