"""FastAPI dependencies shared by the management routers."""

from fastapi import Request

from tallygate.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from tallygate.manage.sessions import SessionStore
from tallygate.pipeline.auth import Authenticator
from tallygate.types import Principal

SESSION_COOKIE = "tallygate_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfFailed(PermissionDenied):
    code = "csrf_failed"


def check_origin(request: Request) -> None:
    """Refuse a cookie-authenticated change sent from another origin (when the browser names one)."""
    origin = request.headers.get("origin")  # compared by host: a TLS proxy in front may change the scheme
    if origin is not None and origin.partition("://")[2] != request.headers.get("host", ""):
        raise CsrfFailed(f"cross-origin request refused (Origin {origin!r})")


async def authenticate(request: Request) -> Principal:
    """The caller: a Bearer key, or else the dashboard session cookie (with CSRF on changes); as
    every process holds it since the last change anywhere (revoked: 401)."""
    auth: Authenticator = request.app.state.auth
    principal = await _caller(request, auth)
    fresh = getattr(request.app.state, "fresh", None)
    if fresh is None or principal.key_id is None:
        return principal
    await fresh()
    return auth.recheck(principal)


async def _caller(request: Request, auth: Authenticator) -> Principal:
    header = request.headers.get("authorization")
    sessions: SessionStore | None = getattr(request.app.state, "sessions", None)
    token = request.cookies.get(SESSION_COOKIE)
    if header or sessions is None or not token:
        return await auth.authenticate(header, request.client.host if request.client else None)
    session = await sessions.get(token)
    if session is None:
        raise AuthenticationFailed("the dashboard session has expired or was signed out: sign in again",
                                   code="session_expired")
    if request.method not in SAFE_METHODS:
        check_origin(request)
        if not session.csrf_ok(request.headers.get(CSRF_HEADER)):
            raise CsrfFailed("a change made with a dashboard session needs the session's X-CSRF-Token header")
    return await auth.verify_digest(session.key_prefix, session.key_digest)


def require(area: str, level: str):  # type: ignore[no-untyped-def]
    """A dependency that authenticates the caller and checks one permission."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not principal.can(area, level):
            raise PermissionDenied(f"this API key needs permissions.{area} = {level} or higher")
        return principal

    return dependency


async def any_key(request: Request) -> Principal:
    """Any valid key, whatever its permissions."""
    return await authenticate(request)


MAX_LABEL_FILTERS = 32  # as many as a key may have labels


def label_filters(request: Request) -> dict[str, str]:
    """`label.<name>=<value>` query parameters as a dict."""
    labels = {k[6:]: v for k, v in request.query_params.items() if k.startswith("label.")}
    if any(not k for k in labels):
        raise InvalidRequest("label filters are written label.<name>=<value>", param="label.")
    if len(labels) > MAX_LABEL_FILTERS:
        raise InvalidRequest(f"at most {MAX_LABEL_FILTERS} label.<name> filters are allowed, got {len(labels)}",
                             param="label.")
    return labels
