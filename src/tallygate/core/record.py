"""The ledger record: one finished request, in the column order of the `requests` table.

`Call.record()` makes it; the ledger writer, the roll-ups, the request observers, the tests and
the benchmark's ledger generator consume it. Nobody rebuilds its shape by hand. A new field goes
last, as its column does (`ALTER TABLE ... ADD COLUMN`): journal lines written before it existed
are read with it None (`store/journal.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class Attempt:
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


class LedgerRecord(NamedTuple):
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
    error_code: str | None


COLUMNS: tuple[str, ...] = LedgerRecord._fields
JSON_COLUMNS = ("labels", "tags", "attempts")
