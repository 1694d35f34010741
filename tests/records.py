"""Ledger records for tests: one blank `LedgerRecord`, with the fields a test cares about set."""

from __future__ import annotations

from typing import Any

from tallygate.core.record import LedgerRecord, replace

BLANK = LedgerRecord(
    id="", created_at=0, key_id=None, key_name="t", labels={}, tags=(), endpoint="chat",
    requested_model="m", served_model="m", provider="p", status=200, error_type=None, error_message=None,
    stream=False, partial=False, input_tokens=1, output_tokens=1, cached_tokens=0, cache_write_tokens=0,
    reasoning_tokens=0, cost_pico=5, pricing_source="config", latency_us=1, ttft_us=None, attempts=(),
    error_code=None)


def make_record(**fields: Any) -> LedgerRecord:
    """`BLANK` with `fields` replaced (`tags` may be given as a list)."""
    if "tags" in fields:
        fields["tags"] = tuple(fields["tags"])
    return replace(BLANK, **fields)
