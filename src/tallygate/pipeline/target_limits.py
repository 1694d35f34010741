"""Model rate limits on a routing policy's targets, admitted target by target as they are tried.

A limit on a model counts the requests that model serves, however they reach it: named, or by a
policy that tries it first or falls back to it. A policy's request is admitted under the limits
of the name it gives and of the policy, and under its first target's own model limits, in its one
reservation round trip (`Pipeline.reserve`): the first target's admission is decided there once
the request is admitted and never refuses the request itself, only that target (`ahead`). Each
further target's model limits are admitted just before it is tried (a round trip of its own, only
for a fallback to a target that has such a limit: a new attempt). A target at its limit is skipped
for the next one as if it had answered 429; a target never tried is never counted (the first
target admitted ahead but skipped, its circuit having opened meanwhile, is released as never
admitted). Each target tried counts the request once (a retry round does not count it again); a
target that failed holds its slot until the request ends and is settled to 0 tokens, the one that
served to what it used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from tallygate.errors import RateLimited
from tallygate.pipeline.budget import StaleScopes
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import Route
from tallygate.pipeline.ratelimit import RateHold, RateLimiter, TargetAdmission
from tallygate.pipeline.ratelimit import redacted as rate_redacted
from tallygate.pipeline.ratelimit_rules import Rule

RulesFor = Callable[[Call, str], Sequence[Rule]]  # (call, target name) -> that target's model limits


class TargetLimits:
    """The target admissions of one request (`Call.admit_route`), settled when it ends."""

    def __init__(self, call: Call, rules_for: RulesFor, limiter: RateLimiter, tokens: int,
                 catch_up: Callable[[str], Awaitable[None]] | None) -> None:
        self._call, self._rules_for, self._limiter, self._tokens = call, rules_for, limiter, tokens
        self._catch_up = catch_up
        self.holds: dict[str, RateHold] = {}
        self._untried: set[str] = set()  # admitted ahead, not tried (yet)
        self._refused: dict[str, Exception] = {}  # refused ahead: the answer when tried

    def ahead(self, target: str, admission: TargetAdmission) -> None:
        """`target` (the policy's first) was decided in the reservation's round trip."""
        if isinstance(admission, RateHold):
            self.holds[target] = admission
            self._untried.add(target)
        elif admission is not None:
            self._refused[target] = admission

    async def __call__(self, route: Route) -> None:
        """Admit the request under `route`'s model limits (once per target), or raise
        `RateLimited` counting it against none of them."""
        if route.name in self.holds:
            self._untried.discard(route.name)
            return
        refused = self._refused.pop(route.name, None)  # once: a retry round asks its limits again
        if refused is not None:
            raise rate_redacted(refused, self._call.principal) if isinstance(refused, RateLimited) else refused
        for attempt in range(3):
            rules = self._rules_for(self._call, route.name)
            if not rules:
                return
            try:
                self.holds[route.name] = await self._limiter.admit(rules, self._tokens)
                return
            except RateLimited as err:
                raise rate_redacted(err, self._call.principal) from None
            except StaleScopes as stale:  # limits changed elsewhere: reload them and decide again
                if self._catch_up is None or attempt == 2:
                    raise
                await self._catch_up(stale.version)

    def settle(self, served: str | None, tokens: int) -> None:
        """The request ended, served by the target named `served` (None: by none) with `tokens`."""
        for name, hold in self.holds.items():
            self._limiter.settle(hold, None if name in self._untried else tokens if name == served else 0)
        self.holds.clear()
        self._untried.clear()
