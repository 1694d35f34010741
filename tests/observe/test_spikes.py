"""The spike detectors on a simulated clock: a quiet baseline, a spike (one alert), the spike
going on (no storm), recovery, and a later spike (a new alert); the minimum amount; error rates."""

from __future__ import annotations

from decimal import Decimal

from tallygate.core.timebuckets import HOUR_MS
from tallygate.observe.spikes import MAX_GROUPS, ErrorRates, SpendSpikes, groups_of
from tallygate.settings import ErrorRateConfig, SpikeConfig
from tests.records import make_record

CENT = 10**10  # picodollars


class Clock:
    def __init__(self, ms: int = 1_800_000_000_000) -> None:
        self.ms = ms - ms % HOUR_MS

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, minutes: float) -> None:
        self.ms += int(minutes * 60_000)


def _spend(det: SpendSpikes, clock: Clock, minutes: int, cents_per_5min: int, team: str = "growth",
           key: str = "k1", model: str = "gpt-4o") -> list[dict]:
    """Spend `cents_per_5min` every 5 minutes for `minutes`, evaluating after each; the alerts."""
    fired = []
    for _ in range(minutes // 5):
        det.request_finished(make_record(cost_pico=cents_per_5min * CENT, labels={"team": team},
                                         key_id=key, key_name=key, requested_model=model,
                                         tags=["feature/summary/widget"]))
        fired += det.due()
        clock.advance(5)
    return fired


def test_spike_fires_once_then_again_only_after_recovery() -> None:
    clock = Clock()
    det = SpendSpikes(SpikeConfig(group_by=["label.team"], factor=Decimal(3), min_usd=Decimal("1.00")), clock)
    assert _spend(det, clock, 6 * 60, 10) == []  # six quiet hours at $1.20/hour
    fired = _spend(det, clock, 60, 60, key="k2", model="o3")  # $7.20 in the hour: 6x
    assert len(fired) == 1
    ev = fired[0]
    assert ev["kind"] == "spend_spike" and ev["group"] == {"by": "label.team", "value": "growth"}
    assert ev["baseline"] == "1.2" and Decimal(ev["spend"]) > 3 * Decimal("1.2")
    assert ev["top_key"]["name"] == "k2" and ev["top_model"]["name"] == "o3"
    assert ev["subject"]["id"] == "label.team=growth"
    assert _spend(det, clock, 60, 60) == []  # still spiking: no storm
    assert _spend(det, clock, 3 * 60, 10) == []  # recovered (the median baseline barely moved)
    again = _spend(det, clock, 60, 60)
    assert len(again) == 1 and again[0]["id"] != ev["id"]


def test_a_spike_below_the_minimum_amount_is_not_an_alert() -> None:
    clock = Clock()
    det = SpendSpikes(SpikeConfig(group_by=["label.team"], min_usd=Decimal("1.00")), clock)
    _spend(det, clock, 5 * 60, 1)  # $0.12/hour
    assert _spend(det, clock, 60, 7) == []  # $0.84/hour: 7x, but under $1


def test_no_alert_without_enough_baseline_hours() -> None:
    clock = Clock()
    det = SpendSpikes(SpikeConfig(group_by=["key"], min_usd=Decimal("0.01"), min_baseline_hours=3), clock)
    assert _spend(det, clock, 60, 1) + _spend(det, clock, 60, 100) == []  # one hour of history


def test_groups_by_key_label_and_tag_level() -> None:
    r = make_record(key_id="k", labels={"team": "a"}, tags=["x/y/z", "x/y/w", "q"])
    assert groups_of(r, ["key", "label.team", "label.env", "tag_level.2"]) == [
        ("key", "k"), ("label.team", "a"), ("tag_level.2", "x/y")]


def test_groups_are_capped_so_invented_tags_cannot_grow_memory() -> None:
    clock = Clock()
    det = SpendSpikes(SpikeConfig(group_by=["tag_level.1"]), clock)
    for i in range(MAX_GROUPS + 500):
        det.request_finished(make_record(tags=[f"t{i}"], cost_pico=1))
    assert len(det._series.slots) == MAX_GROUPS


def test_error_rate_fires_once_per_window_and_recovers() -> None:
    clock = Clock()
    det = ErrorRates(ErrorRateConfig(window_s=300, baseline_windows=6, min_requests=20), clock)

    def traffic(minutes: int, errors_per_minute: int) -> list[dict]:
        fired = []
        for _ in range(minutes):
            for i in range(10):
                det.request_finished(make_record(provider="openai", requested_model="gpt-4o",
                                                 status=503 if i < errors_per_minute else 200))
            fired += det.due()
            clock.advance(1)
        return fired

    assert traffic(60, 0) == []  # an hour at 0 %
    fired = traffic(10, 5)  # 50 %
    assert sorted(e["subject"]["kind"] for e in fired) == ["model", "provider"]
    assert all(e["kind"] == "error_rate" and Decimal(e["rate"]) >= Decimal("0.05") for e in fired)
    assert traffic(10, 5) == []
    assert traffic(30, 0) == []
    assert len(traffic(10, 5)) == 2


def test_requests_never_routed_do_not_count_towards_error_rates() -> None:
    clock = Clock()
    det = ErrorRates(ErrorRateConfig(), clock)
    det.request_finished(make_record(provider=None, status=402))
    assert det._series.slots == {}
