"""`GET /v1/logs` and `GET /v1/logs/{id}`: the ledger, record by record."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tallygate.api.deps import label_filters, parse_time, require
from tallygate.errors import InvalidRequest, NotFound
from tallygate.manage.schemas import ERRORS
from tallygate.pipeline.tags import check_tag_filter
from tallygate.store.logs import LogFilter, LogReader
from tallygate.types import Principal


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
        from_: Annotated[str | None, Query(alias="from", description="inclusive; ISO 8601 or epoch ms")] = None,
        to: Annotated[str | None, Query(description="exclusive; ISO 8601 or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict:
        check_tag_filter(tag)
        f = LogFilter(tag=tag, labels=label_filters(request), key_id=key, model=model, status=status,
                      from_ms=parse_time(from_, "from"), to_ms=parse_time(to, "to"))
        if f.from_ms is not None and f.to_ms is not None and f.from_ms > f.to_ms:
            raise InvalidRequest("from is after to", param="from")
        data, nxt = await run_in_threadpool(logs.page, f, limit, cursor)
        return {"object": "list", "data": data, "has_more": nxt is not None, "next_cursor": nxt}

    @router.get("/v1/logs/{request_id}", summary="One request's ledger record")
    async def get_log(request_id: str, _: Annotated[Principal, reader]) -> dict:
        record = await run_in_threadpool(logs.get, request_id)
        if record is None:
            raise NotFound(f"no request with id {request_id!r}", param="request_id")
        return record

    return router
