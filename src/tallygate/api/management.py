"""The management side (logs now; keys and analytics later) on FastAPI.

Convenience is cheap here, unlike on the proxy routes: FastAPI validates parameters and
publishes `/openapi.json`. Every error still leaves as OpenAI-shaped JSON.
"""


import datetime as dt
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tallygate.errors import GatewayError, InvalidRequest, NotFound, PermissionDenied
from tallygate.pipeline.auth import Authenticator
from tallygate.store.logs import LogFilter, LogReader
from tallygate.types import Principal


def _error_response(err: GatewayError) -> JSONResponse:
    return JSONResponse(err.payload(), status_code=err.status,
                          headers={k.decode(): v.decode() for k, v in err.headers()})


def parse_time(value: str | None, param: str) -> int | None:
    """ISO 8601 (a date, or a date-time; UTC when no offset) or epoch milliseconds -> epoch ms."""
    if value is None or value == "":
        return None
    if value.isdigit():
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{param} must be an ISO 8601 date or date-time, or epoch milliseconds; "
                             f"got {value!r}", param=param) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def require(area: str, level: str):  # type: ignore[no-untyped-def]
    """A dependency that authenticates the caller and checks one permission."""

    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.auth
        principal = await auth.authenticate(request.headers.get("authorization"))
        if not principal.can(area, level):
            raise PermissionDenied(f"this API key needs permissions.{area} = {level} or higher")
        return principal

    return dependency


def create_management_app(auth: Authenticator, logs: LogReader) -> FastAPI:
    app = FastAPI(title="Tallygate management API", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.auth = auth

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, err: GatewayError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return _error_response(InvalidRequest(f"{param}: {first['msg']}" if param else first["msg"],
                                              param=param))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error_response(NotFound("no such route"))
        err = GatewayError(str(exc.detail))
        err.status, err.type = exc.status_code, "invalid_request_error"
        return _error_response(err)

    reader = Depends(require("manage", "read"))

    @app.get("/v1/logs", summary="Request logs, newest first")
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
        labels = {k[6:]: v for k, v in request.query_params.items() if k.startswith("label.")}
        if any(not k for k in labels):
            raise InvalidRequest("label filters are written label.<name>=<value>", param="label.")
        f = LogFilter(tag=tag, labels=labels, key_id=key, model=model, status=status,
                      from_ms=parse_time(from_, "from"), to_ms=parse_time(to, "to"))
        if f.from_ms is not None and f.to_ms is not None and f.from_ms > f.to_ms:
            raise InvalidRequest("from is after to", param="from")
        data, nxt = await run_in_threadpool(logs.page, f, limit, cursor)
        return {"object": "list", "data": data, "has_more": nxt is not None, "next_cursor": nxt}

    @app.get("/v1/logs/{request_id}", summary="One request's ledger record")
    async def get_log(request_id: str, _: Annotated[Principal, reader]) -> dict:
        record = await run_in_threadpool(logs.get, request_id)
        if record is None:
            raise NotFound(f"no request with id {request_id!r}", param="request_id")
        return record

    return app
