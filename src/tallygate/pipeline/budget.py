"""Hard monthly limits: reserve the worst case before forwarding, settle to the actual cost.

A request reserves against every `Scope` that caps it (its key's own limit and every budget that
applies to it, see `pipeline/scopes.py`) through a `BudgetEngine`: all scopes or none. A request
first reserves what it could cost at most (`worst_case`), and is refused with 402 when, for any
limited scope, spend + reservations + that would pass the limit. After the response the
reservation is replaced by the actual cost; on any failure it is released.

`MemoryBudget` is the engine of one process: spend per scope for the current UTC month is loaded
from the ledger at start-up and kept in memory; reserving never suspends, so concurrent requests
on one event loop cannot overshoot, and a killed worker leaves no reservation behind.
`RedisBudget` (`pipeline/redis_budget.py`) shares the same state between processes and replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from tallygate.core.money import usd_text
from tallygate.core.timebuckets import month_floor
from tallygate.errors import BudgetExceeded, BudgetUnavailable
from tallygate.pipeline.image_tokens import MAX_IMAGE_TOKENS
from tallygate.pipeline.output_cap import DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS
from tallygate.pipeline.output_cap import output_bound
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.tool_fees import NO_TOOLS, ToolBound
from tallygate.types import Principal

IMAGE_TOKENS = 1600  # input tokens an image part is estimated at (not bounded at: `image_tokens`)
TOOLS_TOKENS = 512  # the system prompt a provider adds when tools are given (Anthropic's: 346)


def _size(value: object) -> tuple[int, int]:
    """(characters, images) in any JSON value: every string counts, keys and all, except that
    an image part counts as `IMAGE_TOKENS` whatever the size of its (often base64) URL."""
    if isinstance(value, str):
        return len(value), 0
    chars = images = 0
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image", "image"):
            return 0, 1
        for k, v in value.items():
            c, i = _size(v)
            chars, images = chars + c + len(k), images + i
    elif isinstance(value, list):
        for v in value:
            c, i = _size(v)
            chars, images = chars + c, images + i
    elif value is not None:
        chars = 8
    return chars, images


def body_size(value: object) -> tuple[int, int]:
    """(characters, images) of a request body or part of one: for estimating the usage of a call
    cut short, not for bounding it (see `prompt_bound`)."""
    return _size(value)


def _bytes(value: object) -> tuple[int, int]:
    """(UTF-8 bytes, images) in any JSON value: every string and key, every other scalar as its
    JSON text; an image part counts as one image whatever its size."""
    if isinstance(value, str):
        return (len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))), 0
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image", "image"):
            return 0, 1
        size = images = 0
        for k, v in value.items():
            b, i = _bytes(v)
            size, images = size + b + len(k.encode("utf-8", "surrogatepass")), images + i
        return size, images
    if isinstance(value, list):
        size = images = 0
        for v in value:
            b, i = _bytes(v)
            size, images = size + b, images + i
        return size, images
    return len(str(value)), 0  # a number's text; true, false and null are 4 or 5 bytes


def prompt_bound(body: dict[str, Any], endpoint: str, image_tokens: int = MAX_IMAGE_TOKENS) -> int:
    """The most input tokens `body` can be billed for, whatever its text.

    Every tokenizer the providers use (byte-level BPE; SentencePiece with byte fallback) spends
    at least one UTF-8 byte a token, so the body's bytes bound its text, whatever the script or
    however adversarial; the bytes of the body's keys and parameters (`model`, `role`, ...) more
    than cover the few tokens of framing a provider adds per message. Token ids given to
    embeddings count one each; images `image_tokens` each (the most one image can be billed at
    the targets, `image_tokens.image_tokens`); tools add `TOOLS_TOKENS`.
    """
    if endpoint == "embeddings":
        inputs = body.get("input")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], (int, list)):
            ids = sum(len(x) if isinstance(x, list) else 1 for x in inputs)
            rest, images = _bytes({k: v for k, v in body.items() if k != "input"})
            return ids + rest + images * image_tokens
    size, images = _bytes(body)
    return size + images * image_tokens + (TOOLS_TOKENS if body.get("tools") else 0)


def worst_case(body: dict[str, Any], endpoint: str, rates: Iterable[Rate],
               default_max_tokens: int = DEFAULT_MAX_TOKENS, tools: ToolBound = NO_TOOLS,
               image_tokens: int = MAX_IMAGE_TOKENS) -> int:
    """The most this request can cost, in picodollars, over every target it may be sent to.

    The prompt is `prompt_bound` (every byte of the body: messages, tool calls and their
    arguments, tool and response schemas, files, audio ...); the output is
    `output_cap.output_bound` (call `output_cap.cap_output` first so that the body sent carries
    that cap); provider-run tools add `tools` (`tool_fees.cap_tools`).
    """
    return priced_bound(prompt_bound(body, endpoint, image_tokens), output_bound(body, endpoint, default_max_tokens),
                        rates, tools)


def priced_bound(prompt: int, output: int, rates: Iterable[Rate], tools: ToolBound = NO_TOOLS) -> int:
    """The most `prompt` input and `output` output tokens can cost, in picodollars, at the
    dearest of `rates` and of the long-prompt tiers such a prompt may reach (a prompt may be
    written to a cache at the cache-write price), with what provider-run tools may add: their
    fees and the input their results and passes bring (`tool_fees.ToolBound`)."""
    read = tools.input_tokens(prompt, output)
    return max((read * max(r.input, r.cache_write, r.cache_write_1h) + output * r.output + tools.fees(r)
                for rate in rates for r in _tiers_within(rate, read)), default=0)


def _tiers_within(rate: Rate, prompt: int) -> Iterator[Rate]:
    """`rate` and each long-prompt tier a prompt of up to `prompt` tokens may be priced at."""
    yield rate
    yield from (tier for start, tier in rate.tiers if prompt > start)


class StaleScopes(Exception):  # noqa: N818 - a signal, not an error
    """The scopes were decided with budgets and keys older than the shared version: reload them
    (`version` is the one to load) and decide again."""

    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.version = version


class Scope(NamedTuple):
    """Something with a monthly limit that a request counts against: `kind` is 'key' (the key's
    own limit; `id` is the key id) or 'budget' (`id` is 'budget:<budget id>', `name` describes
    the budget and its scope for error messages)."""

    kind: str
    id: str
    name: str
    limit: int | None  # picodollars; None: counted, never refused
    enforce: bool = True  # False: a soft budget: its limit drives alerts and views, never refuses

    def describe(self) -> str:
        return f"API key {self.name!r}" if self.kind == "key" else self.name


ScopesOf = Callable[[Principal, tuple[str, ...]], tuple[Scope, ...]]  # (principal, tags) -> scopes


def key_scopes(principal: Principal) -> tuple[Scope, ...]:
    """The scopes a request made with `principal` counts against (none for the bootstrap admin)."""
    if principal.key_id is None:
        return ()
    return (Scope("key", principal.key_id, principal.name, principal.monthly_limit),)


@dataclass(frozen=True, slots=True)
class Hold:
    """One request's reservation: `amount` held against each scope of `held` in `month`; its
    cost will count against every scope of `scopes` (ids)."""

    scopes: tuple[str, ...]
    held: tuple[str, ...]
    amount: int
    month: int


class BudgetEngine(Protocol):
    """Reserve a request's worst case against all its scopes at once, then settle it.

    `reserve` and `settle` run on the event loop; `spend`, `reserved` and `adopt` may block
    (the management API calls them from worker threads)."""

    async def reserve(self, scopes: Sequence[Scope], amount: int) -> Hold:
        """Hold `amount` against every limited scope, or raise `BudgetExceeded` holding none
        (`BudgetUnavailable` when the shared state cannot be reached and limits must hold)."""

    def settle(self, hold: Hold, actual: int) -> None:
        """Replace the reservation by the actual cost (0 when the request failed). Never blocks."""

    def spend(self, scope_id: str) -> int:
        """This month's spend of a scope, in picodollars."""

    def reserved(self, scope_id: str) -> int:
        """What requests in flight hold against a scope now."""

    def adopt(self, spend_by_scope: dict[str, int], month: int) -> None:
        """Start scopes new to the engine (a budget just created) from the ledger's spend."""

    def bump(self) -> None:
        """Say that budgets or keys' limits or labels changed: every process deciding a request's
        scopes from older ones reloads them before reserving (blocking)."""


def usage_text(engine: BudgetEngine, scope_id: str) -> tuple[str | None, str | None]:
    """(spend, reserved) of a scope as USD strings for the management API; (None, None) while
    the shared budget state is unreachable."""
    try:
        return usd_text(engine.spend(scope_id)), usd_text(engine.reserved(scope_id))
    except BudgetUnavailable:
        return None, None


def refusal(scope: Scope, spent: int, held: int, amount: int) -> BudgetExceeded:
    """The 402 for a request that would take `scope` past its limit (as the management API may
    see it: `redacted` gives what any caller may)."""
    assert scope.limit is not None
    err = BudgetExceeded(
        f"{scope.describe()} would pass its monthly limit of ${usd_text(scope.limit)}: "
        f"spent ${usd_text(spent)}, ${usd_text(held)} reserved by requests in flight, "
        f"this request may cost up to ${usd_text(amount)}")
    err.scope_id = scope.id
    return err


def redacted(err: BudgetExceeded, principal: Principal, amount: int) -> BudgetExceeded:
    """The 402 a caller may read: a key's own limit in full; a budget in full (with its id) only
    to `manage: read`, which may read every budget; else only that a budget refused."""
    scope_id = err.scope_id or ""
    if not scope_id.startswith("budget:"):
        return err
    if principal.can("manage", "read"):
        out = BudgetExceeded(f"{err.message} (budget id {scope_id.removeprefix('budget:')})")
    else:
        out = BudgetExceeded("a budget on this request's tags or this key's labels would pass its monthly "
                             f"limit: this request may cost up to ${usd_text(amount)}")
    out.scope_id = scope_id
    return out


class MemoryBudget:
    """A `BudgetEngine` for one process: spend and reservations per scope for the UTC month.

    Reserving and settling never await, so concurrent requests on one event loop cannot
    overshoot."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._month = self._now_month()
        self._spend: dict[str, int] = {}
        self._reserved: dict[str, int] = {}

    def _now_month(self) -> int:
        return month_floor(int(self._clock() * 1000))

    @property
    def month(self) -> int:
        """The first millisecond of the current UTC month."""
        self._roll()
        return self._month

    def load(self, spend_by_scope: dict[str, int], month: int) -> None:
        """Start from the ledger's totals for `month` (ignored if that month is already over)."""
        if month == self.month:
            for scope_id, pico in spend_by_scope.items():
                self._spend[scope_id] = self._spend.get(scope_id, 0) + pico

    def _roll(self) -> None:
        month = self._now_month()
        if month != self._month:
            self._month = month
            self._spend.clear()

    def spend(self, scope_id: str) -> int:
        self._roll()
        return self._spend.get(scope_id, 0)

    def reserved(self, scope_id: str) -> int:
        return self._reserved.get(scope_id, 0)

    def adopt(self, spend_by_scope: dict[str, int], month: int) -> None:
        if month == self.month:
            for scope_id, pico in spend_by_scope.items():
                self._spend.setdefault(scope_id, pico)

    def bump(self) -> None:
        """Nothing to do: this process's changes apply here at once."""

    async def reserve(self, scopes: Sequence[Scope], amount: int) -> Hold:
        return self.reserve_now(scopes, amount)

    def reserve_now(self, scopes: Sequence[Scope], amount: int) -> Hold:
        """`reserve`, synchronously."""
        self._roll()
        ids = tuple(s.id for s in scopes)
        limited = [(s, s.limit) for s in scopes if s.limit is not None]
        if not limited or not amount:
            return Hold(ids, (), 0, self._month)
        for s, limit in limited:
            spent, held = self._spend.get(s.id, 0), self._reserved.get(s.id, 0)
            if spent + held + amount > limit:
                raise refusal(s, spent, held, amount)
        for s, _ in limited:
            self._reserved[s.id] = self._reserved.get(s.id, 0) + amount
        return Hold(ids, tuple(s.id for s, _ in limited), amount, self._month)

    def settle(self, hold: Hold, actual: int) -> None:
        self._roll()
        for scope_id in hold.held:
            left = self._reserved.get(scope_id, 0) - hold.amount
            if left > 0:
                self._reserved[scope_id] = left
            else:
                self._reserved.pop(scope_id, None)
        if actual and hold.month == self._month:
            for scope_id in hold.scopes:
                self._spend[scope_id] = self._spend.get(scope_id, 0) + actual
