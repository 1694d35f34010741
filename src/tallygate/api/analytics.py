"""`/v1/analytics/*`: spend and usage grouped by keys, labels, tags and time; invoices.

Every route needs `manage: read`. Unknown query parameters are refused (a misspelt filter
would otherwise widen the answer silently).
"""

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from tallygate.analytics.invoice import invoice_csv
from tallygate.analytics.query import (
    DIMENSION_HELP,
    parse_group_by,
    parse_label_mode,
    parse_markup,
    parse_month,
    parse_time,
    parse_zone,
)
from tallygate.analytics.query import (
    Query as Question,
)
from tallygate.analytics.service import MAX_ROWS, Analytics
from tallygate.api.deps import label_filters, require
from tallygate.core.tagpath import MAX_DEPTH
from tallygate.core.zones import names as zone_names
from tallygate.errors import InvalidRequest
from tallygate.manage.schemas import ERRORS
from tallygate.pipeline.tags import check_tag_filter
from tallygate.types import Principal

_USAGE = {"group_by", "tag", "key", "model", "from", "to", "labels", "limit", "tz", "status", "error_code",
          "provider", "served_model"}
_TREE = {"root", "depth", "from", "to", "tz"}
_EXPORT = {"month", "group_by", "markup", "format", "labels", "tz"}
_TZ = ("reporting time zone, an IANA name (default: the config's reporting.timezone, else UTC): "
       "time.* buckets, month boundaries and from/to written without an offset are local to it")


def tz_query(description: str = _TZ) -> Any:
    """The `tz` query parameter, documented with the zone names it accepts."""
    return Query(description=description, json_schema_extra={"enum": zone_names()})


def only_params(request: Request, allowed: set[str], labels: bool) -> None:
    """A 400 naming the first query parameter the route does not take (a typo is not ignored)."""
    for name in request.query_params:
        if name not in allowed and not (labels and name.startswith("label.")):
            raise InvalidRequest(f"unknown query parameter {name!r}; this route takes "
                                 f"{', '.join(sorted(allowed))}{', label.<name>' if labels else ''}", param=name)


def _json(answer: Callable[..., dict[str, Any]], *args: Any) -> Response:
    """An answer as JSON bytes by orjson (in the worker thread): FastAPI's own encoding of a
    thousand-row answer (validated as a dict, then `json.dumps`) took ~100-250 ms for the tree's
    950 KB, orjson 3-27 ms."""
    return Response(orjson.dumps(answer(*args)), media_type="application/json")


def analytics_router(analytics: Analytics) -> APIRouter:
    router = APIRouter(tags=["analytics"], responses=ERRORS)
    reader = Depends(require("manage", "read"))

    @router.get("/v1/analytics/usage", summary="Requests, errors, tokens, cost, latency and feedback by group",
                response_model=dict[str, Any])
    async def usage(
        request: Request,
        _: Annotated[Principal, reader],
        group_by: Annotated[str | None, Query(description=f"comma-separated: {DIMENSION_HELP}")] = None,
        tag: Annotated[str | None, Query(description="a tag; matches it and every tag under it")] = None,
        key: Annotated[str | None, Query(description="API key id")] = None,
        model: Annotated[str | None, Query(description="requested model")] = None,
        from_: Annotated[str | None, Query(alias="from", description="inclusive; ISO 8601 or epoch ms")] = None,
        to: Annotated[str | None, Query(description="exclusive; ISO 8601 or epoch ms")] = None,
        labels: Annotated[str | None, Query(description="'recorded' (default): labels as each request "
                                                        "kept them; 'current': each key's labels now")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 1000,
        tz: Annotated[str | None, tz_query()] = None,
        status: Annotated[int | None, Query(ge=100, le=599, description="HTTP status of the answer")] = None,
        error_code: Annotated[str | None, Query(max_length=64, description="the error's code, as in the "
                                                                           "ledger record")] = None,
        provider: Annotated[str | None, Query(max_length=200, description="provider that served it")] = None,
        served_model: Annotated[str | None, Query(max_length=200, description="model the provider "
                                                                              "served")] = None,
    ) -> Response:
        only_params(request, _USAGE, labels=True)
        zone = parse_zone(tz, analytics.timezone)
        q = Question(parse_group_by(group_by), check_tag_filter(tag), label_filters(request), key, model,
                     parse_time(from_, "from", zone), parse_time(to, "to", zone), parse_label_mode(labels), zone,
                     status, error_code, provider, served_model)
        return await run_in_threadpool(_json, analytics.usage, q, limit)

    @router.get("/v1/analytics/tags/tree", summary="The tag hierarchy with metrics at every node",
                response_model=dict[str, Any])
    async def tag_tree(
        request: Request,
        _: Annotated[Principal, reader],
        root: Annotated[str | None, Query(description="a tag: show its subtree (default: every root)")] = None,
        depth: Annotated[int | None, Query(ge=0, le=MAX_DEPTH, description="levels below root "
                                                                          "(default: all)")] = None,
        from_: Annotated[str | None, Query(alias="from", description="inclusive; ISO 8601 or epoch ms")] = None,
        to: Annotated[str | None, Query(description="exclusive; ISO 8601 or epoch ms")] = None,
        tz: Annotated[str | None, tz_query()] = None,
    ) -> Response:
        only_params(request, _TREE, labels=True)
        zone = parse_zone(tz, analytics.timezone)
        try:
            root = check_tag_filter(root)
        except InvalidRequest as err:
            raise InvalidRequest(err.message.replace("tag", "root", 1), param="root") from None
        q = Question(labels=label_filters(request), from_ms=parse_time(from_, "from", zone),
                     to_ms=parse_time(to, "to", zone), tz=zone)
        return await run_in_threadpool(_json, analytics.tree, root, depth, q)

    @router.get("/v1/analytics/export", summary="A month's invoice lines per group, with a markup",
                responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    async def export(
        request: Request,
        _: Annotated[Principal, reader],
        month: Annotated[str, Query(description="YYYY-MM, in the reporting time zone (tz)")],
        group_by: Annotated[str | None, Query(description="comma-separated: key, model, served_model, "
                                                          "provider, status, label.<name>")] = None,
        markup: Annotated[str | None, Query(description="a rate from 0 to 10: 0.20 adds 20 %")] = None,
        format: Annotated[str, Query(description="json or csv")] = "json",
        labels: Annotated[str | None, Query(description="'recorded' (default) or 'current'")] = None,
        tz: Annotated[str | None, tz_query()] = None,
    ) -> Response:
        only_params(request, _EXPORT, labels=False)
        if format not in ("json", "csv"):
            raise InvalidRequest(f"format must be 'json' or 'csv', got {format!r}", param="format")
        zone = parse_zone(tz, analytics.timezone)
        start, end = parse_month(month, tz=zone)
        doc = await run_in_threadpool(analytics.export, month, start, end, parse_group_by(group_by),
                                      parse_markup(markup), parse_label_mode(labels), zone)
        if format == "csv":
            return Response(invoice_csv(doc), media_type="text/csv; charset=utf-8",
                            headers={"content-disposition": f'attachment; filename="tallygate-{month}.csv"'})
        return JSONResponse(doc)

    return router
