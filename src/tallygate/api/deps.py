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


# The range of times the ledger can hold: 1970-01-01 up to (not including) 9999-01-01 UTC, so
# that any month, day or hour boundary of a time in range is itself a valid date.
MIN_MS = 0
MAX_MS = int(dt.datetime(9999, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _in_range(ms: int, value: str, param: str) -> int:
    if not MIN_MS <= ms < MAX_MS:
        raise InvalidRequest(f"{param} {value!r} is out of range: times from 1970-01-01 up to 9999-01-01 "
                             "(UTC) are accepted", param=param)
    return ms


def parse_time(value: str | None, param: str) -> int | None:
    """ISO 8601 (a date, or a date-time; UTC when no offset) or epoch milliseconds -> epoch ms."""
    if value is None or value == "":
        return None
    if value.isascii() and value.isdigit():  # not "²" or other Unicode digits int() refuses
        if len(value) > 15:
            raise InvalidRequest(f"{param} is out of range: epoch milliseconds have at most 15 digits",
                                 param=param)
        return _in_range(int(value), value, param)
    bad = InvalidRequest(f"{param} must be an ISO 8601 date or date-time, or epoch milliseconds; "
                         f"got {value!r}", param=param)
    if not value.isascii():
        raise bad
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise bad from None
    return _in_range(ms, value, param)
