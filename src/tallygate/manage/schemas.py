"""Request and response bodies of the management API (validated by pydantic, published in
`/openapi.json`). Money travels as decimal strings so no client float can round it."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from tallygate.core import windows
from tallygate.core.textrules import MONEY, decimal_text, has_invisible

MAX_LABELS = 32
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
def _visible(text: str) -> str:
    if has_invisible(text):
        raise ValueError("must not contain control or invisible formatting characters")
    return text


LabelValue = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_visible)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
# At most $9M a month: picodollars must fit a signed 64-bit integer.
Money = Annotated[Decimal, BeforeValidator(decimal_text(MONEY, "2000.50")),
                  Field(ge=0, le=9_000_000, decimal_places=12, allow_inf_nan=False)]
# A limit's window (core/windows.py): the API's form in, the stored text ('hours:6') out.
Period = Annotated[str, BeforeValidator(windows.parse), WithJsonSchema({
    "description": 'the window a limit counts spend over: "day" and "week" (ISO, from Monday) and "month" '
                   '(the default) begin at midnight in the reporting time zone; '
                   '{"hours": N} or {"days": N} is a rolling window',
    "anyOf": [{"type": "string", "enum": ["day", "week", "month"]},
              *({"type": "object", "properties": {unit: {"type": "integer", "minimum": 1, "maximum": top}},
                 "required": [unit], "additionalProperties": False}
                for unit, top in (("hours", windows.MAX_HOURS), ("days", windows.MAX_DAYS)))]})]
WINDOW_DOC = {
    "period": 'the window: "day", "week", "month", {"hours": N} or {"days": N}',
    "window_start": "the current window's start, ISO 8601 (UTC)",
    "window_end": "the current window's end, ISO 8601 (UTC); null for a rolling window, which ends now",
}
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_visible)]
PolicyName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Permissions(_Strict):
    completions: Literal["write", "none"] = "write"
    manage: Literal["write", "read", "none"] = "none"


class KeyCreate(_Strict):
    name: KeyName
    monthly_limit: Money | None = Field(None, description="USD per `period` (named for the default, the "
                                                          "calendar month); null = no limit")
    period: Period = "month"
    permissions: Permissions = Field(default_factory=Permissions)
    labels: Labels = Field(default_factory=dict)
    policy: PolicyName | None = None


class KeyUpdate(_Strict):
    """Every field given replaces the stored one (labels as a whole); absent fields stay."""

    name: KeyName | None = None
    monthly_limit: Money | None = None
    period: Period | None = None
    permissions: Permissions | None = None
    labels: Labels | None = None
    policy: PolicyName | None = None


class UserRef(BaseModel):
    id: str | None
    name: str | None


class KeyRecord(BaseModel):
    id: str | None
    name: str
    key_prefix: str | None
    monthly_limit: str | None = Field(description="USD per `period`, exact decimal string; null = no limit")
    monthly_spend: str | None = Field(description="USD spent in the current window of `period`, exact decimal "
                                                  "string; null while the shared budget state is unreachable")
    monthly_reserved: str | None = Field(description="USD held by requests in flight (null: as above)")
    period: str | dict[str, int] = Field("month", description=WINDOW_DOC["period"])
    window_start: str | None = Field(None, description=WINDOW_DOC["window_start"])
    window_end: str | None = Field(None, description=WINDOW_DOC["window_end"])
    permissions: Permissions
    labels: dict[str, str]
    created_by: UserRef
    created_at: str | None
    revoked_at: str | None
    policy: str | None


class CreatedKey(KeyRecord):
    key: str = Field(description="The secret. Shown this once; only its hash is stored.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyRecord]
    has_more: bool
    next_cursor: str | None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 403, 404)}
