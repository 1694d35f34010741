"""The metrics of a group of requests as one flat integer vector.

The vector has the layout of the roll-up tables' metric columns (`METRICS`): sums first, then
the latency histogram, then the time-to-first-token histogram (`core.histogram` buckets).
Vectors add and subtract element-wise, so a group's metrics can be merged from any number of
roll-up rows and raw records. Raw records can also keep their exact durations (`Agg.exact`),
which then give exact percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import add, sub

from tallygate.core.histogram import BUCKETS, bucket

SUMS = ("requests", "errors", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
        "reasoning_tokens", "cost_pico", "feedback_count", "feedback_sum")
LATENCY = tuple(f"lat_{i:02d}" for i in range(BUCKETS))
TTFT = tuple(f"ttft_{i:02d}" for i in range(BUCKETS))
METRICS = SUMS + LATENCY + TTFT
WIDTH = len(METRICS)
# Positions in the vector.
(REQUESTS, ERRORS, INPUT_TOKENS, OUTPUT_TOKENS, CACHED_TOKENS, CACHE_WRITE_TOKENS, REASONING_TOKENS,
 COST_PICO, FEEDBACK_COUNT, FEEDBACK_SUM) = range(len(SUMS))
LATENCY_START = len(SUMS)  # first latency bucket
TTFT_START = LATENCY_START + BUCKETS  # first time-to-first-token bucket
SCORE_SCALE = 1000  # feedback scores are kept in thousandths, so sums stay integers


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
        v[REQUESTS] += 1
        v[ERRORS] += status >= 400
        v[INPUT_TOKENS] += tokens[0]
        v[OUTPUT_TOKENS] += tokens[1]
        v[CACHED_TOKENS] += tokens[2]
        v[CACHE_WRITE_TOKENS] += tokens[3]
        v[REASONING_TOKENS] += tokens[4]
        v[COST_PICO] += cost_pico
        v[LATENCY_START + bucket(latency_us)] += 1
        if ttft_us is not None:
            v[TTFT_START + bucket(ttft_us)] += 1
        if score_milli is not None:
            v[FEEDBACK_COUNT] += 1
            v[FEEDBACK_SUM] += score_milli
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

    def copy(self) -> Agg:
        return Agg(list(self.v), None if self.lat_us is None else list(self.lat_us),
                   None if self.ttft_us is None else list(self.ttft_us))

    def minus(self, other: Agg) -> Agg:
        """These metrics less a subset of them (histograms subtract bucket by bucket)."""
        return Agg(list(map(sub, self.v, other.v)), None, None)
