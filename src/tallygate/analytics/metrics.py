"""The metrics of a group of requests as one flat integer vector, and how they are shown.

The vector has the layout of the roll-up tables' metric columns (`METRICS`): sums first, then
the latency histogram, then the time-to-first-token histogram. Vectors add and subtract
element-wise, so a group's metrics can be merged from any number of roll-up rows and raw
records. Raw records can also keep their exact durations (`Agg.exact`), which then give exact
percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import add, sub

from tallygate.analytics.histogram import BUCKETS, bucket, exact_percentile_ms, percentiles_ms
from tallygate.pipeline.pricing import usd_text

SUMS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_pico", "feedback_count", "feedback_sum")
LATENCY = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
TTFT = tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
METRICS = SUMS + LATENCY + TTFT
WIDTH = len(METRICS)
I_REQ, I_ERR, I_IN, I_OUT, I_CACHED, I_CW, I_REASON, I_COST, I_FBC, I_FBS = range(len(SUMS))
LAT0 = len(SUMS)
TTFT0 = LAT0 + BUCKETS
SCORE_SCALE = 1000  # feedback scores are kept in thousandths, so sums stay integers


def is_error(status: int) -> bool:
    """What counts as an error: any status of 400 and above (refusals and provider failures)."""
    return status >= 400


@dataclass(slots=True)
class Agg:
    """One group's metrics; `exact` keeps raw durations while every input was a raw record."""

    v: list[int] = field(default_factory=lambda: [0] * WIDTH)
    lat_us: list[int] | None = field(default_factory=list)
    ttft_us: list[int] | None = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.lat_us is not None

    def add_record(self, status: int, tokens: tuple[int, int, int, int, int], cost_pico: int,
                   latency_us: int, ttft_us: int | None, score_milli: int | None) -> None:
        v = self.v
        v[I_REQ] += 1
        v[I_ERR] += status >= 400
        v[I_IN] += tokens[0]
        v[I_OUT] += tokens[1]
        v[I_CACHED] += tokens[2]
        v[I_CW] += tokens[3]
        v[I_REASON] += tokens[4]
        v[I_COST] += cost_pico
        v[LAT0 + bucket(latency_us)] += 1
        if ttft_us is not None:
            v[TTFT0 + bucket(ttft_us)] += 1
        if score_milli is not None:
            v[I_FBC] += 1
            v[I_FBS] += score_milli
        if self.lat_us is not None and self.ttft_us is not None:
            self.lat_us.append(latency_us)
            if ttft_us is not None:
                self.ttft_us.append(ttft_us)

    def add_vector(self, values: Sequence[int]) -> None:
        """Merge roll-up sums: from now on percentiles come from the histogram."""
        self.v = list(map(add, self.v, values))
        self.lat_us = self.ttft_us = None

    def merge(self, other: Agg) -> None:
        self.v = list(map(add, self.v, other.v))
        if self.lat_us is not None and self.ttft_us is not None and other.exact:
            self.lat_us.extend(other.lat_us or ())
            self.ttft_us.extend(other.ttft_us or ())
        else:
            self.lat_us = self.ttft_us = None

    def minus(self, other: Agg) -> Agg:
        """These metrics less a subset of them (histograms subtract bucket by bucket)."""
        return Agg(list(map(sub, self.v, other.v)), None, None)

    def render(self) -> dict:
        v = self.v
        n = v[I_REQ]
        if self.exact:
            lat, ttft = sorted(self.lat_us or ()), sorted(self.ttft_us or ())
            p = {q: exact_percentile_ms(lat, q) for q in (0.5, 0.95, 0.99)}
            ttft50 = exact_percentile_ms(ttft, 0.5)
        else:
            p = dict(zip((0.5, 0.95, 0.99), percentiles_ms(v[LAT0:TTFT0], (0.5, 0.95, 0.99)), strict=True))
            ttft50 = percentiles_ms(v[TTFT0:], (0.5,))[0]
        return {
            "requests": n, "errors": v[I_ERR], "error_rate": round(v[I_ERR] / n, 6) if n else 0.0,
            "input_tokens": v[I_IN], "output_tokens": v[I_OUT], "cached_tokens": v[I_CACHED],
            "cache_write_tokens": v[I_CW], "reasoning_tokens": v[I_REASON],
            "cost": usd_text(v[I_COST]),
            "latency_ms": {"p50": p[0.5], "p95": p[0.95], "p99": p[0.99]},
            "ttft_ms": {"p50": ttft50},
            "feedback": {"count": v[I_FBC],
                         "mean_score": round(v[I_FBS] / v[I_FBC] / SCORE_SCALE, 4) if v[I_FBC] else None},
        }
