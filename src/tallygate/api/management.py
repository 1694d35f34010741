"""The management side (logs, keys, analytics, feedback) on FastAPI.

Convenience is cheap here, unlike on the proxy routes: FastAPI validates parameters and
publishes `/openapi.json`. Every error still leaves as OpenAI-shaped JSON with status 400 for
bad input (never FastAPI's 422).
"""

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from tallygate.analytics.oncall import OnCall
from tallygate.analytics.service import Analytics
from tallygate.api.alerts import alerts_router
from tallygate.api.analytics import analytics_router
from tallygate.api.budgets import budgets_router
from tallygate.api.dashboard import dashboard_router
from tallygate.api.feedback import feedback_router
from tallygate.api.health import Readiness, health_router
from tallygate.api.keys import keys_router
from tallygate.api.limits import StorableText
from tallygate.api.logs import logs_router
from tallygate.api.minutes import minutes_router
from tallygate.api.oncall import oncall_router
from tallygate.api.openapi_doc import refine
from tallygate.api.ratelimits import ratelimits_router
from tallygate.errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound
from tallygate.manage.budgets import BudgetAdmin
from tallygate.manage.keys import KeyAdmin
from tallygate.manage.ratelimits import RateLimitAdmin
from tallygate.manage.sessions import SessionStore
from tallygate.pipeline.auth import Authenticator
from tallygate.store.alerts import AlertStore
from tallygate.store.feedback import FeedbackStore
from tallygate.store.ledger import LedgerWriter
from tallygate.store.logs import LogReader
from tallygate.store.minutes import MinuteSource

log = logging.getLogger("tallygate.management")


def _error_response(err: GatewayError) -> JSONResponse:
    return JSONResponse(err.payload(), status_code=err.status,
                        headers={k.decode(): v.decode() for k, v in err.headers()})


def _validation_message(exc: RequestValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest("request body is not valid JSON", code="invalid_json")
    loc = [str(p) for p in first["loc"] if p not in ("body", "query", "path", "header", "[key]")]
    param = ".".join(loc) or None
    kind = first.get("type")
    msg = "unknown field" if kind == "extra_forbidden" else first["msg"]
    return InvalidRequest(f"{param}: {msg}" if param else msg, param=param)


def _methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method of the routes (included routers too) whose path matches `scope`."""
    found: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] == Match.NONE:
            continue
        found |= getattr(route, "methods", None) or set()
        inner = getattr(route, "routes", None) or getattr(getattr(route, "original_router", None), "routes", None)
        found |= _methods(inner or (), scope)  # an included router: its own routes
    return found


def create_management_app(auth: Authenticator, logs: LogReader, keys: KeyAdmin,
                          analytics: Analytics | None = None, feedback: FeedbackStore | None = None,
                          ledger: LedgerWriter | None = None, sessions: SessionStore | None = None,
                          budgets: BudgetAdmin | None = None, readiness: Readiness | None = None,
                          alerts: AlertStore | None = None, minutes: MinuteSource | None = None,
                          ratelimits: RateLimitAdmin | None = None, oncall: OnCall | None = None) -> FastAPI:
    app = FastAPI(title="Tallygate management API", version="0.1.0", docs_url=None, redoc_url=None)
    app.add_middleware(StorableText)  # no NUL or lone surrogate in a body reaches the database
    app.state.auth = auth
    app.state.timezone = analytics.timezone if analytics is not None else "UTC"
    app.state.budgets = budgets is not None  # the dashboard shows budget panels when this API is served
    app.include_router(logs_router(logs))
    app.include_router(keys_router(keys))
    if analytics is not None:
        app.include_router(analytics_router(analytics))
    if minutes is not None:
        app.include_router(minutes_router(minutes))
    if oncall is not None:
        app.include_router(oncall_router(oncall))
    if feedback is not None:
        app.include_router(feedback_router(feedback, ledger))
    if alerts is not None:
        app.include_router(alerts_router(alerts))
    if budgets is not None:
        app.include_router(budgets_router(budgets))
    if ratelimits is not None:
        app.include_router(ratelimits_router(ratelimits))
    if readiness is not None:
        app.include_router(health_router(readiness))
    if sessions is not None:
        app.state.sessions = sessions
        app.include_router(dashboard_router(auth, sessions))

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, err: GatewayError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("management request %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error_response(GatewayError("the gateway failed to handle this request",
                                            code="internal_error"))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_away(request: Request, exc: Exception) -> JSONResponse:
        log.warning("management request %s %s: database unreachable (%s)", request.method,
                    request.url.path, type(exc).__name__)
        err = GatewayError("the database is unreachable; retry shortly", code="database_unavailable")
        err.status = 503
        return _error_response(err)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error_response(NotFound(f"no route {request.method} {request.url.path} on this "
                                            "gateway; the README lists the routes it serves"))
        if exc.status_code == 405:  # every method of every route on this path, not just one route's
            methods = _methods(app.router.routes, request.scope)
            return _error_response(MethodNotAllowed(request.method, ", ".join(sorted(methods)).encode()))
        err = GatewayError(str(exc.detail))
        err.status, err.type = exc.status_code, "invalid_request_error"
        response = _error_response(err)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    def openapi() -> dict[str, Any]:
        """FastAPI's document with the gateway's own checks added (`api/openapi_doc.py`)."""
        if app.openapi_schema is None:
            app.openapi_schema = refine(get_openapi(title=app.title, version=app.version, routes=app.routes),
                                        keys.policies)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
