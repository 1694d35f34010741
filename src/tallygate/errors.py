"""Every error the gateway returns, as one tree that renders to OpenAI's error JSON.

    GatewayError                      (500 server_error)
    +-- InvalidRequest                (400 invalid_request_error, names the `param`)
    |   +-- BadTag                    (400, param "request_tags")
    +-- PayloadTooLarge               (413)
    +-- RequestTimeout                (408: a head or body too slow, answered by the HTTP edge)
    +-- AuthenticationFailed          (401)
    +-- TooManyFailedAttempts         (429: too many wrong keys from one address, `retry-after`)
    +-- PermissionDenied              (403)
    +-- MethodNotAllowed              (405, with `Allow`)
    +-- NotFound                      (404)
    |   +-- ModelNotFound             (404 model_not_found)
    +-- BudgetExceeded                (402 budget_exceeded)
    +-- RateLimited                   (429 rate_limit_exceeded: a rate limit, `retry-after`)
    +-- AuthUnavailable               (503 auth_unavailable: key not cached, database away)
    +-- LedgerUnavailable             (503 ledger_unavailable: the journal is full)
    +-- JournalUnavailable            (503 journal_unavailable: the disk refuses the journal)
    +-- BudgetUnavailable             (503: shared budget state unreachable, limits must hold)
    +-- RequestCancelled              (503: the gateway stopped before the request finished)
    +-- UpstreamError                 (an error that came from, or reaching, a provider; every one
        |                              says `x-should-retry: true|false`, as OpenAI's API does)
        +-- UpstreamHTTPError         (the provider answered with an error status: 429 and 503
        |                              keep theirs, the provider's other 5xx are a 502; a 404
        |                              saying the target has no such model is `model_missing`)
        +-- UpstreamTimeout           (504)
        +-- UpstreamUnavailable       (502: refused, reset, DNS ...)
        |   +-- UpstreamCutOff        (502: a JSON answer's body cut short: billed)
        +-- UpstreamProtocolError     (502: the provider sent something we cannot read)
        +-- AllTargetsFailed          (every target of a routing policy failed: 502, or the
                                       status all attempts shared, e.g. 429 or 504)
    +-- PolicyNotConfigured           (500: an API key names a policy the config lacks)

Services raise these; one function (`render`) turns them into a status and a body.
Messages never carry upstream bodies or secrets.
"""

from __future__ import annotations

import re
from typing import Any

import orjson


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


def _retry_after_header(seconds: float | None) -> list[tuple[bytes, bytes]]:
    """`retry-after` in whole seconds (rounded up), for a finite wait of at most an hour."""
    if seconds is None or not 0 <= seconds < float("inf"):
        return []
    return [(b"retry-after", b"%d" % int(min(seconds, 3600.0) + 0.999))]


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class BadTag(InvalidRequest):
    code = "invalid_request_tag"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="request_tags")


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"
    # Up to this many declared bytes the rest of the body is read and dropped, so the client
    # (still sending) reads the 413; past it, or unannounced, the connection is closed instead.
    DRAIN_MAX = 16 * 1024 * 1024

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"request body is larger than the {limit}-byte limit")
        self.close = declared is None or declared > self.DRAIN_MAX

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"connection", b"close")] if self.close else []


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class TooManyFailedAttempts(GatewayError):
    """A client address past its allowance of failed key checks (`pipeline/throttle.py`)."""

    status = 429
    type = "rate_limit_error"
    code = "too_many_failed_attempts"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many requests with a wrong API key from this address; retry after the "
                         "retry-after header's seconds (a valid key is served at once)")
        self.retry_after = retry_after

    def headers(self) -> list[tuple[bytes, bytes]]:
        return _retry_after_header(self.retry_after)


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_permissions"


class RequestTimeout(GatewayError):
    """The HTTP edge gave up on a request's head or body (`api/edges.py`)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, method: str, allow: bytes) -> None:
        super().__init__(f"method {method} is not allowed here (allowed: {allow.decode()})")
        self.allow = allow

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow)]


class ModelNotFound(NotFound):
    code = "model_not_found"


class AuthUnavailable(GatewayError):
    """The key is not in memory and the database that would know it cannot be reached."""

    status = 503
    type = "server_error"
    code = "auth_unavailable"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"5")]


class LedgerUnavailable(GatewayError):
    """The ledger journal is full (the database has been away too long): refuse rather than
    serve a request that could not be recorded."""

    status = 503
    type = "server_error"
    code = "ledger_unavailable"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"30")]


class JournalUnavailable(GatewayError):
    """The ledger journal's disk refuses writes (full, failing, read-only): no request may be
    answered without its record, so none is taken until the journal takes writes again."""

    status = 503
    type = "server_error"
    code = "journal_unavailable"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"5")]


class RequestCancelled(GatewayError):
    """The gateway stopped (shutting down) before the request finished."""

    status = 503
    type = "server_error"
    code = "request_cancelled"


class BudgetExceeded(GatewayError):
    """A limit would be passed; `scope_id` names the key or budget that refused (never sent)."""

    status = 402
    type = "budget_exceeded"
    code = "budget_exceeded"
    scope_id: str | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-should-retry", b"false")]


class RateLimited(GatewayError):
    """A rate limit (requests or tokens per minute, requests in flight) would be passed; OpenAI's
    shape (`type` "requests" or "tokens"); `limit_headers` are the x-ratelimit-* of the answer.
    `rule_id`, `scope_kind` and `unnamed` (the message without the limit's name) are never sent."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    rule_id: str | None = None
    scope_kind = ""
    unnamed: str | None = None

    def __init__(self, message: str, *, retry_after: float | None, tokens: bool = False,
                 limit_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit_headers = limit_headers or []
        if tokens:
            self.type = "tokens"

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is None:
            return [*self.limit_headers]
        ms = b"%d" % int(self.retry_after * 1000 + 0.999)
        return [*_retry_after_header(self.retry_after), (b"retry-after-ms", ms), *self.limit_headers]


class BudgetUnavailable(GatewayError):
    """A limit or budget applies but the shared budget state (Redis) cannot be reached."""

    status = 503
    type = "server_error"
    code = "budget_unavailable"


class UpstreamError(GatewayError):
    """A provider could not serve the request. `retryable` says whether another try may succeed."""

    status = 502
    type = "upstream_error"
    retryable = True
    # The target has no such model (Bedrock's ResourceNotFoundException, Azure's DeploymentNotFound,
    # Google's NOT_FOUND model, OpenAI's model_not_found): not worth retrying there, but another
    # target of a policy may well have it, so the policy moves on.
    model_missing = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`x-should-retry` tells SDKs (openai, anthropic) whether another try may succeed:
        throttling, quota, overload and 5xx yes; refused credentials and bad bodies no."""
        return [(b"x-should-retry", b"true" if self.retryable else b"false")]


class UpstreamHTTPError(UpstreamError):
    """The provider answered with an error status; the caller's own 4xx keep their status."""

    def __init__(self, upstream_status: int, message: str, *, detail: str | None = None,
                 retry_after: float | None = None, model_missing: bool = False) -> None:
        # The provider's own words reach the caller only for the caller's own mistakes (4xx but
        # 401/403/407), credential-like strings redacted: they may quote keys or internal hosts.
        if detail and 400 <= upstream_status < 500 and upstream_status not in (401, 403, 407):
            message = f"{message}: {redact(detail)[:300]}"
        if upstream_status == 429:
            status, etype, code = 429, "rate_limit_error", "upstream_rate_limited"
        elif upstream_status in (401, 403):
            # The gateway's own provider credentials were refused: not the caller's fault.
            status, etype, code = 502, "upstream_error", "upstream_auth_failed"
        elif upstream_status == 404 and model_missing:
            status, etype, code = 404, "invalid_request_error", "upstream_model_not_found"
        elif 400 <= upstream_status < 500:
            status, etype, code = upstream_status, "invalid_request_error", "upstream_rejected"
        elif upstream_status == 503:  # overloaded, model not ready: the same answer, later
            status, etype, code = 503, "upstream_error", "upstream_overloaded"
        else:
            status, etype, code = 502, "upstream_error", "upstream_server_error"
        super().__init__(message, code=code)
        self.status = status
        self.type = etype
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.retryable = upstream_status == 429 or upstream_status >= 500
        self.model_missing = model_missing and upstream_status == 404

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), *_retry_after_header(self.retry_after)]


_SECRET_LIKE = re.compile(
    r"(?i)\b(?:bearer|basic)\s+\S+"                                  # auth headers
    r"|\b(?:sk|pk|rk|tg|key|api|xai|gsk|hf)[-_][A-Za-z0-9_\-]{6,}"   # provider key shapes
    r"|\b(?:api[_-]?key|token|secret|password)\b[\"']?\s*[:=]\s*\S+"
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b|\bAIza[0-9A-Za-z_\-]{35}\b"      # AWS and Google key ids
    r"|\b(?:ghp|gho|ghs|github_pat|xox[abprs])[-_][A-Za-z0-9_\-]{10,}"   # GitHub, Slack tokens
    r"|[A-Za-z0-9_\-+/]{32,}")                                       # long opaque tokens


def redact(text: str) -> str:
    """Hide anything in a provider's message that looks like a credential."""
    return _SECRET_LIKE.sub("[redacted]", text)


class UpstreamTimeout(UpstreamError):
    """No answer in time. `sent`: the request had reached the provider (it was not the connection
    that timed out), which then bills it as if it had answered."""

    status = 504
    type = "timeout_error"
    code = "upstream_timeout"

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamCutOff(UpstreamUnavailable):
    """An answer whose head came and whose body was cut short (a JSON answer's connection closed
    before its Content-Length; a stream's after its 200, its first event or not): the provider
    made (or began) the answer and bills it as if it had arrived. (For JSON, the
    HTTP client reads the body with the head, so its status is not known: it is taken as a
    success, as a JSON request's timeout is taken as sent.)"""


class UpstreamProtocolError(UpstreamError):
    code = "upstream_bad_response"


def describe(err: UpstreamError) -> str:
    """One attempt's cause in the gateway's own words: never the provider's body or message."""
    if isinstance(err, UpstreamHTTPError):
        return f"HTTP {err.upstream_status} ({err.code})"
    return f"{err.code}: {err.message}"


class AllTargetsFailed(UpstreamError):
    """Every attempt of a routing policy failed; the message lists each attempt's cause.

    `failures` holds (target, provider, error) per attempt, in order. The status is the one all
    attempts share when they agree (429 keeps the shortest `retry-after`, 504 stays a timeout), so
    clients back off as they would for one provider; mixed causes are a 502.
    """

    code = "all_targets_failed"

    def __init__(self, policy: str, failures: list[tuple[str, str, UpstreamError]]) -> None:
        if failures:
            causes = "; ".join(f"{target} ({provider}): {describe(err)}"
                               for target, provider, err in failures)
            message = f"every target of routing policy {policy!r} failed: {causes}"
        else:
            message = f"no target of routing policy {policy!r} is available (all are cooling down)"
        super().__init__(message)
        self.failures = failures
        statuses = {err.status for _, _, err in failures}
        if len(statuses) == 1:
            self.status = statuses.pop()
            self.type = failures[-1][2].type
        waits = [e.retry_after for _, _, e in failures if isinstance(e, UpstreamHTTPError) and e.retry_after]
        self.retry_after = min(waits) if waits and self.status == 429 else None
        self.retryable = not failures or any(err.retryable for _, _, err in failures)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), *_retry_after_header(self.retry_after)]


class PolicyNotConfigured(GatewayError):
    """An API key is bound to a routing policy that this gateway's config does not define."""

    code = "policy_not_configured"
