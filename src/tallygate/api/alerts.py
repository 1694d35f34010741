"""`GET /v1/alerts`: every alert fired, newest first, filtered and cursor-paginated; and the
raw-ASGI `/metrics` handler (Prometheus text, rendered in a worker thread)."""

import asyncio
import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from tallygate.analytics.query import parse_time
from tallygate.api.deps import require
from tallygate.errors import InvalidRequest
from tallygate.manage.schemas import ERRORS
from tallygate.observe.metrics import CONTENT_TYPE, GatewayMetrics
from tallygate.pipeline.throttle import FailureThrottle
from tallygate.pipeline.wire import Receive, Scope, Send, client_address, headers_of, send_bytes
from tallygate.store.alerts import AlertFilter, AlertStore
from tallygate.types import Principal

Kind = Literal["threshold", "projected_overrun", "spend_spike", "error_rate"]


def alerts_router(store: AlertStore) -> APIRouter:
    router = APIRouter(tags=["alerts"], responses=ERRORS)
    reader = Depends(require("manage", "read"))

    @router.get("/v1/alerts", summary="Alerts fired, newest first")
    async def list_alerts(
        _: Annotated[Principal, reader],
        kind: Kind | None = None,
        subject: Annotated[str | None, Query(description="subject id: a key id, budget:<id>, or a group")] = None,
        from_: Annotated[str | None, Query(alias="from", description="inclusive; ISO 8601 or epoch ms")] = None,
        to: Annotated[str | None, Query(description="exclusive; ISO 8601 or epoch ms")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        f = AlertFilter(kind=kind, subject=subject, from_ms=parse_time(from_, "from"), to_ms=parse_time(to, "to"))
        if f.from_ms is not None and f.to_ms is not None and f.from_ms > f.to_ms:
            raise InvalidRequest("from is after to", param="from")
        rows, nxt = await run_in_threadpool(store.page, f, limit, cursor)
        return {"object": "list", "data": rows, "has_more": nxt is not None, "next_cursor": nxt}

    return router


class MetricsEndpoint:
    """`GET /metrics`: off the proxy's path (rendered in a thread), optionally behind a token.
    Wrong tokens are throttled per client address like wrong keys (the right token never is)."""

    def __init__(self, metrics: GatewayMetrics, token: str | None) -> None:
        self._metrics = metrics
        self._token = f"Bearer {token}".encode() if token else None
        self._throttle = FailureThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is not None:
            given = headers_of(scope, b"authorization").get(b"authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, self._token):
                return await self._refuse(send, client_address(scope))
        body = await asyncio.to_thread(self._metrics.render)
        await send_bytes(send, 200, body, [(b"content-type", CONTENT_TYPE.encode())])

    async def _refuse(self, send: Send, client: str | None) -> None:
        wait = self._throttle.wait_s(client) if client else 0.0
        if wait:
            return await send_bytes(send, 429, b"too many wrong tokens from this address\n",
                                    [(b"content-type", b"text/plain"), (b"retry-after", b"%d" % int(wait + 0.999))])
        if client:
            self._throttle.failed(client)
        await send_bytes(send, 401, b"unauthorized\n", [(b"content-type", b"text/plain")])
