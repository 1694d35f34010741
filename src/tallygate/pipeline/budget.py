"""Hard limits per window: reserve the worst case before forwarding, settle to the actual cost.

A request reserves against every `Scope` that caps it (its key's own limit and every budget that
applies to it, see `pipeline/scopes.py`) through a `BudgetEngine`: all scopes or none. A request
first reserves what it could cost at most (`worst_case`), and is refused with 402 when, for any
limited scope, spend + reservations + that would pass the limit. After the response the
reservation is replaced by the actual cost; on any failure it is released.

Each scope counts its spend over its `period`'s window (`core/windows.py`: the calendar month by
default, or a day or week, all local to the reporting time zone, or a rolling window), at the
instant the request started (the ledger's `created_at`), so several scopes of different periods
may bind one request.

`MemoryBudget` is the engine of one process: spend per scope and slot of its window is loaded
from the ledger at start-up and kept in memory; reserving never suspends, so concurrent requests
on one event loop cannot overshoot, and a killed worker leaves no reservation behind.
`RedisBudget` (`pipeline/redis_budget.py`) shares the same state between processes and replicas.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from tallygate.core import clock, windows
from tallygate.core.money import usd_text
from tallygate.core.windows import MONTH, Window, Windows
from tallygate.errors import BudgetExceeded, BudgetUnavailable, InvalidRequest
from tallygate.pipeline.image_tokens import IMAGE_PARTS, MAX_IMAGE_TOKENS
from tallygate.pipeline.output_cap import DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS
from tallygate.pipeline.output_cap import output_bound
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.tool_fees import NO_TOOLS, ToolBound
from tallygate.types import Principal, Usage

IMAGE_TOKENS = 1600  # input tokens an image part is estimated at (not bounded at: `image_tokens`)
TOOLS_TOKENS = 512  # the system prompt a provider adds when tools are given (Anthropic's: 346)
# What Anthropic adds to the prompt for each of its schema-less tools a request gives, on top of
# the tool-use system prompt (its tool-use docs, "Pricing"): the computer tool's definition (735)
# with the computer-use system prompt (466 to 499), the text editor's (700), bash's (245). Their
# few bytes in the body do not bound that.
DEFINED_TOOLS = (("computer_", 735 + 499), ("text_editor_", 700), ("bash_", 245))


def _is_image(part: dict[str, Any]) -> bool:
    kind = part.get("type")
    return isinstance(kind, str) and kind in IMAGE_PARTS


def _size(value: object) -> tuple[int, int]:
    """(characters, images) in any JSON value: every string counts, keys and all, except that
    an image part counts as `IMAGE_TOKENS` whatever the size of its (often base64) URL."""
    if isinstance(value, str):
        return len(value), 0
    chars = images = 0
    if isinstance(value, dict):
        if _is_image(value):
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


_ESCAPED = re.compile(r'[\x00-\x1f"\\]')  # written as two bytes in JSON text (\n, \", \\) ...
_LONG_ESCAPED = re.compile(r"[\x00-\x07\x0b\x0e-\x1f]")  # ... or six (\u0001)


def _text_bytes(text: str) -> int:
    """UTF-8 bytes of `text` written inside a JSON string, its escapes included (a control
    character is six bytes of the JSON text a provider reads a tool's input as)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if _ESCAPED.search(text) is None:
        return size
    return size + len(_ESCAPED.findall(text)) + 4 * len(_LONG_ESCAPED.findall(text))


def _bytes(value: object) -> tuple[int, int]:
    """(bytes, images) of any JSON value as compact JSON text: every string and key with its
    quotes and escapes, every other scalar as its text, and each array's and object's brackets,
    commas and colons (a provider reads a tool's input or schema as that text: an array of empty
    arrays is all punctuation, a string of control characters six bytes each); an image part
    counts as one image whatever its size."""
    if isinstance(value, str):
        return _text_bytes(value) + 2, 0
    if isinstance(value, dict):
        if _is_image(value):
            return 0, 1
        size, images = 2 + 4 * len(value), 0  # braces; each key's quotes, its colon and a comma
        for k, v in value.items():
            b, i = _bytes(v)
            size, images = size + b + _text_bytes(k), images + i
        return size, images
    if isinstance(value, list):
        size, images = 2 + len(value), 0  # brackets and a comma each
        for v in value:
            b, i = _bytes(v)
            size, images = size + b, images + i
        return size, images
    return len(str(value)), 0  # a number's text; true, false and null are 4 or 5 bytes


def prompt_bound(body: dict[str, Any], endpoint: str, image_tokens: int = MAX_IMAGE_TOKENS,
                 sent: Sequence[dict[str, Any]] = ()) -> int:
    """The most input tokens `body` can be billed for, whatever its text, when it is sent as it
    is or as any of `sent` (its translations for targets of another API: `pipeline/sent.py`,
    where each image is a stand-in of a few bytes and is counted as in `body`).

    Every tokenizer the providers use (byte-level BPE; SentencePiece with byte fallback) spends
    at least one UTF-8 byte a token, so the body's bytes bound its text, whatever the script or
    however adversarial; the bytes of the body's keys and parameters (`model`, `role`, ...) more
    than cover the few tokens of framing a provider adds per message. Token ids given to
    embeddings count one each; images `image_tokens` each (the most one image can be billed at
    the targets, `image_tokens.image_tokens`); tools add `TOOLS_TOKENS`, and Anthropic's
    computer, text editor and bash tools the definitions it adds for each (`DEFINED_TOOLS`).
    """
    if endpoint == "embeddings":
        inputs = body.get("input")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], (int, list)):
            ids = sum(len(x) if isinstance(x, list) else 1 for x in inputs)
            rest, images = _bytes({k: v for k, v in body.items() if k != "input"})
            return ids + rest + images * image_tokens
    size, images = _bytes(body)
    for translated in sent:  # the largest body any target reads
        size = max(size, _bytes(translated)[0])
    tools = body.get("tools")
    return size + images * image_tokens + (TOOLS_TOKENS + defined_tools(tools) if tools else 0)


def defined_tools(tools: object) -> int:
    """Input tokens Anthropic's own tools among `tools` add to the prompt (`DEFINED_TOOLS`)."""
    if not isinstance(tools, list):
        return 0
    added = 0
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str):
            added += next((tokens for prefix, tokens in DEFINED_TOOLS if kind.startswith(prefix)), 0)
    return added


def lost_usage(body: dict[str, Any], endpoint: str) -> Usage:
    """What an attempt that timed out after the request was sent is charged (the provider bills
    it as if it had answered): the prompt as an answer without usage is estimated (about four
    characters a token, an image at `IMAGE_TOKENS`), the output at the cap sent (`output_bound`;
    the gateway's default where a request under no limit sets none). Embeddings: the prompt."""
    chars, images = _size(body)
    try:
        output = output_bound(body, endpoint)
    except InvalidRequest:  # a cap no provider took: the provider says so, it does not time out
        output = DEFAULT_MAX_TOKENS
    return Usage(input_tokens=-(-chars // 4) + images * IMAGE_TOKENS, output_tokens=output)


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
    """Something with a limit per window that a request counts against: `kind` is 'key' (the
    key's own limit; `id` is the key id) or 'budget' (`id` is 'budget:<budget id>', `name`
    describes the budget and its scope for error messages)."""

    kind: str
    id: str
    name: str
    limit: int | None  # picodollars; None: counted, never refused
    enforce: bool = True  # False: a soft budget: its limit drives alerts and views, never refuses
    period: str = MONTH  # the window its spend counts over (core/windows.py)

    def describe(self) -> str:
        return f"API key {self.name!r}" if self.kind == "key" else self.name


ScopesOf = Callable[[Principal, tuple[str, ...]], tuple[Scope, ...]]  # (principal, tags) -> scopes


def key_scopes(principal: Principal) -> tuple[Scope, ...]:
    """The scopes a request made with `principal` counts against (none for the bootstrap admin)."""
    if principal.key_id is None:
        return ()
    return (Scope("key", principal.key_id, principal.name, principal.monthly_limit, True, principal.limit_period),)


@dataclass(frozen=True, slots=True)
class Hold:
    """One request's reservation: `amount` held against each scope of `held`; its cost will
    count in every counter of `counters` ('<slot>:s:<scope id>': each scope's running slot)."""

    counters: tuple[str, ...]
    held: tuple[str, ...]
    amount: int
    request: str = ""  # the request's id, when the engine noted it unsettled until its settle (Redis)


def counters(scopes: Sequence[Scope], wins: Windows, at_ms: int) -> tuple[str, ...]:
    """The counter each scope's cost goes to: its window's running slot at `at_ms`."""
    return tuple(f"{wins.at(s.period, at_ms).slots[0]}:s:{s.id}" for s in scopes)


class BudgetEngine(Protocol):
    """Reserve a request's worst case against all its scopes at once, then settle it.

    `reserve` and `settle` run on the event loop; `spend`, `reserved` and `adopt` may block
    (the management API calls them from worker threads)."""

    windows: Windows  # each period's current window, in the reporting time zone
    adoptions: int  # calls of `adopt` so far: scopes appeared or changed period when it moves

    async def reserve(self, scopes: Sequence[Scope], amount: int, at_ms: int | None = None,
                      request_id: str = "") -> Hold:
        """Hold `amount` against every limited scope, each in its window at `at_ms` (the
        request's start; now when None), or raise `BudgetExceeded` holding none
        (`BudgetUnavailable` when the shared state cannot be reached and limits must hold).
        `request_id`: the request's ledger id, for `settle_replayed`."""

    def settle(self, hold: Hold, actual: int) -> None:
        """Replace the reservation by the actual cost (0 when the request failed). Never blocks."""

    def spend(self, scope_id: str, period: str = MONTH) -> int:
        """A scope's spend in its `period`'s current window, in picodollars."""

    def reserved(self, scope_id: str) -> int:
        """What requests in flight hold against a scope now."""

    def adopt(self, spend: dict[str, int], wins: Sequence[Window]) -> None:
        """Start scopes new to the engine (a budget just created, or given another period) from
        the ledger's spend in `wins`, by counter ('<slot>:s:<scope id>'): each counter becomes
        the larger of itself and the ledger's."""

    def restart(self, scope_id: str, spend: dict[str, int], wins: Sequence[Window], change: str) -> None:
        """Count a scope that now covers other requests (a budget given another scope) from the
        ledger's `spend` in `wins` alone: each of its counters there becomes exactly the ledger's
        (0 where it has none), what it counted for its old scope forgotten. `change` names the
        change: of the processes sharing counters, the first to see it restarts them, the others
        `adopt` (blocking)."""

    def bump(self) -> None:
        """Say that budgets or keys' limits or labels changed: every process deciding a request's
        scopes from older ones reloads them before reserving (blocking)."""


def window_fields(engine: BudgetEngine, period: str) -> dict[str, Any]:
    """`period`, `window_start` and `window_end` (ISO 8601, UTC; None for a rolling window) of
    the management API's views."""
    w = engine.windows.at(period, clock.now_ms())
    return {"period": windows.api_form(period), "window_start": _iso(w.start),
            "window_end": None if w.end is None else _iso(w.end)}


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def usage_text(engine: BudgetEngine, scope_id: str, period: str = MONTH) -> tuple[str | None, str | None]:
    """(spend in the current window, reserved) of a scope as USD strings for the management
    API; (None, None) while the shared budget state is unreachable."""
    try:
        return usd_text(engine.spend(scope_id, period)), usd_text(engine.reserved(scope_id))
    except BudgetUnavailable:
        return None, None


def refusal(scope: Scope, spent: int, held: int, amount: int) -> BudgetExceeded:
    """The 402 for a request that would take `scope` past its limit (as the management API may
    see it: `redacted` gives what any caller may)."""
    assert scope.limit is not None
    err = BudgetExceeded(
        f"{scope.describe()} would pass its {windows.label(scope.period)} limit of ${usd_text(scope.limit)}: "
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
        out = BudgetExceeded("a budget on this request's tags or this key's labels would pass its limit: "
                             f"this request may cost up to ${usd_text(amount)}")
    out.scope_id = scope_id
    return out


_DIGITS = "0123456789"


class MemoryBudget:
    """A `BudgetEngine` for one process: spend per counter ('<slot>:s:<scope id>') and
    reservations per scope.

    Reserving and settling never await, so concurrent requests on one event loop cannot
    overshoot. Counters of slots no current window counts are dropped when a window moves."""

    def __init__(self, clock_s: Callable[[], float] | None = None, tz: str = "UTC") -> None:
        """`clock_s`: seconds since the epoch (the process clock, `core/clock.py`, by default)."""
        self._clock_s = clock_s
        self.windows = Windows(tz)
        self._spend: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._pruned = 0  # `windows.moves` when counters were last pruned
        self.adoptions = 0

    def now_ms(self) -> int:
        return clock.now_ms() if self._clock_s is None else int(self._clock_s() * 1000)

    def _prune(self) -> None:
        """Drop the counters of slots their period's window has left (after a window moved);
        those of periods not used yet in this process stay."""
        if self.windows.moves == self._pruned:
            return
        self._pruned = self.windows.moves
        current = self.windows.current()
        live = {slot for w in current for slot in w.slots}
        kinds = {w.slots[0].rstrip(_DIGITS) for w in current}  # '', 'd', 'w', 'r<slot ms>:'
        for c in list(self._spend):  # in place: `adopt` may write from a worker thread meanwhile
            slot = c.partition(":s:")[0]
            if slot not in live and slot.rstrip(_DIGITS) in kinds:
                self._spend.pop(c, None)

    @property
    def month(self) -> int:
        """The first millisecond of the current month (in the reporting time zone)."""
        return self.windows.at(MONTH, self.now_ms()).start

    def load(self, spend_by_scope: dict[str, int], month: int) -> None:
        """Add month totals by scope id (ignored if that month is already over)."""
        if month == self.month:
            for scope_id, pico in spend_by_scope.items():
                counter = f"{month}:s:{scope_id}"
                self._spend[counter] = self._spend.get(counter, 0) + pico

    def spend(self, scope_id: str, period: str = MONTH) -> int:
        w = self.windows.at(period, self.now_ms())  # (counters are pruned on the event loop only)
        return sum(self._spend.get(f"{slot}:s:{scope_id}", 0) for slot in w.slots)

    def reserved(self, scope_id: str) -> int:
        return self._reserved.get(scope_id, 0)

    def adopt(self, spend: dict[str, int], wins: Sequence[Window] = ()) -> None:
        self.adoptions += 1
        for counter, pico in spend.items():
            if pico > self._spend.get(counter, 0):
                self._spend[counter] = pico

    def restart(self, scope_id: str, spend: dict[str, int], wins: Sequence[Window], change: str = "") -> None:
        self.adoptions += 1
        for w in wins:
            for slot in w.slots:
                counter = f"{slot}:s:{scope_id}"
                self._spend[counter] = spend.get(counter, 0)

    def bump(self) -> None:
        """Nothing to do: this process's changes apply here at once."""

    async def reserve(self, scopes: Sequence[Scope], amount: int, at_ms: int | None = None,
                      request_id: str = "") -> Hold:
        return self.reserve_now(scopes, amount, at_ms)

    def reserve_now(self, scopes: Sequence[Scope], amount: int, at_ms: int | None = None) -> Hold:
        """`reserve`, synchronously."""
        at = self.now_ms() if at_ms is None else at_ms
        window_at, spend, reserved = self.windows.at, self._spend, self._reserved
        names, held_by = [], []
        for s in scopes:
            w = window_at(s.period, at)
            name = f"{w.slots[0]}:s:{s.id}"
            names.append(name)
            if s.limit is not None and amount:
                spent = spend.get(name, 0) if len(w.slots) == 1 else \
                    sum(spend.get(f"{slot}:s:{s.id}", 0) for slot in w.slots)
                held = reserved.get(s.id, 0)
                if spent + held + amount > s.limit:
                    raise refusal(s, spent, held, amount)
                held_by.append(s.id)
        if self.windows.moves != self._pruned:
            self._prune()
        for scope_id in held_by:
            reserved[scope_id] = reserved.get(scope_id, 0) + amount
        return Hold(tuple(names), tuple(held_by), amount if held_by else 0)

    def settle(self, hold: Hold, actual: int) -> None:
        for scope_id in hold.held:
            left = self._reserved.get(scope_id, 0) - hold.amount
            if left > 0:
                self._reserved[scope_id] = left
            else:
                self._reserved.pop(scope_id, None)
        if actual:
            for counter in hold.counters:
                self._spend[counter] = self._spend.get(counter, 0) + actual
