"""A cheaper cover of a planned range: a piece that fills most of its hour (or day) is read as
that whole hour (day) from the roll-ups, less the rest of it.

The plan (`plan.split`) reads a ragged end raw (up to an hour of records) and the hours between it
and the whole days from the hour roll-up (up to 23 hours of rows, where a day has about as many or
twice as many). `cover` rewrites each piece longer than half its unit: a raw piece becomes its
hour less the raw records of the other part (under 30 minutes), a run of hours its day less the
other hours. Metric vectors (sums and histograms) subtract exactly, so the answer does not change;
the reader drops the groups that are left with no request. Units that end less than `SETTLED_MS`
before now are read as planned: records still arriving there could fall between two reads.
"""

from __future__ import annotations

import time

from tallygate.analytics.plan import Segment
from tallygate.core.timebuckets import DAY_MS, HOUR_MS

SETTLED_MS = 600_000
_UNIT = {"raw": ("hour", HOUR_MS), "hour": ("day", DAY_MS)}


def cover(segments: list[Segment], levels: tuple[str, ...], now_ms: int | None = None) -> list[tuple[int, Segment]]:
    """(sign, segment) pieces whose signed sum is `segments`; `levels` are the roll-up levels the
    question may read (a coarser unit is used only when its level is among them)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    plus: list[Segment] = []
    minus: list[Segment] = []
    for seg in segments:
        unit = _UNIT.get(seg.level)
        if unit is None or seg.from_ms is None or seg.to_ms is None or unit[0] not in levels:
            plus.append(seg)
            continue
        level, size = unit
        start = seg.from_ms - seg.from_ms % size
        end = start + size
        if seg.to_ms > end or 2 * (seg.to_ms - seg.from_ms) <= size or end > now - SETTLED_MS:
            plus.append(seg)
            continue
        plus.append(Segment(level, start, end))
        if start < seg.from_ms:
            minus.append(Segment(seg.level, start, seg.from_ms))
        if seg.to_ms < end:
            minus.append(Segment(seg.level, seg.to_ms, end))
    # an hour added for a ragged end and taken away again with the hours around a run: neither is read
    for hour in [s for s in plus if s.level == "hour" and s.to_ms == (s.from_ms or 0) + HOUR_MS]:
        for i, neg in enumerate(minus):
            if neg.level != "hour" or neg.from_ms is None or neg.to_ms is None:
                continue
            if neg.from_ms == hour.from_ms or neg.to_ms == hour.to_ms:
                plus.remove(hour)
                rest = (Segment("hour", neg.from_ms + HOUR_MS, neg.to_ms) if neg.from_ms == hour.from_ms
                        else Segment("hour", neg.from_ms, neg.to_ms - HOUR_MS))
                if (rest.from_ms or 0) < (rest.to_ms or 0):
                    minus[i] = rest
                else:
                    del minus[i]
                break
    return [(1, s) for s in plus] + [(-1, s) for s in minus]
