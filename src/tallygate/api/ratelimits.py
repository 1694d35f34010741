"""`/v1/manage/ratelimit`: requests and tokens per minute and requests in flight, on keys, label
groups, tag subtrees and models."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from tallygate.api.deps import require
from tallygate.manage.ratelimit_schemas import (
    KeyLimitsUsage,
    RateLimit,
    RateLimitCreate,
    RateLimitList,
    RateLimitUpdate,
)
from tallygate.manage.ratelimits import RateLimitAdmin
from tallygate.manage.schemas import ERRORS
from tallygate.types import Principal


def ratelimits_router(admin: RateLimitAdmin) -> APIRouter:
    router = APIRouter(tags=["rate limits"], responses=ERRORS)
    reader = Depends(require("manage", "read"))
    writer = Depends(require("manage", "write"))

    @router.post("/v1/manage/ratelimit", status_code=201, response_model=RateLimit,
                 summary="Create a rate limit on a key, a label group, a tag subtree or a model")
    async def create_ratelimit(body: RateLimitCreate, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.create, caller, body)

    @router.get("/v1/manage/ratelimit", response_model=RateLimitList, summary="Every rate limit")
    async def list_ratelimits(_: Annotated[Principal, reader]) -> dict[str, Any]:
        return await run_in_threadpool(admin.page)

    @router.get("/v1/manage/ratelimit/usage", response_model=KeyLimitsUsage,
                summary="The rate limits on some keys, what each counts now, and the keys' refusals in the last hour")
    async def ratelimit_usage(_: Annotated[Principal, reader],
                              key: Annotated[list[str], Query(min_length=1, max_length=500,
                                                              description="key ids (repeat the parameter); "
                                                                          "ids of no key are left out")]
                              ) -> dict[str, Any]:
        return await admin.key_usage(key)

    @router.get("/v1/manage/ratelimit/{limit_id}", response_model=RateLimit, summary="One rate limit")
    async def get_ratelimit(limit_id: str, _: Annotated[Principal, reader]) -> dict[str, Any]:
        return await run_in_threadpool(admin.get, limit_id)

    @router.put("/v1/manage/ratelimit/{limit_id}", response_model=RateLimit, summary="Replace the given fields")
    async def update_ratelimit(limit_id: str, body: RateLimitUpdate,
                               caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.update, caller, limit_id, body)

    @router.delete("/v1/manage/ratelimit/{limit_id}", response_model=RateLimit, summary="Delete a rate limit")
    async def delete_ratelimit(limit_id: str, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.delete, caller, limit_id)

    return router
