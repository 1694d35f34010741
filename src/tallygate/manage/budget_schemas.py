"""Bodies of `/v1/manage/budget` (published in `/openapi.json`). Money as exact decimal strings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator, model_validator

from tallygate.errors import BadTag
from tallygate.manage.schemas import WINDOW_DOC, KeyName, Labels, Money, Period, UserRef
from tallygate.pipeline.tags import parse_tags

KeyId = Annotated[str, StringConstraints(min_length=1, max_length=36)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetScope(_Strict):
    """Exactly one of: `label` (requests of keys carrying every name=value pair), `tag` (requests
    with a tag at or under this path, each counted once), `key` (requests of one key)."""

    label: Labels | None = None
    tag: str | None = None
    key: KeyId | None = None

    @field_validator("label")
    @classmethod
    def _some_labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and not v:
            raise ValueError("needs at least one name=value pair")
        return v

    @field_validator("tag")
    @classmethod
    def _valid_tag(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_tags([v], None)
            except BadTag as err:
                raise ValueError(err.message.replace("request_tags[0]", "the tag")) from None
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetScope:
        given = [k for k in ("label", "tag", "key") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of label, tag or key")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class BudgetCreate(_Strict):
    name: KeyName
    scope: BudgetScope
    monthly_limit: Money = Field(description="USD per `period` (named for the default, the calendar month)")
    period: Period = "month"
    enforce: StrictBool = Field(True, description="false: a soft budget, alerted on and shown, never refusing")


class BudgetUpdate(_Strict):
    """Every field given replaces the stored one; absent fields stay."""

    name: KeyName | None = None
    scope: BudgetScope | None = None
    monthly_limit: Money | None = None
    period: Period | None = None
    enforce: StrictBool | None = None  # a JSON boolean: "no" or 0 is a 400, not a soft budget


class Budget(BaseModel):
    id: str
    name: str
    scope: dict[str, Any] = Field(description='{"label": {...}}, {"tag": "path"} or {"key": "<key id>"}')
    monthly_limit: str = Field(description="USD per `period`, exact decimal string")
    monthly_spend: str | None = Field(description="USD spent in the current window of `period`, exact decimal "
                                                  "string; null while the shared budget state is unreachable")
    monthly_reserved: str | None = Field(description="USD held by requests in flight (null: as above)")
    period: str | dict[str, int] = Field(description=WINDOW_DOC["period"])
    window_start: str = Field(description=WINDOW_DOC["window_start"])
    window_end: str | None = Field(description=WINDOW_DOC["window_end"])
    enforce: bool = Field(description="false: a soft budget (never refuses)")
    created_by: UserRef
    created_at: str | None


class BudgetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Budget]
