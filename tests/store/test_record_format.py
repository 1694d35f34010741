"""A ledger record crosses the journal by name: old journals (positional arrays, as written up to
commit 268846c) replay with every field right, and a field added in the middle is never misread."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import msgspec
import orjson

from tallygate.core.record import COLUMNS, Attempt, LedgerRecord, replace
from tallygate.store.db import migrate, open_engine
from tallygate.store.ledger import LedgerWriter
from tallygate.store.logs import LogReader
from tallygate.store.record_codec import decode_record, encode_record

FIXTURE = Path(__file__).parent / "fixtures" / "journal_268846c"

# What the fixture journal holds (fixtures/journal_268846c/generate.py.txt wrote it with the code
# of 268846c, positionally): the same records, here by name.
WRITTEN_BY_268846C = [
    LedgerRecord(id="req_v1_ok", created_at=1764000000000, key_id="key-1", key_name="growth-prod",
                 labels={"team": "growth", "env": "prod"}, tags=("US/California/SF", "production"),
                 endpoint="chat", requested_model="gpt-4o-mini", served_model="gpt-4o-mini-2024-07-18",
                 provider="openai", status=200, error_type=None, error_message=None, stream=False, partial=False,
                 input_tokens=120, output_tokens=45, cached_tokens=10, cache_write_tokens=0, reasoning_tokens=0,
                 cost_pico=123456789, pricing_source="pricing-lib", latency_us=2500, ttft_us=2400,
                 attempts=(Attempt(provider="openai", model="gpt-4o-mini-2024-07-18", status=200, latency_ms=2.345,
                                   target="gpt-4o-mini"),), error_code=None),
    LedgerRecord(id="req_v1_stream", created_at=1764000001000, key_id="key-2", key_name="batch", labels={},
                 tags=(), endpoint="messages", requested_model="claude", served_model="claude-3-5-haiku",
                 provider="anthropic", status=200, error_type=None, error_message=None, stream=True, partial=True,
                 input_tokens=7, output_tokens=3, cached_tokens=0, cache_write_tokens=5, reasoning_tokens=2,
                 cost_pico=42, pricing_source="config (estimated)", latency_us=9000, ttft_us=1500,
                 attempts=(Attempt(provider="openai", model="gpt-4o", status=502, latency_ms=1.0,
                                   error="UpstreamUnavailable", target="fast"),
                           Attempt(provider="anthropic", model="claude-3-5-haiku", status=200, latency_ms=8.5,
                                   target="cheap")), error_code=None),
    LedgerRecord(id="req_v1_402", created_at=1764000002000, key_id="key-1", key_name="growth-prod",
                 labels={"team": "growth"}, tags=("customer/acme",), endpoint="embeddings",
                 requested_model="text-embedding-3-small", served_model=None, provider=None, status=402,
                 error_type="budget_exceeded", error_message="monthly_limit of key growth-prod reached: caf\u00e9",
                 stream=False, partial=False, input_tokens=0, output_tokens=0, cached_tokens=0,
                 cache_write_tokens=0, reasoning_tokens=0, cost_pico=0, pricing_source=None, latency_us=300,
                 ttft_us=None, attempts=(), error_code="budget_exceeded"),
]


def test_a_journal_written_by_268846c_replays_into_the_database_with_every_field_right(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    shutil.copytree(FIXTURE / "0", directory / "0")
    engine = open_engine(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)

    async def restart() -> int:
        writer = LedgerWriter(engine, journal_dir=directory)
        await writer.start()  # replays the old journal
        await writer.stop()
        return writer.journal.backlog

    assert asyncio.run(restart()) == 0
    logs = LogReader(engine)
    for expected in WRITTEN_BY_268846C:
        stored = logs.get(expected.id)
        assert stored is not None, expected.id
        for name in COLUMNS:  # field by field, so a failure names the field
            assert getattr(stored.record, name) == getattr(expected, name), (expected.id, name)
    lines = next((FIXTURE / "0").glob("*.log")).read_bytes().splitlines()
    assert [decode_record(line) for line in lines] == WRITTEN_BY_268846C


def test_a_journal_line_names_every_field_and_its_version() -> None:
    rec = WRITTEN_BY_268846C[0]
    line = orjson.loads(encode_record(rec))
    assert line["v"] == 2
    assert set(line) == {"v", *COLUMNS}
    assert line["cost_pico"] == 123456789 and line["latency_us"] == 2500 and line["ttft_us"] == 2400
    assert decode_record(encode_record(rec)) == rec


def _with_a_field_in_the_middle() -> Any:
    """`LedgerRecord` as a later version might declare it: a new field between two old ones of the
    same type (strings), with the default that old lines mean."""
    fields: list[Any] = []
    for field in msgspec.structs.fields(LedgerRecord):
        fields.append((field.name, field.type, field.default))
        if field.name == "key_name":
            fields.append(("region", str | None, None))
    return msgspec.defstruct("LedgerRecordNext", fields, frozen=True, kw_only=True, tag_field="v", tag=2)


def test_a_field_added_in_the_middle_is_not_misread() -> None:
    later = _with_a_field_in_the_middle()
    assert later.__struct_fields__.index("region") < later.__struct_fields__.index("served_model")
    rec = replace(WRITTEN_BY_268846C[1], key_name="batch", requested_model="claude", served_model="haiku")

    # This version's line, read by the later version: every field by its name, the new one its default.
    read_later = msgspec.json.decode(encode_record(rec), type=later)
    assert read_later.region is None
    assert all(getattr(read_later, name) == getattr(rec, name) for name in COLUMNS)

    # The later version's line, read by this version: the field it does not know is passed over,
    # and no other field moves (a positional line would have shifted every field after it).
    newer_line = msgspec.json.encode(later(**{n: getattr(rec, n) for n in COLUMNS}, region="eu-west")) + b"\n"
    assert decode_record(newer_line) == rec
