"""`/v1/manage/apikey` (keys as labelled, capped records) and `/v1/key` (a key reads itself)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tallygate.api.deps import any_key, label_filters, require
from tallygate.manage.keys import KeyAdmin
from tallygate.manage.schemas import ERRORS, CreatedKey, KeyCreate, KeyList, KeyRecord, KeyUpdate
from tallygate.types import Principal


def keys_router(admin: KeyAdmin) -> APIRouter:
    router = APIRouter(tags=["keys"], responses=ERRORS)
    reader = Depends(require("manage", "read"))
    writer = Depends(require("manage", "write"))

    @router.post("/v1/manage/apikey", status_code=201, response_model=CreatedKey,
                 summary="Create a key; the secret `key` is in this response only")
    async def create_key(body: KeyCreate, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.create, caller, body)

    @router.get("/v1/manage/apikey", response_model=KeyList,
                summary="List keys; filter with label.<name>=<value>")
    async def list_keys(request: Request, _: Annotated[Principal, reader],
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        cursor: str | None = None) -> dict[str, Any]:
        return await run_in_threadpool(admin.page, label_filters(request), limit, cursor)

    @router.get("/v1/manage/apikey/{key_id}", response_model=KeyRecord, summary="One key")
    async def get_key(key_id: str, _: Annotated[Principal, reader]) -> dict[str, Any]:
        return await run_in_threadpool(admin.get, key_id)

    @router.put("/v1/manage/apikey/{key_id}", response_model=KeyRecord,
                summary="Replace the given fields (labels as a whole)")
    async def update_key(key_id: str, body: KeyUpdate, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.update, caller, key_id, body)

    @router.delete("/v1/manage/apikey/{key_id}", response_model=KeyRecord,
                   summary="Revoke: the key stops working at once; its record and history stay")
    async def revoke_key(key_id: str, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.revoke, caller, key_id)

    @router.get("/v1/key", response_model=KeyRecord, summary="The calling key's own record")
    async def own_key(caller: Annotated[Principal, Depends(any_key)]) -> dict[str, Any]:
        return await run_in_threadpool(admin.own, caller)

    return router
