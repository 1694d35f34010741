"""`GET /healthz` (the process is alive) and `GET /readyz` (it can serve: database reachable and
migrated to head, Redis reachable when configured, ledger backlog under a bound).

No authentication and nothing secret: `/readyz` answers 200 `{"status": "ready", ...}` or 503
`{"status": "not_ready", "reason": ...}` naming the first failed check. Each check that touches a
server runs off the event loop with a timeout. Either way the body carries `degraded`: what fails
while requests are still served (a ledger database that refuses writes: the records wait in the
journal, so a load balancer keeps sending traffic; operators read it here and in the metrics).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[str | None]]  # None when fine, else the reason


class Readiness:
    """The named checks behind `/readyz`, run in order."""

    def __init__(self, timeout_s: float = 2.0, details: Callable[[], dict[str, Any]] | None = None) -> None:
        self._checks: list[tuple[str, Check]] = []
        self._timeout = timeout_s
        self._details = details or dict  # shown either way (the ledger backlog)

    def add(self, name: str, check: Check) -> None:
        self._checks.append((name, check))

    async def run(self) -> tuple[bool, dict[str, Any]]:
        passed: list[str] = []
        for name, check in self._checks:
            try:
                reason = await asyncio.wait_for(check(), self._timeout)
            except TimeoutError:
                reason = f"{name} did not answer within {self._timeout:g} s"
            except Exception as exc:
                reason = f"{name} check failed: {type(exc).__name__}"
            if reason is not None:
                return False, {"status": "not_ready", "failed": name, "reason": reason, "passed": passed,
                               **self._details()}
            passed.append(name)
        return True, {"status": "ready", "passed": passed, **self._details()}


def health_router(readiness: Readiness) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is alive (no auth)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The gateway can serve: database, Redis, ledger backlog (no auth)",
                responses={503: {"description": "not ready; `reason` says why"}})
    async def readyz() -> JSONResponse:
        ok, body = await readiness.run()
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
