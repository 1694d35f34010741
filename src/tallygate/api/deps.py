"""FastAPI dependencies shared by the management routers."""

from fastapi import Request

from tallygate.errors import InvalidRequest, PermissionDenied
from tallygate.pipeline.auth import Authenticator
from tallygate.types import Principal


def require(area: str, level: str):  # type: ignore[no-untyped-def]
    """A dependency that authenticates the caller and checks one permission."""

    async def dependency(request: Request) -> Principal:
        auth: Authenticator = request.app.state.auth
        principal = await auth.authenticate(request.headers.get("authorization"))
        if not principal.can(area, level):
            raise PermissionDenied(f"this API key needs permissions.{area} = {level} or higher")
        return principal

    return dependency


async def any_key(request: Request) -> Principal:
    """Any valid key, whatever its permissions."""
    auth: Authenticator = request.app.state.auth
    return await auth.authenticate(request.headers.get("authorization"))


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
