"""What an analytics question asks: dimensions to group by, filters, a time range.

`group_by` is a comma-separated list of dimensions:

    key  model  served_model  provider  status      one value per request
    label.<name>                                    the key's label (null when absent)
    tag                                             each tag as sent (a request is in one row per tag)
    tag_level.<n>                                   tag paths cut to n segments (once per cut path)
    time.hour  time.day  time.month                 buckets in the reporting time zone (UTC by default)

At most one tag dimension and one time dimension. Tag dimensions make rows overlap: a request
with two tags is in two rows, so the totals (each request once) are not the sum of the rows.
With a `tag` filter, tag rows are limited to that subtree (a drill-down).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

from tallygate.core.tagpath import MAX_DEPTH
from tallygate.core.zones import UTC, after, local_midnight, zone
from tallygate.errors import InvalidRequest

PLAIN = ("key", "model", "served_model", "provider", "status")
TIME_UNITS = ("hour", "day", "month")
MAX_DIMENSIONS = 4
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
DIMENSION_HELP = ("key, model, served_model, provider, status, label.<name>, tag, tag_level.<n> "
                  f"(1-{MAX_DEPTH}), time.hour, time.day, time.month")


@dataclass(frozen=True, slots=True)
class Dim:
    """One grouping dimension: `kind` is a PLAIN name, 'label', 'tag', 'tag_level' or 'time'."""

    kind: str
    arg: str | int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}.{self.arg}"

    @property
    def is_tag(self) -> bool:
        return self.kind in ("tag", "tag_level")


def parse_dimension(text: str, param: str = "group_by") -> Dim:
    name = text.strip()
    if name in PLAIN or name == "tag":
        return Dim(name)
    kind, _, arg = name.partition(".")
    if kind == "label" and _LABEL.match(arg):
        return Dim("label", arg)
    if kind == "tag_level" and arg.isascii() and arg.isdigit() and 1 <= int(arg) <= MAX_DEPTH:
        return Dim("tag_level", int(arg))
    if kind == "time" and arg in TIME_UNITS:
        return Dim("time", arg)
    raise InvalidRequest(f"unknown dimension {name!r} in {param}; use {DIMENSION_HELP}", param=param)


def parse_group_by(text: str | None, param: str = "group_by") -> tuple[Dim, ...]:
    if text is None or not text.strip():
        return ()
    dims = tuple(parse_dimension(part, param) for part in text.split(","))
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"{param} names a dimension twice", param=param)
    if len(dims) > MAX_DIMENSIONS:
        raise InvalidRequest(f"{param} has {len(dims)} dimensions; at most {MAX_DIMENSIONS}", param=param)
    if sum(d.is_tag for d in dims) > 1:
        raise InvalidRequest(f"{param} may hold one of tag, tag_level.<n>", param=param)
    if sum(d.kind == "time" for d in dims) > 1:
        raise InvalidRequest(f"{param} may hold one time dimension", param=param)
    return dims


@dataclass(slots=True)
class Query:
    """One analytics question. Times are epoch ms; `to_ms` is exclusive; None is unbounded."""

    dims: tuple[Dim, ...] = ()
    tag: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None
    model: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    current_labels: bool = False
    tz: str = UTC  # the reporting time zone of time buckets (an IANA name)
    status: int | None = None
    error_code: str | None = None
    provider: str | None = None
    served_model: str | None = None

    def __post_init__(self) -> None:
        if self.from_ms is not None and self.to_ms is not None and self.from_ms > self.to_ms:
            raise InvalidRequest("from is after to", param="from")
        tag_dim = self.tag_dim
        if self.tag and tag_dim and tag_dim.kind == "tag_level" and int(tag_dim.arg or 0) < self.tag.count("/") + 1:
            raise InvalidRequest(f"tag_level.{tag_dim.arg} is above the tag filter {self.tag!r} "
                                 f"({self.tag.count('/') + 1} levels); group by a deeper level",
                                 param="group_by")

    @property
    def tag_dim(self) -> Dim | None:
        return next((d for d in self.dims if d.is_tag), None)

    @property
    def time_dim(self) -> Dim | None:
        return next((d for d in self.dims if d.kind == "time"), None)

    @property
    def overlapping(self) -> bool:
        """Whether one request may be in several rows (only tag dimensions do that)."""
        return self.tag_dim is not None

    @property
    def record_filters(self) -> bool:
        """Whether a filter only the raw records hold is set (status, error code, provider, served model)."""
        return any(v is not None for v in (self.status, self.error_code, self.provider, self.served_model))

    @property
    def filtered(self) -> bool:
        """Whether any filter but the tag is set."""
        return bool(self.labels) or self.key_id is not None or self.model is not None or self.record_filters

    def with_dims(self, dims: tuple[Dim, ...]) -> Query:
        return replace(self, dims=dims)

    def span(self, from_ms: int | None, to_ms: int | None, dims: tuple[Dim, ...] = ()) -> Query:
        """A question over the same range and zone, with only `dims` and no filters."""
        return Query(dims, from_ms=from_ms, to_ms=to_ms, tz=self.tz)


def parse_label_mode(value: str | None) -> bool:
    """`labels=recorded` (default: as each record kept them) or `labels=current` -> current?"""
    if value in (None, "", "recorded"):
        return False
    if value == "current":
        return True
    raise InvalidRequest(f"labels must be 'recorded' or 'current', got {value!r}", param="labels")


def parse_zone(value: str | None, default: str = UTC, param: str = "tz") -> str:
    """An IANA time zone name ('Europe/Berlin'); `default` when not given."""
    if value is None or value == "":
        return default
    try:
        zone(value)
    except ValueError:
        raise InvalidRequest(f"{param} must be an IANA time zone name such as UTC, Europe/Berlin or Asia/Kolkata; "
                             f"got {value!r}", param=param) from None
    return "UTC" if value in ("UTC", "Etc/UTC") else value


def parse_month(value: str | None, param: str = "month", tz: str = UTC) -> tuple[int, int]:
    """'YYYY-MM' -> (first ms of the month, first ms of the next), in time zone `tz`."""
    if not value or not re.fullmatch(r"[0-9]{4}-[0-9]{2}", value):
        raise InvalidRequest(f"{param} must be a month written YYYY-MM, got {value!r}", param=param)
    year, month = int(value[:4]), int(value[5:])
    if not 1 <= month <= 12 or not 1970 <= year <= 9998:
        raise InvalidRequest(f"{param} {value!r} is not a month from 1970-01 to 9998-12", param=param)
    start = local_midnight(year, month, 1, tz)
    return start, after(start, "month", tz)


MAX_MARKUP = Decimal(10)


def parse_markup(value: str | None) -> Decimal:
    """A markup rate such as 0.20 (20 %): a decimal from 0 to 10 with at most 6 decimal places."""
    if value is None or value == "":
        return Decimal(0)
    try:
        rate = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidRequest(f"markup must be a decimal rate such as 0.20, got {value!r}",
                             param="markup") from None
    if not rate.is_finite() or rate < 0 or rate > MAX_MARKUP:
        raise InvalidRequest(f"markup must be between 0 and {MAX_MARKUP} (a rate: 0.20 is 20 %), got {value!r}",
                             param="markup")
    if rate.as_tuple().exponent < -6:  # type: ignore[operator]
        raise InvalidRequest(f"markup has more than 6 decimal places: {value!r}", param="markup")
    return rate


# The range of times the ledger can hold: 1970-01-01 up to (not including) 9999-01-01 UTC, so
# that any month, day or hour boundary of a time in range is itself a valid date.
MIN_MS = 0
MAX_MS = int(dt.datetime(9999, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _in_range(ms: int, value: str, param: str) -> int:
    if not MIN_MS <= ms < MAX_MS:
        raise InvalidRequest(f"{param} {value!r} is out of range: times from 1970-01-01 up to 9999-01-01 "
                             "(UTC) are accepted", param=param)
    return ms


def parse_time(value: str | None, param: str, tz: str = UTC) -> int | None:
    """ISO 8601 (a date, or a date-time; in time zone `tz` when no offset) or epoch milliseconds -> epoch ms."""
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
            parsed = parsed.replace(tzinfo=dt.UTC if tz == UTC else zone(tz))
        ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise bad from None
    return _in_range(ms, value, param)
