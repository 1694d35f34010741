"""The pure planners and the per-target health they read: order, weights, latency, cooldown."""

from __future__ import annotations

import random
from collections import Counter

from tallygate.pipeline.models import Route
from tallygate.pipeline.routing.plan import Target, plan
from tallygate.pipeline.routing.stats import Health
from tallygate.providers.base import Capabilities

NO_NATIVE = Capabilities.of(None)  # type: ignore[arg-type]  # these routes are never called

def targets(*names: str, weights: tuple[float, ...] = ()) -> list[Target]:
    return [Target(route(n), weights[i] if weights else 1.0) for i, n in enumerate(names)]


def route(name: str) -> Route:
    return Route(name, "p", "openai", None, name, None, NO_NATIVE)  # type: ignore[arg-type]  # never called


def names(ordered: list[Target]) -> list[str]:
    return [t.name for t in ordered]


def test_fallback_keeps_config_order() -> None:
    ts = targets("a", "b", "c")
    assert names(plan("fallback", ts, Health(["a", "b", "c"]), 0.0, random.Random(1))[0]) == ["a", "b", "c"]


def test_cooling_target_is_left_out_until_its_cooldown_ends() -> None:
    ts, health = targets("a", "b", "c"), Health(["a", "b", "c"], failures=2, cooldown_s=10)
    health.failed("a", now=100)
    assert names(plan("fallback", ts, health, 100, random.Random())[0]) == ["a", "b", "c"]  # one failure
    health.failed("a", now=100)
    ordered, forced = plan("fallback", ts, health, 105, random.Random())
    assert names(ordered) == ["b", "c"] and not forced
    assert names(plan("fallback", ts, health, 110, random.Random())[0]) == ["a", "b", "c"]  # probe allowed


def test_when_every_target_is_cooling_all_are_planned_anyway() -> None:
    ts, health = targets("a", "b"), Health(["a", "b"], failures=1, cooldown_s=10)
    health.failed("a", 0)
    health.failed("b", 0)
    ordered, forced = plan("fallback", ts, health, 1, random.Random())
    assert names(ordered) == ["a", "b"] and forced


def test_weighted_split_is_within_two_points_of_the_weights_under_a_fixed_seed() -> None:
    ts, health = targets("a", "b", weights=(3, 1)), Health(["a", "b"])
    rng = random.Random(42)
    firsts = Counter(plan("weighted", ts, health, 0, rng)[0][0].name for _ in range(10_000))
    assert abs(firsts["a"] / 10_000 - 0.75) < 0.02


def test_weighted_plans_every_target_once_with_the_rest_as_fallbacks() -> None:
    ts, health = targets("a", "b", "c", weights=(5, 3, 2)), Health(["a", "b", "c"])
    rng = random.Random(7)
    seconds = Counter()
    for _ in range(5_000):
        ordered = names(plan("weighted", ts, health, 0, rng)[0])
        assert sorted(ordered) == ["a", "b", "c"]
        seconds[ordered[1]] += 1
    assert all(seconds[n] > 0 for n in "abc")  # fallbacks are drawn by weight too, not fixed


def test_weighted_is_reproducible_with_the_same_seed() -> None:
    ts, health = targets("a", "b", weights=(3, 1)), Health(["a", "b"])

    def run(seed: int) -> list[list[str]]:
        rng = random.Random(seed)
        return [names(plan("weighted", ts, health, 0, rng)[0]) for _ in range(200)]

    assert run(5) == run(5) and run(5) != run(6)


def test_latency_measures_unmeasured_targets_first() -> None:
    ts, health = targets("a", "b", "c"), Health(["a", "b", "c"])
    health.succeeded("a", 0.010)
    assert names(plan("latency", ts, health, 0, random.Random(), explore=0)[0]) == ["b", "c", "a"]


def test_latency_prefers_the_lowest_ewma_and_explores_at_the_configured_rate() -> None:
    ts, health = targets("slow", "fast", "mid"), Health(["slow", "fast", "mid"])
    for name, s in (("slow", 0.3), ("fast", 0.01), ("mid", 0.1)):
        health.succeeded(name, s)
    rng = random.Random(3)
    firsts = Counter(plan("latency", ts, health, 0, rng, explore=0.1)[0][0].name for _ in range(10_000))
    assert abs(firsts["fast"] / 10_000 - 0.9) < 0.02
    assert firsts["slow"] > 0 and firsts["mid"] > 0
    assert names(plan("latency", ts, health, 0, rng, explore=0)[0]) == ["fast", "mid", "slow"]


def simulate(latency_of, n: int, health: Health, ts: list[Target], rng: random.Random) -> list[str]:
    """`n` requests through a latency policy; each served by the first planned target."""
    served = []
    for _ in range(n):
        first = plan("latency", ts, health, 0, rng, explore=0.1)[0][0].name
        health.succeeded(first, latency_of[first])
        served.append(first)
    return served


def test_latency_converges_on_the_fastest_leaves_a_degraded_one_and_notices_its_recovery() -> None:
    ts, health, rng = targets("a", "b"), Health(["a", "b"]), random.Random(11)
    latency = {"a": 0.010, "b": 0.050}
    # explore = 0.1 with two targets: 90% on the fastest expected; 3 standard deviations below
    assert simulate(latency, 100, health, ts, rng)[20:].count("a") >= 64
    latency["a"] = 0.300  # a degrades: within a few requests b serves most of them
    served = simulate(latency, 100, health, ts, rng)
    assert served[5:].count("b") >= 80
    latency["a"] = 0.010  # a recovers: exploration notices
    served = simulate(latency, 200, health, ts, rng)
    assert served[-50:].count("a") >= 40


def test_circuit_opens_after_consecutive_failures_and_a_successful_probe_closes_it() -> None:
    health = Health(["a"], failures=3, cooldown_s=30)
    for _ in range(2):
        health.failed("a", 0)
    assert health.available("a", 0)
    health.succeeded("a", 0.01)  # a success resets the count
    for _ in range(2):
        health.failed("a", 1)
    assert health.available("a", 1)
    health.failed("a", 1)
    assert not health.available("a", 30) and health.available("a", 31)
    health.begin("a", 31)  # the probe
    assert not health.available("a", 31), "only one probe at a time"
    health.succeeded("a", 0.02)
    assert health.available("a", 31) and health["a"].failures == 0


def test_failed_probe_reopens_the_circuit_for_another_cooldown() -> None:
    health = Health(["a"], failures=2, cooldown_s=10)
    health.failed("a", 0)
    health.failed("a", 0)
    health.begin("a", 10)
    health.failed("a", 10)
    assert not health.available("a", 19.9) and health.available("a", 20)


def test_cancelled_probe_lets_another_request_probe() -> None:
    health = Health(["a"], failures=1, cooldown_s=10)
    health.failed("a", 0)
    health.begin("a", 10)
    assert not health.available("a", 10)
    health.released("a")
    assert health.available("a", 10)


def test_callers_own_errors_are_not_target_failures() -> None:
    health = Health(["a"], failures=2, cooldown_s=10)
    health.failed("a", 0)
    health.answered("a")
    health.failed("a", 0)
    assert health.available("a", 0) and health.latency("a") is None


def test_timeout_is_a_latency_sample_of_at_least_its_duration() -> None:
    health = Health(["a"])
    health.succeeded("a", 0.01)
    health.failed("a", 0, timed_out_after=1.0)
    assert health.latency("a") is not None and health.latency("a") > 0.25
