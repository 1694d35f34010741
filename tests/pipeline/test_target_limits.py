"""A policy's first target decided ahead, in the reservation (`TargetLimits.ahead`), on the
in-memory limiter: tried, it is not counted again; never tried, it is released as if never
admitted; refused ahead, its 429 (redacted for the caller) is the answer when it is tried, once.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest

from tallygate.errors import RateLimited
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.ratelimit import MemoryLimiter
from tallygate.pipeline.ratelimit_rules import Rule
from tallygate.pipeline.target_limits import TargetLimits
from tallygate.types import Principal

FIRST = Rule("rl:first", "rate limit 'first' (model first)", 1, 1000, 5, "model")


def _route(name: str) -> Route:
    return cast(Route, SimpleNamespace(name=name))  # the admission reads only the target's name


def _targets(limiter: MemoryLimiter) -> TargetLimits:
    call = Call("req_1", "chat", Principal("key-1", "caller"))
    return TargetLimits(call, lambda _call, name: (FIRST,) if name == "first" else (), limiter, 100, None)


def test_a_first_target_admitted_ahead_counts_once_when_tried_and_settles_to_its_usage() -> None:
    limiter = MemoryLimiter()
    targets = _targets(limiter)
    targets.ahead("first", limiter.admit_now([FIRST], 100))
    asyncio.run(targets(_route("first")))  # tried: already admitted, not counted again
    assert limiter.usage_now([FIRST.id])[FIRST.id].requests == 1
    targets.settle("first", 7)
    usage = limiter.usage_now([FIRST.id])[FIRST.id]
    assert (usage.requests, usage.tokens, usage.in_flight) == (1, 7, 0)


def test_a_first_target_admitted_ahead_but_never_tried_is_released_as_never_admitted() -> None:
    limiter = MemoryLimiter()
    targets = _targets(limiter)
    targets.ahead("first", limiter.admit_now([FIRST], 100))
    targets.settle(None, 0)  # its circuit opened before it was tried, say
    usage = limiter.usage_now([FIRST.id])[FIRST.id]
    assert (usage.requests, usage.tokens, usage.in_flight) == (0, 0, 0)


def test_a_first_target_refused_ahead_answers_its_429_once_then_asks_again() -> None:
    limiter = MemoryLimiter()
    targets = _targets(limiter)
    limiter.admit_now([FIRST], 100)  # its one request a minute, used by another request
    with pytest.raises(RateLimited) as refused:
        limiter.admit_now([FIRST], 100)
    targets.ahead("first", refused.value)
    with pytest.raises(RateLimited) as answer:
        asyncio.run(targets(_route("first")))
    assert "rate limit 'first'" not in answer.value.message  # another scope's limit, redacted
    assert "a rate limit on a model or policy" in answer.value.message
    with pytest.raises(RateLimited):  # a retry round asks the limiter again (still at its limit)
        asyncio.run(targets(_route("first")))
    assert limiter.usage_now([FIRST.id])[FIRST.id].requests == 1
