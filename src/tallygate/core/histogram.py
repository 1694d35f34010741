"""Latency histograms that SQL can merge: a fixed set of log-scale integer buckets.

Bucket 0 holds values under 1 ms; bucket i (1..60) holds [1 ms * 2^((i-1)/3), 1 ms * 2^(i/3));
bucket 61 holds 2^20 ms (about 17.5 minutes) and above. Three buckets per doubling: the ratio
between a bucket's bounds is 2^(1/3) = 1.26. Each bucket is an integer column of the roll-up
tables, so `SUM` merges histograms on SQLite and PostgreSQL alike.

A percentile is the nearest-rank one (the smallest value with at least q*n values at or below
it). From a histogram we find the bucket that holds that value exactly and report the bucket's
geometric midpoint, so the reported figure is within a factor 2^(1/6) of the true one:
**at most 12.3 % off** (`MAX_RELATIVE_ERROR`). Under 1 ms we report 0.5 ms (off by at most
0.5 ms); from 2^20 ms up we report 2^20 ms, a floor. Queries answered from the raw ledger alone
report exact percentiles instead.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate

PER_DOUBLING = 3
DOUBLINGS = 20
BUCKETS = PER_DOUBLING * DOUBLINGS + 2  # 62: under 1 ms, 60 log buckets, 2^20 ms and over
# Upper bounds in microseconds (the ledger's unit) of buckets 0..60; bucket 61 is unbounded.
EDGES_US: tuple[int, ...] = tuple(round(1000 * 2 ** (i / PER_DOUBLING)) for i in range(BUCKETS - 1))
MAX_RELATIVE_ERROR = 2 ** (1 / (2 * PER_DOUBLING)) - 1  # 0.1225


def bucket(us: int) -> int:
    """The bucket of a duration in microseconds."""
    return bisect_right(EDGES_US, us)


def representative_ms(index: int) -> float:
    """What a percentile that falls in bucket `index` is reported as, in milliseconds."""
    if index == 0:
        return 0.5
    if index >= BUCKETS - 1:
        return EDGES_US[-1] / 1000
    return math.sqrt(EDGES_US[index - 1] * EDGES_US[index]) / 1000


def rank(q: float, n: int) -> int:
    """1-based nearest rank of quantile `q` among `n` values."""
    r = math.ceil(q * n - 1e-9)
    return max(1, r)


_SHOWN = tuple(round(representative_ms(i), 3) for i in range(BUCKETS))  # each bucket's reported value


def percentiles_ms(counts: Sequence[int], qs: Sequence[float]) -> list[float | None]:
    """Quantiles `qs` of a histogram (counts per bucket); None when it is empty. The bucket of a rank
    is the first whose running count reaches it (a bisection: thousands of groups in an answer)."""
    running = list(accumulate(counts))
    n = running[-1] if running else 0
    if n <= 0:
        return [None] * len(qs)
    return [_SHOWN[bisect_left(running, rank(q, n))] for q in qs]


def exact_percentile_ms(sorted_us: Sequence[int], q: float) -> float | None:
    """Quantile `q` (nearest rank) of durations already sorted, in milliseconds."""
    if not sorted_us:
        return None
    return sorted_us[rank(q, len(sorted_us)) - 1] / 1000
