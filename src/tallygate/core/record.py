"""The ledger record: one finished request, with names.

`Call.record()` makes it, by keyword; the ledger writer, the roll-ups, the request observers, the
tests and the benchmark's ledger generator consume it. It is a frozen, keyword-only
`msgspec.Struct`: swapping two fields of the same type is a keyword mismatch, not a silent
misrecord, and it crosses the journal as a JSON object with field names and a version
(`{"v": 2, "id": ..., ...}`, see `store/journal.py`), so a field may be added anywhere: give it a
default (what a record written before it existed means) and old journal lines read by name.
Of the named forms measured it is the cheapest to build by keyword and to encode by name (a
slotted keyword-only dataclass costs about 3x more; `bench/record_cost.py`). Neither type can
be part of a reference cycle, so they are not tracked by the garbage collector (`gc=False`).
"""

from __future__ import annotations

from typing import Any

import msgspec

RECORD_VERSION = 2
"""The journal format of `LedgerRecord`: 1 was a positional JSON array, 2 an object by name."""


class Attempt(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One try of one upstream target.

    `target` is the configured model name (a policy's target), `model` the upstream model it
    maps to; `latency_ms` is this attempt's own duration; `error` the gateway error class.
    """

    provider: str
    model: str
    status: int
    latency_ms: float
    error: str | None = None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "provider": self.provider, "model": self.model,
                "status": self.status, "latency_ms": round(self.latency_ms, 3), "error": self.error}


class LedgerRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="v", tag=RECORD_VERSION):
    """One row of `requests`. Times in epoch ms / microseconds, money in picodollars.

    `status`, `error_type` and `error_code` are what the client was answered (the error's OpenAI
    `type` and `code`; on `/v1/messages` the client sees Anthropic's type for the status)."""

    id: str
    created_at: int
    key_id: str | None
    key_name: str | None
    labels: dict[str, str]
    tags: tuple[str, ...]
    endpoint: str
    requested_model: str | None
    served_model: str | None
    provider: str | None
    status: int
    error_type: str | None
    error_message: str | None
    stream: bool
    partial: bool
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_pico: int
    pricing_source: str | None
    latency_us: int
    ttft_us: int | None
    attempts: tuple[Attempt, ...]
    error_code: str | None = None


COLUMNS: tuple[str, ...] = LedgerRecord.__struct_fields__
"""The record's field names, which are the `requests` table's columns (`store/ingest.py`)."""
JSON_COLUMNS = ("labels", "tags", "attempts")


def replace(record: LedgerRecord, **changes: Any) -> LedgerRecord:
    """`record` with some fields changed, by name."""
    return msgspec.structs.replace(record, **changes)
