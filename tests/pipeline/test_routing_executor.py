"""The executor over fake targets (no HTTP): fallback order, what stops it, retries honouring
retry-after, per-attempt timeouts, cooldown within and across requests, and the one error that
lists every cause when all targets fail."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import pytest

from tallygate.errors import (
    AllTargetsFailed,
    GatewayError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.routing.executor import execute
from tallygate.pipeline.routing.plan import Plan
from tallygate.pipeline.routing.policies import Policy
from tallygate.providers.base import Capabilities
from tallygate.settings import FallbackPolicyConfig
from tallygate.types import Principal

NO_NATIVE = Capabilities.of(None)  # type: ignore[arg-type]  # these routes are never called

ROUTES = {n: Route(n, f"prov-{n}", "openai", None, f"up-{n}", None, NO_NATIVE) for n in "abc"}  # type: ignore[arg-type]
Outcome = Callable[[], object]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Targets:
    """Fake targets: each name has a script of outcomes (an exception to raise, or "ok")."""

    def __init__(self, **scripts: list) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.tried: list[str] = []

    async def __call__(self, route: Route) -> str:
        self.tried.append(route.name)
        script = self.scripts[route.name]
        outcome = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(outcome, float):
            await asyncio.sleep(outcome)
            return f"served by {route.name}"
        if isinstance(outcome, BaseException):
            raise outcome
        return f"served by {route.name}"


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(*names: str, clock: Clock | None = None, **options: object) -> Policy:
    cfg = FallbackPolicyConfig(strategy="fallback", targets=list(names), **options)  # type: ignore[arg-type]
    return Policy("p", cfg, ROUTES.__getitem__, random.Random(1), clock or Clock())


def call() -> Call:
    return Call("req_test", "chat", Principal(key_id=None, name="t"))


def run(plan: Plan, targets: Targets, c: Call | None = None, sleeps: Sleeps | None = None) -> object:
    return asyncio.run(execute(c or call(), plan, targets, sleeps if sleeps is not None else Sleeps()))


def http(status: int, retry_after: float | None = None) -> UpstreamHTTPError:
    return UpstreamHTTPError(status, f"provider returned HTTP {status}: SECRET UPSTREAM BODY",
                             retry_after=retry_after)


def test_fallback_tries_targets_in_order_and_records_every_attempt() -> None:
    c, targets = call(), Targets(a=[http(503)], b=[http(429, 2)], c=[0.05])  # c answers after 50 ms
    began = time.perf_counter()
    assert run(policy("a", "b", "c").plan(), targets, c) == "served by c"
    elapsed_ms = (time.perf_counter() - began) * 1000
    assert targets.tried == ["a", "b", "c"]
    assert [(a.target, a.provider, a.status, a.error) for a in c.attempts] == [
        ("a", "prov-a", 503, "UpstreamHTTPError"), ("b", "prov-b", 429, "UpstreamHTTPError"),
        ("c", "prov-c", 200, None)]
    assert c.route is ROUTES["c"]
    failed, served = c.attempts[:2], c.attempts[2]
    assert all(a.latency_ms < 50 for a in failed)  # each attempt's own time, not the request's
    assert 50 <= served.latency_ms <= elapsed_ms


@pytest.mark.parametrize("error", [UpstreamTimeout("t"), UpstreamUnavailable("reset"), http(500), http(401)])
def test_upstream_failures_fall_through(error: GatewayError) -> None:
    targets = Targets(a=[error], b=["ok"])
    assert run(policy("a", "b").plan(), targets) == "served by b"


@pytest.mark.parametrize("status", [400, 404, 422])
def test_callers_own_4xx_stops_at_once_and_is_returned_as_it_is(status: int) -> None:
    err = http(status)
    targets = Targets(a=[err], b=["ok"])
    with pytest.raises(UpstreamHTTPError) as exc:
        run(policy("a", "b", retries=2).plan(), targets)
    assert exc.value is err and targets.tried == ["a"]


def test_every_target_failing_lists_each_cause_without_upstream_bodies() -> None:
    targets = Targets(a=[http(500)], b=[UpstreamUnavailable("could not connect to provider 'prov-b'")],
                      c=[UpstreamTimeout("provider 'prov-c' did not answer in time")])
    with pytest.raises(AllTargetsFailed) as exc:
        run(policy("a", "b", "c").plan(), targets)
    err = exc.value
    assert err.status == 502 and err.code == "all_targets_failed"
    assert "a (prov-a): HTTP 500 (upstream_server_error)" in err.message
    assert "b (prov-b): upstream_unavailable: could not connect to provider 'prov-b'" in err.message
    assert "c (prov-c): upstream_timeout: provider 'prov-c' did not answer in time" in err.message
    assert "SECRET" not in err.message and "SECRET" not in str(err.payload())


def test_when_all_attempts_share_a_status_the_error_keeps_it() -> None:
    with pytest.raises(AllTargetsFailed) as exc:
        run(policy("a", "b").plan(), Targets(a=[http(429, 7)], b=[http(429, 3)]))
    assert exc.value.status == 429 and exc.value.type == "rate_limit_error"
    assert (b"retry-after", b"3") in exc.value.headers()
    with pytest.raises(AllTargetsFailed) as exc:
        run(policy("a", "b").plan(), Targets(a=[UpstreamTimeout("t")], b=[UpstreamTimeout("t")]))
    assert exc.value.status == 504


def test_a_plain_model_returns_its_one_error_as_it_is() -> None:
    err = http(503)
    with pytest.raises(UpstreamHTTPError) as exc:
        run(Plan((ROUTES["a"],)), Targets(a=[err]))
    assert exc.value is err


def test_a_retry_round_waits_at_least_the_retry_after() -> None:
    sleeps, targets = Sleeps(), Targets(a=[http(429, 2), "ok"])
    assert run(policy("a", retries=1, backoff_s=0.1).plan(), targets, sleeps=sleeps) == "served by a"
    assert sleeps == [2] and targets.tried == ["a", "a"]


def test_a_retry_after_beyond_max_wait_ends_the_retries() -> None:
    sleeps, targets = Sleeps(), Targets(a=[http(429, 30), "ok"])
    with pytest.raises(AllTargetsFailed) as exc:
        run(policy("a", retries=3, max_wait_s=5).plan(), targets, sleeps=sleeps)
    assert sleeps == [] and exc.value.status == 429 and (b"retry-after", b"30") in exc.value.headers()


def test_backoff_doubles_each_round_with_jitter() -> None:
    sleeps, targets = Sleeps(), Targets(a=[http(500)], b=[http(503)])
    with pytest.raises(AllTargetsFailed) as exc:
        run(policy("a", "b", retries=3, backoff_s=1, cooldown={"failures": 10}).plan(), targets,
            sleeps=sleeps)
    assert len(sleeps) == 3 and targets.tried == ["a", "b"] * 4
    for i, s in enumerate(sleeps):
        assert 2 ** i / 2 <= s <= 2 ** i
    assert exc.value.message.count("HTTP 5") == 8


def test_failures_nothing_could_fix_are_not_retried() -> None:
    sleeps, targets = Sleeps(), Targets(a=[http(401)])
    with pytest.raises(AllTargetsFailed):
        run(policy("a", retries=3).plan(), targets, sleeps=sleeps)
    assert sleeps == [] and targets.tried == ["a"]


def test_per_attempt_timeout_falls_through_to_the_next_target() -> None:
    c, targets = call(), Targets(a=[5.0], b=[0.0])
    assert run(policy("a", "b", timeout_s=0.05).plan(), targets, c) == "served by b"
    assert [(a.status, a.error) for a in c.attempts] == [(504, "UpstreamTimeout"), (200, None)]
    assert c.attempts[0].latency_ms < 1000


def test_cooldown_takes_a_target_out_within_and_across_requests_and_a_probe_lets_it_back() -> None:
    clock = Clock()
    p = policy("a", "b", clock=clock, retries=2, backoff_s=0, cooldown={"failures": 2, "seconds": 30})
    targets = Targets(a=[http(503)], b=[http(503), "ok"])
    assert run(p.plan(), targets) == "served by b"
    assert targets.tried == ["a", "b", "a", "b"]  # a tripped after its second failure: not in round 3
    targets.tried.clear()
    assert [r.name for r in p.plan().targets] == ["b"]
    assert run(p.plan(), targets) == "served by b" and targets.tried == ["b"]
    clock.now += 30
    targets.scripts["a"] = ["ok"]
    targets.tried.clear()
    assert run(p.plan(), targets) == "served by a" and targets.tried == ["a"]  # the probe succeeded
    assert [r.name for r in p.plan().targets] == ["a", "b"]


def test_a_cancelled_attempt_releases_the_probe() -> None:
    clock = Clock()
    p = policy("a", "b", clock=clock, cooldown={"failures": 1, "seconds": 1})
    run(p.plan(), Targets(a=[http(500)], b=["ok"]))
    clock.now += 1

    async def cancelled() -> None:
        task = asyncio.ensure_future(execute(call(), p.plan(), Targets(a=[10.0], b=["ok"]), Sleeps()))
        await asyncio.sleep(0.01)
        assert not p.health.available("a", clock.now)  # the probe is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert p.health.available("a", clock.now)


def test_each_attempt_gets_its_own_body_with_its_targets_model() -> None:
    from tallygate.pipeline.chat import upstream_body

    body = {"model": "policy/p", "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": False}}
    first = upstream_body(body, ROUTES["a"])
    first["stream_options"] = {"include_usage": True}  # what an adapter may do to its copy
    first["extra"] = 1
    second = upstream_body(body, ROUTES["b"])
    assert second == {**body, "model": ROUTES["b"].upstream_model}
    assert body["model"] == "policy/p" and "extra" not in body
