"""What a policy remembers about each of its targets: recent latency and circuit state.

Latency is an exponentially weighted moving average (EWMA) of successful attempts: the whole
answer for a JSON request, the first chunk for a stream. A timeout counts as a sample of at
least its duration, so a target that stops answering also stops looking fast.

The circuit of a target is closed (usable) until `failures` attempts in a row fail; it is then
open for `cooldown_s` (the target is left out of plans), then half-open: the next request may
send one probe to it. A probe that succeeds closes the circuit; one that fails opens it for
another `cooldown_s`. While a probe is in flight no other request picks the target.

State is per policy and per process: two policies sharing a model learn about it separately;
with Redis configured, open circuits are shared between processes (`shared.py`), latency is
not. Times come from the caller (`now`, monotonic seconds), so tests drive the clock.
"""

from __future__ import annotations

ALPHA = 0.3  # weight of the newest latency sample: a 10x slowdown shows after one or two samples


class TargetHealth:
    """One target's latency EWMA and circuit state."""

    __slots__ = ("failures", "latency_s", "open_until", "probing", "tripped")

    def __init__(self) -> None:
        self.latency_s: float | None = None
        self.failures = 0           # consecutive failed attempts
        self.open_until = 0.0       # monotonic seconds; meaningful while `tripped`
        self.tripped = False        # the circuit opened and no probe has succeeded since
        self.probing = False        # a half-open probe is in flight


class Health:
    """Latency and circuit state of every target of one policy, by target (model) name."""

    def __init__(self, names: list[str], failures: int = 3, cooldown_s: float = 30.0) -> None:
        self._t = {name: TargetHealth() for name in names}
        self.threshold = failures
        self.cooldown_s = cooldown_s

    def __getitem__(self, name: str) -> TargetHealth:
        return self._t[name]

    def latency(self, name: str) -> float | None:
        return self._t[name].latency_s

    def available(self, name: str, now: float) -> bool:
        """Whether a plan may include `name` now: closed, or half-open with no probe in flight."""
        h = self._t[name]
        return not h.tripped or (now >= h.open_until and not h.probing)

    def begin(self, name: str, now: float) -> None:
        """An attempt on `name` starts; on a half-open target it is the probe."""
        h = self._t[name]
        if h.tripped and now >= h.open_until:
            h.probing = True

    def succeeded(self, name: str, latency_s: float) -> None:
        h = self._t[name]
        h.failures, h.tripped, h.probing = 0, False, False
        self._sample(h, latency_s)

    def answered(self, name: str) -> None:
        """The target answered, but refused the caller's request (a 4xx): alive, no latency sample."""
        h = self._t[name]
        h.failures, h.tripped, h.probing = 0, False, False

    def failed(self, name: str, now: float, timed_out_after: float | None = None) -> None:
        h = self._t[name]
        h.failures += 1
        h.probing = False
        if h.tripped or h.failures >= self.threshold:
            h.tripped = True
            h.open_until = now + self.cooldown_s
        if timed_out_after is not None and (h.latency_s is None or timed_out_after > h.latency_s):
            self._sample(h, timed_out_after)

    def released(self, name: str) -> None:
        """An attempt ended without a verdict (cancelled): another request may probe."""
        self._t[name].probing = False

    @staticmethod
    def _sample(h: TargetHealth, latency_s: float) -> None:
        h.latency_s = latency_s if h.latency_s is None else ALPHA * latency_s + (1 - ALPHA) * h.latency_s
