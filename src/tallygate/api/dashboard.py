"""`/dashboard` (the single-page app's files) and `/v1/dashboard/session` (sign-in and sign-out).

Signing in exchanges a management key for an HttpOnly, SameSite=Strict session cookie and a
CSRF token the page keeps in memory; the key itself goes no further than the sign-in request.
With the cookie the page calls the same public APIs a user would (`api/deps.authenticate`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from tallygate.api.deps import SESSION_COOKIE, authenticate, check_origin
from tallygate.dashboard import STATIC_DIR, built
from tallygate.errors import PermissionDenied
from tallygate.manage.sessions import Session, SessionStore
from tallygate.pipeline.auth import Authenticator
from tallygate.store.keys import PREFIX_LEN, hash_secret
from tallygate.types import Principal

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
_SECURITY = {"content-security-policy": _CSP, "x-content-type-options": "nosniff",
             "referrer-policy": "no-referrer", "x-frame-options": "DENY"}
_NOT_BUILT = ("<!doctype html><title>Tallygate dashboard</title><h1>The dashboard is not built</h1>"
              "<p>Run <code>make dashboard</code> (or <code>make run</code>) in the repository, then reload.</p>")


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=512, description="a key with permissions.manage = read or write")


def _session_doc(request: Request, principal: Principal, session: Session) -> dict[str, object]:
    """The session as the page sees it; `features` says which optional APIs this gateway serves."""
    return {"object": "dashboard.session", "csrf_token": session.csrf_token, "expires_at": session.expires_at,
            "key": {"id": principal.key_id, "name": principal.name, "permissions": principal.permissions},
            "features": {"budgets": bool(getattr(request.app.state, "budgets", False))},
            "reporting": {"timezone": getattr(request.app.state, "timezone", "UTC")}}


def dashboard_router(auth: Authenticator, sessions: SessionStore) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/v1/dashboard/session")
    async def sign_in(body: SignIn, request: Request) -> JSONResponse:
        check_origin(request)
        secret = body.key.strip()
        principal = await auth.authenticate(f"Bearer {secret}", request.client.host if request.client else None)
        if not principal.can("manage", "read"):
            raise PermissionDenied("this key cannot sign in to the dashboard: it has no management permission "
                                   "(permissions.manage is none); use a key with manage: read or write")
        token, session = await sessions.open(secret[:PREFIX_LEN], hash_secret(secret))
        response = JSONResponse({"signed_in": True, **_session_doc(request, principal, session)}, status_code=201)
        response.set_cookie(SESSION_COOKIE, token, max_age=sessions.ttl_s, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @router.get("/v1/dashboard/session")
    async def current(request: Request) -> JSONResponse:
        """The page's session (200 with `signed_in: false` when there is none, so a fresh page logs no error)."""
        token = request.cookies.get(SESSION_COOKIE)
        session = await sessions.get(token) if token else None
        if session is None:
            return JSONResponse({"object": "dashboard.session", "signed_in": False},
                                headers={"cache-control": "no-store"})
        principal = await authenticate(request)
        return JSONResponse({"signed_in": True, **_session_doc(request, principal, session)},
                            headers={"cache-control": "no-store"})

    @router.delete("/v1/dashboard/session")
    async def sign_out(request: Request) -> JSONResponse:
        await authenticate(request)  # CSRF-checked like any other change
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await sessions.close(token)
        response = JSONResponse({"object": "dashboard.session", "signed_out": True})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.api_route("/dashboard", methods=["GET", "HEAD"])
    async def index_redirect() -> Response:
        return RedirectResponse("/dashboard/", status_code=308)

    @router.api_route("/dashboard/{path:path}", methods=["GET", "HEAD"])
    async def asset(path: str) -> Response:
        if not built():
            return HTMLResponse(_NOT_BUILT, status_code=503, headers=_SECURITY)
        file = _static_file(path)
        if file is not None:
            cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
            return FileResponse(file, headers={**_SECURITY, "cache-control": cache})
        if path.startswith("assets/") or "." in path.rpartition("/")[2]:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(STATIC_DIR / "index.html", headers={**_SECURITY, "cache-control": "no-cache"})

    return router


def _static_file(path: str) -> Path | None:
    """A built file under STATIC_DIR, never outside it."""
    if not path or path.endswith("/"):
        return None
    candidate = (STATIC_DIR / path).resolve()
    root = STATIC_DIR.resolve()
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate
