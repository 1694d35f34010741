"""CPU per request of the ledger record on the hot path, in this process: `Call.record()` (the
record built by keyword) and `encode_record` (the journal line), without the write syscall
(`make bench` prints the journal's whole cost, write included). Best of 9 runs of 50,000.

    .venv/bin/python bench/record_cost.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tallygate.core.record import Attempt
from tallygate.pipeline.call import Call
from tallygate.store.record_codec import encode_record
from tallygate.types import Principal, Usage


def best_us(fn: Callable[[], object], n: int = 50_000, runs: int = 9) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - started) / n * 1e6)
    return best


def main() -> None:
    principal = Principal(key_id="5f0e3c1a-9b2d-4e8f-a7c6-1d2e3f4a5b6c", name="growth-autocomplete-prod",
                          labels={"team": "growth", "env": "prod", "feature": "autocomplete"})
    call = Call("req_19c3f0a2b1d4e5f60718293a4", "chat", principal)
    call.tags = ("team/feature", "US/California/SF")
    call.requested_model = "mock-gpt"
    call.usage = Usage(input_tokens=41, output_tokens=12)
    call.cost_pico, call.pricing_source = 33_150_000, "genai-prices"
    call.attempts.append(Attempt(provider="mock", model="mock-gpt", status=200, latency_ms=1.2, target="mock-gpt"))
    record = call.record()
    build, encode = best_us(call.record), best_us(lambda: encode_record(record))
    print(f"Call.record(): {build:.2f} µs; encode_record: {encode:.2f} µs; line: {len(encode_record(record))} bytes")


if __name__ == "__main__":
    main()
