"""Rate limits at admission: requests per second and per minute, tokens per minute, and
requests in flight.

Each limit (`pipeline/ratelimit_rules.Rule`) counts with a sliding window log: the admission
time of every request of the last 60 seconds (and, for tokens, each one's amount), and for
`requests_per_second` of the last second. A request is admitted when, for every limit that
applies, the requests in each window plus one stay within `requests_per_second` and
`requests_per_minute`, the tokens in the window plus its worst case within `tokens_per_minute`,
and the requests in flight plus one within `max_concurrent`; then it counts against all of them,
or it is refused (429) and counts against none. Why a log rather than a fixed window or GCRA: it
is exact (in no 60-second interval, nor 1-second one for `requests_per_second`, are more than
the limit admitted, where a fixed window lets twice the limit through across a boundary), its
entries can be corrected after the fact (a request's tokens are reserved as the worst case and
settled to its actual usage), and the same structure is a sorted set in Redis. Its cost is
memory: at most `limit` entries per limit and window. (GCRA would be as exact for requests in
O(1) memory; one algorithm for all three counts, with one error bound, zero, was preferred.)

Tokens are input + output: the worst case is the budget's (`pipeline/budget.py`: every
character of the body at 3 characters a token, images at 1,600 tokens, the output cap), settled
to the provider's usage when the request ends. The request in flight is released when the
exchange ends, whatever the way: answered, failed upstream, or the client gone.

`MemoryLimiter` is the limiter of one process (its monotonic clock, so exact in that process).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tallygate.errors import BudgetUnavailable, RateLimited
from tallygate.pipeline.budget import prompt_bound
from tallygate.pipeline.output_cap import DEFAULT_MAX_TOKENS, output_bound
from tallygate.pipeline.ratelimit_rules import Rule
from tallygate.types import Principal

WINDOW_S = 60.0
SECOND_S = 1.0  # the window of requests_per_second
CONCURRENCY_RETRY_S = 1.0  # retry-after for a request refused for want of a slot in flight

# (principal, tags, models: every model and policy name the request resolves to)
RulesOf = Callable[[Principal, tuple[str, ...], tuple[str, ...]], tuple[Rule, ...]]


def worst_tokens(body: dict[str, Any], endpoint: str, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """The most input + output tokens a request can use, counted as `budget.worst_case` does."""
    return prompt_bound(body, endpoint) + output_bound(body, endpoint, default_max_tokens)


def duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* form: `250ms`, `1.5s`, `1m2s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def limit_headers(kind: bytes, limit: int, remaining: int, reset_s: float) -> list[tuple[bytes, bytes]]:
    """x-ratelimit-limit/remaining/reset-`kind` (b'requests' or b'tokens')."""
    return [(b"x-ratelimit-limit-" + kind, b"%d" % limit),
            (b"x-ratelimit-remaining-" + kind, b"%d" % max(0, remaining)),
            (b"x-ratelimit-reset-" + kind, duration(reset_s).encode())]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleUsage:
    """What one rate limit counts now: requests and tokens admitted in the last 60 seconds
    (tokens as reserved while in flight, as used once settled) and requests in flight."""

    requests: int
    tokens: int
    in_flight: int
    requests_last_second: int = 0


@dataclass(slots=True)
class RateHold:
    """What one admitted request holds: `token_entries` to settle, the ids it is in flight in,
    and the x-ratelimit-* headers of its answer."""

    rules: tuple[Rule, ...]
    tokens: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    token_entries: list[tuple[str, list[Any]]] = field(default_factory=list)
    request_times: list[tuple[str, float]] = field(default_factory=list)
    second_times: list[tuple[str, float]] = field(default_factory=list)
    inflight: tuple[str, ...] = ()
    remote: Any = None  # the shared limiter's own record of the admission


class RateLimiter(Protocol):
    async def admit(self, rules: Sequence[Rule], tokens: int) -> RateHold:
        """Count the request against every rule, or raise `RateLimited` counting it against none."""

    def settle(self, hold: RateHold, actual_tokens: int | None) -> None:
        """The request ended having used `actual_tokens`; None: it was never served (another
        limit refused it), so it is taken out of the windows as if never admitted."""

    async def usage(self, rule_ids: Sequence[str]) -> tuple[dict[str, RuleUsage], str]:
        """What each limit (by `Rule.id`) counts now, without counting anything, and who counted
        it: 'redis' (every process sharing it) or 'process' (this process alone)."""


# A policy's first target admitted ahead, in the reservation: its hold, the error to answer when
# it is tried (its limit's 429, or 503 while the state is unreachable), or None (no limit on it).
TargetAdmission = RateHold | RateLimited | BudgetUnavailable | None


@runtime_checkable
class SharedLimiter(RateLimiter, Protocol):
    """A limiter whose state is shared with the budget's (Redis): it admits rate limits and
    reserves the budget in one round trip."""

    async def reserve(self, scopes: Sequence[Any], amount: int, rules: Sequence[Rule], tokens: int,
                      at_ms: int | None = None, request_id: str = "",
                      first: Sequence[Rule] = ()) -> tuple[Any, RateHold, TargetAdmission]:
        """(budget hold, rate hold, the admission under `first`, a policy's first target's model
        limits, decided in the same round trip once the request is admitted), or `RateLimited` /
        `BudgetExceeded` holding nothing."""


# What a caller who may not read a limit learns of it: which part of its request it limits.
_UNNAMED = {"label": "a rate limit on this key's labels", "tag": "a rate limit on this request's tags",
            "model": "a rate limit on a model or policy this request is routed to"}


def _refusal_text(who: str, what: str, limit: int, retry_s: float | None, tokens: int) -> str:
    if retry_s is None:
        return (f"this request may use up to {tokens} tokens, more than {who} allows in a minute "
                f"({limit} tokens per minute): lower max_tokens or shorten the input")
    return f"{who} allows {limit} {what}: retry after {retry_s:.3f}s"


def refused(rule: Rule, what: str, limit: int, retry_s: float | None,
            headers: list[tuple[bytes, bytes]], tokens: int = 0) -> RateLimited:
    """The 429 as the management API may read it (`redacted` gives what the caller may)."""
    err = RateLimited(_refusal_text(rule.name, what, limit, retry_s, tokens), retry_after=retry_s,
                      tokens=what.startswith("tokens"), limit_headers=headers)
    err.rule_id, err.scope_kind = rule.id, rule.kind
    err.unnamed = _refusal_text(_UNNAMED.get(rule.kind, "a rate limit"), what, limit, retry_s, tokens)
    return err


def redacted(err: RateLimited, principal: Principal) -> RateLimited:
    """The 429 a caller may read, as budgets' 402 (`budget.redacted`): a limit on its own key in
    full with its id; any other limit in full with its id only to `manage: read`, which may read
    every rate limit; else only which part of the request (tags, labels, model) a limit refused.
    The numbers (limit, retry-after, x-ratelimit-* headers) are every caller's."""
    if err.rule_id is None:
        return err
    if err.scope_kind == "key" or principal.can("manage", "read"):
        message = f"{err.message} (rate limit id {err.rule_id.removeprefix('rl:')})"
    else:
        message = err.unnamed or "a rate limit refused this request"
    out = RateLimited(message, retry_after=err.retry_after, limit_headers=err.limit_headers)
    out.type, out.rule_id, out.scope_kind = err.type, err.rule_id, err.scope_kind
    return out


class _Window:
    __slots__ = ("requests", "second", "tokens", "token_sum", "inflight")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.second: deque[float] = deque()  # admissions of the last second (requests_per_second)
        self.tokens: deque[list[Any]] = deque()  # [time, amount, still in the window]
        self.token_sum = 0
        self.inflight = 0

    def expire(self, now: float) -> None:
        edge = now - WINDOW_S
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()
        while self.second and self.second[0] <= now - SECOND_S:
            self.second.popleft()
        while self.tokens and self.tokens[0][0] <= edge:
            entry = self.tokens.popleft()
            entry[2] = False
            self.token_sum -= entry[1]

    def token_wait(self, now: float, need: int, limit: int) -> float:
        """Seconds until `need` more tokens fit under `limit`."""
        left = self.token_sum
        for t, amount, _ in self.tokens:
            left -= amount
            if left + need <= limit:
                return float(t) + WINDOW_S - now
        return WINDOW_S


class MemoryLimiter:
    """A `RateLimiter` for one process: sliding window logs in memory. Admitting never awaits,
    so concurrent requests on one event loop cannot overshoot."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    async def admit(self, rules: Sequence[Rule], tokens: int) -> RateHold:
        return self.admit_now(rules, tokens)

    def admit_now(self, rules: Sequence[Rule], tokens: int) -> RateHold:
        now = self._clock()
        windows = []
        for rule in rules:
            w = self._windows.get(rule.id)
            if w is None:
                w = self._windows[rule.id] = _Window()
            w.expire(now)
            windows.append(w)
            self._check(rule, w, now, tokens)
        hold = RateHold(tuple(rules), tokens)
        tightest: dict[bytes, tuple[int, int, float]] = {}
        for rule, w in zip(rules, windows, strict=True):
            if rule.requests_per_second is not None:
                w.second.append(now)
                hold.second_times.append((rule.id, now))
                _tighter(tightest, b"requests", rule.requests_per_second, rule.requests_per_second - len(w.second),
                         w.second[0] + SECOND_S - now)
            if rule.requests_per_minute is not None:
                w.requests.append(now)
                hold.request_times.append((rule.id, now))
                _tighter(tightest, b"requests", rule.requests_per_minute, rule.requests_per_minute - len(w.requests),
                         w.requests[0] + WINDOW_S - now)
            if rule.tokens_per_minute is not None:
                entry = [now, tokens, True]
                w.tokens.append(entry)
                w.token_sum += tokens
                hold.token_entries.append((rule.id, entry))
                _tighter(tightest, b"tokens", rule.tokens_per_minute, rule.tokens_per_minute - w.token_sum,
                         w.tokens[0][0] + WINDOW_S - now)
            if rule.max_concurrent is not None:
                w.inflight += 1
        hold.inflight = tuple(r.id for r in rules if r.max_concurrent is not None)
        for kind, (limit, remaining, reset) in tightest.items():
            hold.headers += limit_headers(kind, limit, remaining, reset)
        return hold

    def _check(self, rule: Rule, w: _Window, now: float, tokens: int) -> None:
        rpm, tpm, most = rule.requests_per_minute, rule.tokens_per_minute, rule.max_concurrent
        rps = rule.requests_per_second
        if rps is not None and len(w.second) + 1 > rps:
            wait = w.second[len(w.second) - rps] + SECOND_S - now
            raise refused(rule, "requests per second", rps, wait,
                          limit_headers(b"requests", rps, 0, w.second[0] + SECOND_S - now))
        if rpm is not None and len(w.requests) + 1 > rpm:
            wait = w.requests[len(w.requests) - rpm] + WINDOW_S - now
            raise refused(rule, "requests per minute", rpm, wait,
                          limit_headers(b"requests", rpm, 0, w.requests[0] + WINDOW_S - now))
        if tpm is not None and w.token_sum + tokens > tpm:
            until = w.token_wait(now, tokens, tpm) if tokens <= tpm else None
            reset = w.tokens[0][0] + WINDOW_S - now if w.tokens else 0.0
            raise refused(rule, "tokens per minute", tpm, until,
                          limit_headers(b"tokens", tpm, tpm - w.token_sum, reset), tokens)
        if most is not None and w.inflight + 1 > most:
            raise refused(rule, "requests in flight at once", most, CONCURRENCY_RETRY_S, [])

    def settle(self, hold: RateHold, actual_tokens: int | None) -> None:
        for rule_id in hold.inflight:
            w = self._windows.get(rule_id)
            if w is not None and w.inflight > 0:
                w.inflight -= 1
        new = actual_tokens or 0
        for rule_id, entry in hold.token_entries:
            if entry[2] and (w := self._windows.get(rule_id)) is not None:
                w.token_sum += new - entry[1]
            entry[1] = new
        if actual_tokens is None:
            for rule_id, t in hold.request_times:
                w = self._windows.get(rule_id)
                if w is not None and t in w.requests:
                    w.requests.remove(t)
            for rule_id, t in hold.second_times:
                w = self._windows.get(rule_id)
                if w is not None and t in w.second:
                    w.second.remove(t)

    def in_flight(self, rule_id: str) -> int:
        w = self._windows.get(rule_id)
        return 0 if w is None else w.inflight

    async def usage(self, rule_ids: Sequence[str]) -> tuple[dict[str, RuleUsage], str]:
        return self.usage_now(rule_ids), "process"

    def usage_now(self, rule_ids: Sequence[str]) -> dict[str, RuleUsage]:
        """What each limit counts now (limits that never admitted anything count zero)."""
        now, out = self._clock(), {}
        for rule_id in rule_ids:
            w = self._windows.get(rule_id)
            if w is None:
                out[rule_id] = RuleUsage(requests=0, tokens=0, in_flight=0)
                continue
            w.expire(now)
            out[rule_id] = RuleUsage(requests=len(w.requests), tokens=w.token_sum, in_flight=w.inflight,
                                     requests_last_second=len(w.second))
        return out


def _tighter(found: dict[bytes, tuple[int, int, float]], kind: bytes, limit: int, remaining: int,
             reset: float) -> None:
    if kind not in found or remaining < found[kind][1]:
        found[kind] = (limit, remaining, reset)
