"""Which tables answer a question: a roll-up family, the time levels, and the raw ledger.

Two roll-up families, kept by the ledger writer in the same transaction as the raw records:

* usage roll-ups (`usage_rollup_{hour,day,month}`): per time bucket, key, label set, requested
  and served model, provider and status. They answer every non-tag dimension and the key,
  model and label filters; each request is in exactly one row.
* tag roll-ups (`tag_rollup_{hour,day,month}`): per time bucket and tag prefix, once per request
  and distinct prefix. They answer `tag`, `tag_level.<n>`, the tag tree and the `tag` filter.
* dim roll-ups (`dim_rollup_{hour,day,month}`): per time bucket and one attribute's value (key,
  model, served model, provider, status or one label), and every request. A few rows per bucket:
  they answer questions about at most one attribute (grouped by it, filtered on it, or neither,
  which is every answer's totals) over any range, where the usage roll-ups would sum thousands
  of rows per day.

A question that mixes tags with anything else (say tag x label) is answered from the raw ledger,
within a budget of records (`analytics/reader.py`).

The time range is cut into the coarsest aligned pieces: whole months from the month roll-up,
whole days around them from the day roll-up, whole hours from the hour roll-up, and the
ragged ends from the raw ledger. A time dimension limits how coarse a piece may be (grouping
by hour cannot read the day roll-up).

Roll-up buckets are UTC. In a reporting time zone (`Query.tz`) a range without a time dimension
is still any set of instants, cut as above. Grouped by local hours, days or months, the range
is first cut at every local bucket boundary and each local bucket is cut on its own, so that
no roll-up row straddles two local buckets: with whole-hour offsets a local day is UTC hours
(a local month is UTC days between UTC hours); with 30- or 45-minute offsets (Asia/Kolkata,
Asia/Kathmandu) the UTC hour that holds a local boundary is read from the raw ledger. Adjacent
pieces of one level are merged back into one segment.
"""

from __future__ import annotations

from dataclasses import dataclass

from tallygate.analytics.query import Query
from tallygate.core import zones
from tallygate.core.timebuckets import ceil, floor

USAGE_LEVELS = ("month", "day", "hour")
TAG_LEVELS = USAGE_LEVELS
ATTRIBUTE = {"key": "key", "model": "model", "served_model": "served_model", "provider": "provider",
             "status": "status"}


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the time range read from one level ('month', 'day', 'hour' or 'raw'); `holes`:
    stretches inside it that it does not hold (read from elsewhere)."""

    level: str
    from_ms: int | None
    to_ms: int | None
    holes: tuple[tuple[int, int], ...] = ()


def merged(segments: list[Segment]) -> list[Segment]:
    """The roll-up segments of each level as one segment with holes (the stretches between them):
    one SQL statement per level instead of one per segment (30 local days in Kolkata, each between
    two raw half hours, were 60 statements)."""
    out: list[Segment] = []
    for level in dict.fromkeys(s.level for s in segments):
        same = sorted((s for s in segments if s.level == level), key=lambda s: s.from_ms or 0)
        if len(same) == 1 or any(s.from_ms is None or s.to_ms is None for s in same):
            out += same
            continue
        holes = tuple((int(a.to_ms or 0), int(b.from_ms or 0)) for a, b in zip(same, same[1:], strict=False)
                      if a.to_ms != b.from_ms)
        out.append(Segment(level, same[0].from_ms, same[-1].to_ms, holes))
    return out


def split(from_ms: int | None, to_ms: int | None, levels: tuple[str, ...], tz: str = zones.UTC,
          unit: str | None = None) -> list[Segment]:
    """Cut [from, to) into aligned pieces, coarsest level first; None means unbounded. With a
    time zone and a time `unit`, no piece straddles a local bucket (the range must be bounded)."""
    if tz == zones.UTC or unit is None:
        return _split(from_ms, to_ms, levels)
    assert from_ms is not None and to_ms is not None, "a local time grouping needs a bounded range"
    out: list[Segment] = []
    start = from_ms
    while start < to_ms:
        end = min(zones.after(start, unit, tz), to_ms)
        for seg in _split(start, end, levels):
            last = out[-1] if out else None
            if last is not None and last.level == seg.level and last.to_ms == seg.from_ms:
                out[-1] = Segment(seg.level, last.from_ms, seg.to_ms)
            else:
                out.append(seg)
        start = end
    return out


def _split(from_ms: int | None, to_ms: int | None, levels: tuple[str, ...]) -> list[Segment]:
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        return []
    if not levels:
        return [Segment("raw", from_ms, to_ms)]
    level, finer = levels[0], levels[1:]
    lo = None if from_ms is None else ceil(from_ms, level)
    hi = None if to_ms is None else floor(to_ms, level)
    if lo is not None and hi is not None and lo >= hi:
        return _split(from_ms, to_ms, finer)
    out: list[Segment] = []
    if from_ms is not None and lo is not None and from_ms < lo:
        out += _split(from_ms, lo, finer)
    out.append(Segment(level, lo, hi))
    if to_ms is not None and hi is not None and hi < to_ms:
        out += _split(hi, to_ms, finer)
    return out


def attribute(q: Query) -> tuple[str, str | None] | None:
    """(dim, value) when a dim roll-up answers `q`: at most one attribute, grouped by and/or filtered
    on (`value` is the filter's, None when it only groups); ('', '') for no attribute at all."""
    if q.tag is not None or q.tag_dim is not None or q.current_labels or q.record_filters:
        return None
    grouped = {f"label.{d.arg}" if d.kind == "label" else ATTRIBUTE[d.kind] for d in q.dims if d.kind != "time"}
    filtered = {f"label.{n}": v for n, v in q.labels.items()}
    if q.key_id is not None:
        filtered["key"] = q.key_id
    if q.model is not None:
        filtered["model"] = q.model
    names = grouped | set(filtered)
    if len(names) > 1 or len(filtered) > 1:
        return None
    if not names:
        return ("", "")
    (name,) = names
    return name, filtered.get(name)


def source(q: Query) -> str:
    """'dims', 'usage', 'tags' or 'raw': the roll-up family that holds every dimension and filter."""
    tagged = q.tag is not None or q.tag_dim is not None
    other = any(d.kind not in ("tag", "tag_level", "time") for d in q.dims)
    other = other or bool(q.labels) or q.key_id is not None or q.model is not None
    if (tagged and other) or q.record_filters:
        return "raw"
    if tagged:
        return "tags"
    return "dims" if attribute(q) is not None else "usage"


def levels_for(q: Query, family: str) -> tuple[str, ...]:
    """The time levels `family` may read for `q`, coarsest first (a time dimension caps them)."""
    levels: tuple[str, ...] = () if family == "raw" else USAGE_LEVELS
    time = q.time_dim
    if time is not None:
        allowed = USAGE_LEVELS[USAGE_LEVELS.index(str(time.arg)):]
        levels = tuple(lv for lv in levels if lv in allowed)
    return levels


def segments_for(q: Query, family: str) -> list[Segment]:
    """The time segments of `q` for `family`, in `q`'s time zone."""
    time = q.time_dim
    return split(q.from_ms, q.to_ms, levels_for(q, family), q.tz, None if time is None else str(time.arg))


def plan(q: Query) -> tuple[str, list[Segment]]:
    family = source(q)
    return family, segments_for(q, family)
