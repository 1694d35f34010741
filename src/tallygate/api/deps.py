"""FastAPI dependencies shared by the management routers."""

import datetime as dt

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


def label_filters(request: Request) -> dict[str, str]:
    """`label.<name>=<value>` query parameters as a dict."""
    labels = {k[6:]: v for k, v in request.query_params.items() if k.startswith("label.")}
    if any(not k for k in labels):
        raise InvalidRequest("label filters are written label.<name>=<value>", param="label.")
    return labels


def parse_time(value: str | None, param: str) -> int | None:
    """ISO 8601 (a date, or a date-time; UTC when no offset) or epoch milliseconds -> epoch ms."""
    if value is None or value == "":
        return None
    if value.isdigit():
        if len(value) > 15:
            raise InvalidRequest(f"{param} is out of range: epoch milliseconds have at most 15 digits",
                                 param=param)
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{param} must be an ISO 8601 date or date-time, or epoch milliseconds; "
                             f"got {value!r}", param=param) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)
