"""Bodies of `/v1/manage/ratelimit` (published in `/openapi.json`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from tallygate.manage.budget_schemas import BudgetScope, _Strict
from tallygate.manage.schemas import KeyName, UserRef

Count = Annotated[int, Field(ge=1, le=10**12, strict=True)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LIMITS = ("requests_per_second", "requests_per_minute", "tokens_per_minute", "max_concurrent")


class RateLimitScope(BudgetScope):
    """Exactly one of budgets' scopes (`label`, `tag`, `key`) or `model` (requests naming this
    model or `policy/<name>`)."""

    model: ModelName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RateLimitScope:
        given = [k for k in ("label", "tag", "key", "model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of label, tag, key or model")
        return self


class RateLimitCreate(_Strict):
    name: KeyName
    scope: RateLimitScope
    requests_per_second: Count | None = Field(None, description="requests admitted in any 1-second window")
    requests_per_minute: Count | None = Field(None, description="requests admitted in any 60-second window")
    tokens_per_minute: Count | None = Field(None, description="input + output tokens in any 60-second window "
                                                              "(the worst case while in flight)")
    max_concurrent: Count | None = Field(None, description="requests in flight at once")

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitCreate:
        if all(getattr(self, f) is None for f in LIMITS):
            raise ValueError("give at least one of requests_per_second, requests_per_minute, tokens_per_minute "
                             "or max_concurrent")
        return self


class RateLimitUpdate(_Strict):
    """Every field given replaces the stored one (a limit set to null stops applying)."""

    name: KeyName | None = None
    scope: RateLimitScope | None = None
    requests_per_second: Count | None = None
    requests_per_minute: Count | None = None
    tokens_per_minute: Count | None = None
    max_concurrent: Count | None = None


class RateLimit(BaseModel):
    id: str
    name: str
    scope: dict[str, Any] = Field(description='{"label": {...}}, {"tag": "path"}, {"key": "<key id>"} or '
                                              '{"model": "<model or policy/name>"}')
    requests_per_second: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    created_by: UserRef
    created_at: str | None


class RateLimitList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RateLimit]


class RuleCounts(BaseModel):
    requests: int = Field(description="requests admitted in the last 60 seconds")
    requests_last_second: int = Field(description="requests admitted in the last second")
    tokens: int = Field(description="tokens counted in the last 60 seconds (the worst case while in flight)")
    in_flight: int = Field(description="requests in flight now")


class RateLimitUsage(BaseModel):
    id: str
    name: str
    scope: dict[str, Any]
    requests_per_second: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    usage: RuleCounts


class KeyRefusals(BaseModel):
    budget_exceeded: int = Field(description="402s: refused by a budget or the key's own limit")
    rate_limit_exceeded: int = Field(description="429s: refused by a rate limit")


class KeyLimits(BaseModel):
    id: str
    rate_limits: list[str] = Field(description="ids of the rate limits on every request of this key "
                                               "(its key and label limits)")
    refusals_last_hour: KeyRefusals


class KeyLimitsUsage(BaseModel):
    object: Literal["ratelimit.usage"] = "ratelimit.usage"
    counted_by: Literal["redis", "process"] = Field(
        description="redis: every process's admissions; process: this process's alone (no Redis, or it is "
                    "unreachable)")
    window_s: int
    refusals_since: str
    limits: list[RateLimitUsage]
    keys: list[KeyLimits]
