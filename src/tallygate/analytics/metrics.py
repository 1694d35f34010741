"""How a group's metric vector (`core.metrics.Agg`) is shown in an analytics answer."""

from __future__ import annotations

from typing import Any

from tallygate.core.histogram import exact_percentile_ms, percentiles_ms
from tallygate.core.metrics import (
    CACHE_WRITE_TOKENS,
    CACHED_TOKENS,
    COST_PICO,
    ERRORS,
    FEEDBACK_COUNT,
    FEEDBACK_SUM,
    INPUT_TOKENS,
    LATENCY_START,
    OUTPUT_TOKENS,
    REASONING_TOKENS,
    REQUESTS,
    SCORE_SCALE,
    TTFT_START,
    Agg,
)
from tallygate.core.money import usd_text


def render(agg: Agg) -> dict[str, Any]:
    """The metrics object of one row or of the totals."""
    v = agg.v
    n = v[REQUESTS]
    if agg.exact:
        lat, ttft = sorted(agg.lat_us or ()), sorted(agg.ttft_us or ())
        p = {q: exact_percentile_ms(lat, q) for q in (0.5, 0.95, 0.99)}
        ttft50 = exact_percentile_ms(ttft, 0.5)
    else:
        qs = (0.5, 0.95, 0.99)
        p = dict(zip(qs, percentiles_ms(v[LATENCY_START:TTFT_START], qs), strict=True))
        ttft50 = percentiles_ms(v[TTFT_START:], (0.5,))[0]
    fb = v[FEEDBACK_COUNT]
    return {
        "requests": n, "errors": v[ERRORS], "error_rate": round(v[ERRORS] / n, 6) if n else 0.0,
        "input_tokens": v[INPUT_TOKENS], "output_tokens": v[OUTPUT_TOKENS], "cached_tokens": v[CACHED_TOKENS],
        "cache_write_tokens": v[CACHE_WRITE_TOKENS], "reasoning_tokens": v[REASONING_TOKENS],
        "cost": usd_text(v[COST_PICO]),
        "latency_ms": {"p50": p[0.5], "p95": p[0.95], "p99": p[0.99]},
        "ttft_ms": {"p50": ttft50},
        "feedback": {"count": fb, "mean_score": round(v[FEEDBACK_SUM] / fb / SCORE_SCALE, 4) if fb else None},
    }
