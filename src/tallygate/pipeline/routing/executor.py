"""The executor: tries a plan's targets in order and reports every attempt.

One loop serves JSON requests, streams (an attempt there ends at the first chunk: after that
bytes have reached the client and falling back is no longer possible) and plain model names
(a one-target plan without a policy).

For each target: an attempt, bounded by the policy's `timeout_s` when it has one. Its outcome
goes to `Call.attempt` (the ledger) and to the policy's `Health` (latency, circuit). Then:

Before a target is tried, the request is admitted under that target's model rate limits
(`Call.admit_route`, `pipeline/target_limits.py`); a target at its limit is skipped like one
that answered 429, and when no target served and one was skipped so, that 429 is the answer
(with its `retry-after`: waiting is what would help).

- success: done;
- the caller's own error (a 4xx other than 429, e.g. the provider refused the request's
  parameters, or a 404 for a response id it does not know): returned at once, as it is;
  another target would refuse it too;
- a 404 saying this target has no such model (`UpstreamError.model_missing`: a Bedrock region
  without it, an Azure resource without the deployment): the next target, not retried later;
- anything else (429, 5xx, timeouts, connection errors, our credentials refused upstream):
  the next target. A timeout (the request was sent: the provider bills it as if it had answered)
  and an answer cut off after its 200 (`UpstreamCutOff`: the provider made it) are charged the
  attempt's worst case (`Call.lose`); under a limit, which holds the worst case of
  one attempt, it is the answer (`Call.may_try_again`). When a round over the targets has failed
  and `retries` remain, and at least one failure was retryable (`UpstreamError.retryable`), another round starts after
  `Policy.retry_delay` (backoff with jitter, at least the longest `retry-after` of the round; a
  `retry-after` beyond `max_wait_s` ends the retries). Targets whose circuit opened meanwhile
  are skipped.

When everything failed, a plain model returns its one error as it is; a policy returns
`AllTargetsFailed`, which lists each attempt's cause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tallygate.errors import (
    AllTargetsFailed,
    GatewayError,
    RateLimited,
    UpstreamCutOff,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
)
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.routing.plan import Plan
from tallygate.pipeline.routing.policies import Policy

T = TypeVar("T")
Attempt = Callable[[Route], Awaitable[T]]
Sleep = Callable[[float], Awaitable[object]]


def caller_at_fault(err: GatewayError) -> bool:
    """Whether `err` is about the caller's request (so no other target would take it)."""
    return not isinstance(err, UpstreamError) or (not err.retryable and err.status < 500 and not err.model_missing)


async def execute(call: Call, plan: Plan, attempt: Attempt[T], sleep: Sleep = asyncio.sleep) -> T:
    """Run `attempt(route)` over `plan`'s targets until one succeeds; `call.route` is the one
    that served (or the last one tried)."""
    policy = plan.policy
    failures: list[tuple[str, str, UpstreamError]] = []
    limited: RateLimited | None = None  # a target's model rate limit refused it
    round_no = 0
    while True:
        round_errors: list[UpstreamError] = []
        for route in plan.targets:
            if policy is not None and not plan.forced and not policy.health.available(route.name,
                                                                                       policy.clock()):
                continue  # its circuit opened since the plan was made (maybe by this request)
            call.route = route
            started = time.perf_counter()
            if call.admit_route is not None:
                try:
                    await call.admit_route(route)
                except RateLimited as err:
                    call.attempt(err.status, err, started)
                    limited = err
                    continue
            if policy is not None:
                policy.health.begin(route.name, policy.clock())
            try:
                value = await _bounded(attempt, route, policy)
            except UpstreamError as err:
                call.attempt(err.status, err, started)
                if (isinstance(err, UpstreamTimeout) and err.sent) or isinstance(err, UpstreamCutOff):  # billed
                    call.lose(route)
                if policy is not None:
                    _judge(policy, route, err, started)
                if caller_at_fault(err) or not call.may_try_again():
                    raise
                failures.append((route.name, route.provider_name, err))
                round_errors.append(err)
                continue
            except BaseException as exc:  # the caller's error raised before any upstream call, a cancel
                if isinstance(exc, GatewayError):
                    call.attempt(exc.status, exc, started)
                if policy is not None:
                    policy.health.released(route.name)
                raise
            call.attempt(200, None, started)
            if policy is not None:
                policy.health.succeeded(route.name, time.perf_counter() - started)
            return value
        round_no += 1
        delay = None if policy is None else _retry_delay(policy, plan, round_no, round_errors)
        if delay is None:
            break
        await sleep(delay)
    if limited is not None:
        raise limited
    if policy is None and failures:
        raise failures[-1][2]
    raise AllTargetsFailed(policy.name if policy is not None else "-", failures)


async def _bounded(attempt: Attempt[T], route: Route, policy: Policy | None) -> T:
    """One attempt, within the policy's per-attempt timeout when it has one."""
    if policy is None or policy.timeout_s is None:
        return await attempt(route)
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await attempt(route)
    except TimeoutError:
        raise UpstreamTimeout(f"target {route.name!r} did not answer within the policy's "
                              f"{policy.timeout_s:g} s") from None


def _judge(policy: Policy, route: Route, err: UpstreamError, started: float) -> None:
    """Tell the target's health what a failed attempt says about it."""
    if caller_at_fault(err):
        policy.health.answered(route.name)  # it is up: it read the request and refused it
    else:
        timed_out = time.perf_counter() - started if isinstance(err, UpstreamTimeout) else None
        policy.health.failed(route.name, policy.clock(), timed_out)


def _retry_delay(policy: Policy, plan: Plan, round_no: int, errors: list[UpstreamError]) -> float | None:
    """How long to wait before retry round `round_no`, or None when there is to be none."""
    if round_no > policy.retries or not any(e.retryable for e in errors):
        return None  # out of retries, or nothing waiting could fix (our credentials refused)
    if not plan.forced and not any(policy.health.available(r.name, policy.clock()) for r in plan.targets):
        return None  # every target is cooling down: the next round would try none
    waits = [e.retry_after for e in errors if isinstance(e, UpstreamHTTPError) and e.retry_after is not None]
    return policy.retry_delay(round_no, max(waits) if waits else None)


def stream_failed(plan: Plan, route: Route) -> None:
    """A stream that had started failed midway: it counts against the target's circuit."""
    policy = plan.policy
    if policy is not None:
        policy.health.failed(route.name, policy.clock())
