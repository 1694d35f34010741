"""Failed key checks, counted per client address, so that guessing keys gets slow.

Each address (an IPv6 address by its /64) has a bucket of `burst` failures that refills at one
every `every_s` seconds. A failed check takes one; while the bucket is empty the address is
throttled: `wait_s` says for how long. What throttled means is the authenticator's choice (it
still serves keys it holds as valid, and answers anything else 429 without a database lookup),
so an attacker slows only its own address, never a real user's key.

Memory is bounded: past `max_addresses` the buckets that have refilled are dropped, and if that
is not enough, all of them (the attacker then starts from a fresh burst: a bounded loss).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tallygate.core.addresses import client_bucket

BURST = 10  # failed checks an address may make at once
EVERY_S = 2.0  # then one more every this many seconds


class FailureThrottle:
    """Token buckets of failed key checks, one per client address."""

    def __init__(self, burst: int = BURST, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 100_000) -> None:
        self._burst = float(burst)
        self._every_s = every_s
        self._clock = clock
        self._max = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (failures left, as of)

    def __len__(self) -> int:
        """Addresses with a bucket held."""
        return len(self._buckets)

    def wait_s(self, address: str) -> float:
        """Seconds until `address` may fail again; 0 when it is not throttled."""
        if not self._buckets:
            return 0.0
        held = self._buckets.get(client_bucket(address))
        if held is None:
            return 0.0
        left = self._left(held)
        return 0.0 if left >= 1.0 else (1.0 - left) * self._every_s

    def failed(self, address: str) -> None:
        """Count one failed key check from `address`."""
        key = client_bucket(address)
        held = self._buckets.get(key)
        left = self._burst if held is None else self._left(held)
        if held is None and len(self._buckets) >= self._max:
            self._prune()
        self._buckets[key] = (max(left - 1.0, -1.0), self._clock())

    def refund(self, address: str) -> None:
        """Give back a failure counted ahead of a check that did not fail."""
        key = client_bucket(address)
        held = self._buckets.get(key)
        if held is not None:
            self._buckets[key] = (min(self._burst, self._left(held) + 1.0), self._clock())

    def _left(self, held: tuple[float, float]) -> float:
        left, since = held
        return min(self._burst, left + (self._clock() - since) / self._every_s)

    def _prune(self) -> None:
        full = [k for k, held in self._buckets.items() if self._left(held) >= self._burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self._max:
            self._buckets.clear()
