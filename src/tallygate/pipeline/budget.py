"""Hard monthly limits: reserve the worst case before forwarding, settle to the actual cost.

Spend per key for the current UTC month is loaded from the ledger at start-up and kept in
memory; a request first reserves what it could cost at most (`worst_case`), and is refused with
402 when spend + reservations + that would pass the key's limit. After the response the
reservation is replaced by the actual cost; on any failure it is released. Reserving and
settling never await, so concurrent requests on one event loop cannot overshoot. Reservations
live only in this process: a killed worker leaves none behind, and the restarted one reloads
spend from the ledger. (Several replicas need a shared counter: Redis, in a later change.)
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tallygate.errors import BudgetExceeded
from tallygate.pipeline.pricing import Rate, usd_text

DEFAULT_MAX_TOKENS = 4096  # output tokens assumed for a request that sets no max_tokens
IMAGE_TOKENS = 1600  # input tokens assumed per image part
_CHARS_PER_TOKEN = 3  # conservative: real tokenizers average about 4 characters a token


def month_of(ts: float) -> tuple[int, int]:
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    return d.year, d.month


def month_start_ms(month: tuple[int, int]) -> int:
    return int(dt.datetime(month[0], month[1], 1, tzinfo=dt.UTC).timestamp() * 1000)


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
    """(characters, images) of a request body or part of one, as `worst_case` counts them."""
    return _size(value)


def worst_case(body: dict, endpoint: str, rates: Iterable[Rate],
               default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """The most this request can cost, in picodollars, over every target it may be sent to.

    The prompt is every character of the body (messages, tool calls and their arguments, tool
    and response schemas, files, audio ...) at `_CHARS_PER_TOKEN`, images at `IMAGE_TOKENS`.
    """
    chars, images = _size(body)
    if endpoint == "embeddings":
        output = 0
        inputs = body.get("input")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], (int, list)):
            chars += 3 * sum(len(x) if isinstance(x, list) else 1 for x in inputs)  # token ids
    else:
        out = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        output = out if type(out) is int and out > 0 else default_max_tokens
        n = body.get("n")
        output *= n if type(n) is int and n > 1 else 1
    prompt = math.ceil(chars / _CHARS_PER_TOKEN) + images * IMAGE_TOKENS
    return max((prompt * max(r.input, r.cache_write) + output * r.output for r in rates), default=0)


@dataclass(slots=True)
class Hold:
    """A reservation against one key's month; `amount` is 0 for keys without a limit."""

    key_id: str
    amount: int
    month: tuple[int, int]


class Budget:
    """Per-key spend and reservations for the current UTC month."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._month = month_of(clock())
        self._spend: dict[str, int] = {}
        self._reserved: dict[str, int] = {}

    @property
    def month(self) -> tuple[int, int]:
        self._roll()
        return self._month

    def load(self, spend_by_key: dict[str, int], month: tuple[int, int]) -> None:
        """Start from the ledger's totals for `month` (ignored if that month is already over)."""
        if month == self.month:
            for key_id, pico in spend_by_key.items():
                self._spend[key_id] = self._spend.get(key_id, 0) + pico

    def _roll(self) -> None:
        month = month_of(self._clock())
        if month != self._month:
            self._month = month
            self._spend.clear()

    def spend(self, key_id: str) -> int:
        self._roll()
        return self._spend.get(key_id, 0)

    def reserved(self, key_id: str) -> int:
        return self._reserved.get(key_id, 0)

    def reserve(self, key_id: str, name: str, limit: int | None, amount: int) -> Hold:
        """Hold `amount` picodollars for one request, or raise `BudgetExceeded`."""
        self._roll()
        if limit is None:
            return Hold(key_id, 0, self._month)
        spent, held = self._spend.get(key_id, 0), self._reserved.get(key_id, 0)
        if spent + held + amount > limit:
            raise BudgetExceeded(
                f"API key {name!r} would pass its monthly limit of ${usd_text(limit)}: "
                f"spent ${usd_text(spent)}, ${usd_text(held)} reserved by requests in flight, "
                f"this request may cost up to ${usd_text(amount)}")
        self._reserved[key_id] = held + amount
        return Hold(key_id, amount, self._month)

    def settle(self, hold: Hold, actual: int) -> None:
        """Replace the reservation by the actual cost (0 when the request failed)."""
        self._roll()
        if hold.amount:
            left = self._reserved.get(hold.key_id, 0) - hold.amount
            if left > 0:
                self._reserved[hold.key_id] = left
            else:
                self._reserved.pop(hold.key_id, None)
        if actual and hold.month == self._month:
            self._spend[hold.key_id] = self._spend.get(hold.key_id, 0) + actual
