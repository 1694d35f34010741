"""`/v1/manage/budget`: monthly limits on label groups, tag subtrees and keys."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from tallygate.api.deps import require
from tallygate.manage.budget_schemas import Budget, BudgetCreate, BudgetList, BudgetUpdate
from tallygate.manage.budgets import BudgetAdmin
from tallygate.manage.schemas import ERRORS
from tallygate.types import Principal


def budgets_router(admin: BudgetAdmin) -> APIRouter:
    router = APIRouter(tags=["budgets"], responses=ERRORS)
    reader = Depends(require("manage", "read"))
    writer = Depends(require("manage", "write"))

    @router.post("/v1/manage/budget", status_code=201, response_model=Budget,
                 summary="Create a budget on a label group, a tag subtree or a key")
    async def create_budget(body: BudgetCreate, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.create, caller, body)

    @router.get("/v1/manage/budget", response_model=BudgetList, summary="Every budget, with this month's spend")
    async def list_budgets(_: Annotated[Principal, reader]) -> dict[str, Any]:
        return await run_in_threadpool(admin.page)

    @router.get("/v1/manage/budget/{budget_id}", response_model=Budget, summary="One budget")
    async def get_budget(budget_id: str, _: Annotated[Principal, reader]) -> dict[str, Any]:
        return await run_in_threadpool(admin.get, budget_id)

    @router.put("/v1/manage/budget/{budget_id}", response_model=Budget, summary="Replace the given fields")
    async def update_budget(budget_id: str, body: BudgetUpdate,
                            caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.update, caller, budget_id, body)

    @router.delete("/v1/manage/budget/{budget_id}", response_model=Budget, summary="Delete a budget")
    async def delete_budget(budget_id: str, caller: Annotated[Principal, writer]) -> dict[str, Any]:
        return await run_in_threadpool(admin.delete, caller, budget_id)

    return router
