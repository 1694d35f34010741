"""Wall-clock epoch milliseconds for the ledger and budget windows, with one seam for tests.

`now_ms()` is the system clock. `run_from(start_ms, rate)` makes it start at `start_ms` and run
`rate` times as fast; `tallygate.settings` calls it once at start-up when `TALLYGATE_FAKE_NOW` is set,
which only tests do (to cross a local midnight, or age a rolling budget window, in seconds).
Callers read `clock.now_ms()` through the module, so the seam costs nothing when unused.
"""

from __future__ import annotations

import time


def _system_ms() -> int:
    return time.time_ns() // 1_000_000


now_ms = _system_ms


def run_from(start_ms: int, rate: float = 1.0, origin_ms: int | None = None) -> None:
    """From now on, `now_ms()` reads `start_ms` at the system instant `origin_ms` (now when
    None: several processes given one origin share one clock) and runs `rate` times as fast."""
    global now_ms
    origin = time.time_ns() // 1_000_000 if origin_ms is None else origin_ms

    def fake() -> int:
        return start_ms + int((time.time_ns() // 1_000_000 - origin) * rate)

    now_ms = fake
