"""`POST /v1/feedback`: a score (and comment) on a request, by its gateway request id.

`score` is a number from 0 to 1 with at most 3 decimals (thumbs down = 0, thumbs up = 1; a
1-5 star scale maps to 0, 0.25 ... 1). A new score for the same request replaces the earlier
one. A key with `completions: write` may rate the requests it made; `manage: write` may rate
any. A request the gateway has not written to the ledger yet (records are batched) is waited
for: the handler flushes this process's ledger buffer once before answering 404.
"""

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tallygate.api.deps import any_key
from tallygate.core.metrics import SCORE_SCALE
from tallygate.core.textrules import SCORE, decimal_text
from tallygate.errors import InvalidRequest, NotFound, PermissionDenied
from tallygate.manage.schemas import ERRORS
from tallygate.store.feedback import FeedbackStore
from tallygate.store.ledger import LedgerWriter
from tallygate.types import Principal


def _no_nul(text: str | None) -> str | None:
    if text is not None and "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return text


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, AfterValidator(_no_nul)] = Field(
        min_length=1, max_length=40, description="the gateway's request id (`id` of a completion, "
                                                 "header `x-request-id`)")
    score: Annotated[Decimal, BeforeValidator(decimal_text(SCORE, "0.75"))] = Field(
        ge=0, le=1, allow_inf_nan=False, description="0 (bad) to 1 (good), at most 3 decimals")
    comment: Annotated[str | None, AfterValidator(_no_nul)] = Field(None, max_length=4000)


class FeedbackOut(BaseModel):
    object: str = "feedback"
    request_id: str
    score: float
    comment: str | None
    created_at: int
    updated_at: int
    replaced: bool = Field(description="true when this score replaced an earlier one")


def feedback_router(store: FeedbackStore, ledger: LedgerWriter | None) -> APIRouter:
    router = APIRouter(tags=["feedback"], responses=ERRORS)

    @router.post("/v1/feedback", response_model=FeedbackOut, summary="Score a request (replaces an earlier score)")
    async def post_feedback(body: FeedbackIn, caller: Annotated[Principal, Depends(any_key)]) -> dict[str, Any]:
        if caller.can("manage", "write"):
            only_key = None
        elif caller.can("completions", "write") and caller.key_id is not None:
            only_key = caller.key_id
        else:
            raise PermissionDenied("this API key needs permissions.completions = write (its own requests) "
                                   "or permissions.manage = write")
        milli = body.score * SCORE_SCALE
        if milli != milli.to_integral_value():
            raise InvalidRequest("score has more than 3 decimal places", param="score")
        args = (body.request_id, int(milli), body.comment, only_key)
        stored = await run_in_threadpool(store.put, *args)
        if stored is None and ledger is not None:
            await ledger.drain()  # the record may still be in this process's buffer
            stored = await run_in_threadpool(store.put, *args)
        if stored is None:
            raise NotFound(f"no request with id {body.request_id!r} in the ledger (if it has just finished "
                           "on another gateway replica, retry in a moment)", param="request_id")
        return {"request_id": stored.request_id, "score": stored.score_milli / SCORE_SCALE,
                "comment": stored.comment, "created_at": stored.created_at, "updated_at": stored.updated_at,
                "replaced": stored.replaced}

    return router
