"""The request series rendered from plain integers equal those prometheus_client's own counters
and histograms expose for the same requests (multiprocess mode still uses those), up to the
float rounding that integer sums no longer make."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, disable_created_metrics, enable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tallygate.core.record import Attempt, LedgerRecord
from tallygate.observe.metrics import _FileSeries
from tallygate.observe.request_tally import RequestTally

MODELS, PROVIDERS, KEY_LABELS = ("m1", "m2"), ("p1", "p2"), ("team",)


def _record(i: int) -> LedgerRecord:
    return LedgerRecord(
        id=f"req_{i}", created_at=0, key_id="k", key_name="k", labels={"team": f"t{i % 3}"}, tags=(),
        endpoint="chat" if i % 2 else "embeddings", requested_model=("m1", "m2", "invented", None)[i % 4],
        served_model="x", provider=("p1", "p2", "p9", None)[i % 4], status=(200, 200, 429, 500, 201, 404, 99)[i % 7],
        error_type=None, error_message=None, stream=bool(i % 3), partial=False, input_tokens=i % 7,
        output_tokens=i % 5, cached_tokens=i % 2, cache_write_tokens=i % 4 // 3, reasoning_tokens=i % 3,
        cost_pico=i * 12_345_671, pricing_source=None,
        latency_us=(4_000, 5_000, 5_001, 123_456, 10**9, 77, 300_000_000)[i % 7],  # bucket bounds on both sides
        ttft_us=None if i % 5 == 0 else i * 997,
        attempts=tuple(Attempt(provider=("p1", "p2", "p7")[j % 3], model="x", status=(200, 500, 429)[(i + j) % 3],
                               latency_ms=1.0) for j in range(i % 3)),
        error_code=("rate_limit_exceeded", None, "budget_exceeded", "other_code", "budget_unavailable")[i % 5])


def _samples(registry: CollectorRegistry) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return [(family.name, s.name, tuple(s.labels.items()), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def test_tally_renders_what_prometheus_client_counters_and_histograms_render() -> None:
    assert any(name.endswith("_created") for _, name, _, _ in _compare())


def test_no_created_series_when_prometheus_client_has_them_disabled() -> None:
    """PROMETHEUS_DISABLE_CREATED_SERIES (read by prometheus_client at import) or
    `disable_created_metrics()`: the tally drops its `_created` samples as the counters do."""
    disable_created_metrics()
    try:
        assert not any(name.endswith("_created") for _, name, _, _ in _compare())
    finally:
        enable_created_metrics()


def _compare() -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    """The tally's samples, checked against prometheus_client's for the same requests."""
    tally, reference = RequestTally(MODELS, PROVIDERS, KEY_LABELS), _FileSeries(MODELS, PROVIDERS, KEY_LABELS)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    ours.register(tally)
    for metric in (reference.requests, reference.tokens, reference.cost, reference.latency, reference.ttft,
                   reference.attempts, reference.refusals, reference.fallbacks):
        theirs.register(metric)
    for i in range(300):
        tally.request_finished(_record(i))
        reference.request_finished(_record(i))
    got, want = _samples(ours), _samples(theirs)
    assert len(got) == len(want) > 400
    for g, w in zip(got, want, strict=True):
        assert g[:3] == w[:3]  # family, sample name and labels, in the same order
        if g[1].endswith("_created"):
            assert abs(g[3] - w[3]) < 60
        else:
            assert math.isclose(g[3], w[3], rel_tol=1e-12), (g, w)
    return got
