"""Ledger records <-> journal lines: a JSON object by name, with a version.

A line is `{"v":2,"id":"req_…","created_at":…,…,"attempts":[{…}],"error_code":null}` and a
newline: every field is named, so a field added anywhere in `LedgerRecord` (with a default) is
read as its default from older lines, and a field this version does not know is ignored; no
field is ever read by its position. Version 1 lines (a positional JSON array, written up to
commit 268846c) are still read, by the column order frozen below.

Text is made storable by any database on the way: NUL becomes U+FFFD and a lone surrogate
(which UTF-8 cannot hold) becomes '?'. The check costs one substring search when clean.
"""

from __future__ import annotations

import msgspec
import orjson

from tallygate.core.record import LedgerRecord

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LedgerRecord)

# The positional layout of version 1 lines, frozen: it must never follow `LedgerRecord`'s order.
# Lines written before `error_code` existed have 25 fields; the missing ones read as their default.
V1_COLUMNS = ("id", "created_at", "key_id", "key_name", "labels", "tags", "endpoint", "requested_model",
              "served_model", "provider", "status", "error_type", "error_message", "stream", "partial",
              "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
              "cost_pico", "pricing_source", "latency_us", "ttft_us", "attempts", "error_code")

Unreadable = (msgspec.DecodeError, orjson.JSONDecodeError, TypeError, ValueError)
"""What `decode_record` raises for a line that is not a record."""


def encode_record(rec: LedgerRecord) -> bytes:
    """One journal line: the record as a JSON object by name (with `"v"`), newline-terminated."""
    try:
        line = _encoder.encode(rec)
        if b"\\u0000" not in line:
            return line + b"\n"
    except UnicodeEncodeError:  # a lone surrogate somewhere
        pass
    return _encoder.encode(_safe(msgspec.to_builtins(rec))) + b"\n"


def decode_record(line: bytes) -> LedgerRecord:
    """The record of one journal line (either version). Raises one of `Unreadable` if it is none."""
    line = line.strip()
    if line[:1] == b"[":
        return _decode_v1(line)
    return _decoder.decode(line)


def salvage(line: bytes) -> LedgerRecord | None:
    """The whole record at the end of a line that does not decode: what a journal written by a
    version before this one holds where a write was torn (a disk that filled mid-record) and the
    next record was appended right behind the torn bytes. None if there is no whole record."""
    starts = sorted(at for mark in (b'{"v":', b'["req_') for at in _occurrences(line, mark) if at > 0)
    for start in starts:
        try:
            return decode_record(line[start:])
        except Unreadable:
            continue
    return None


def _occurrences(data: bytes, mark: bytes) -> list[int]:
    found, at = [], data.find(mark)
    while at >= 0:
        found.append(at)
        at = data.find(mark, at + 1)
    return found


def _decode_v1(line: bytes) -> LedgerRecord:
    fields = orjson.loads(line)
    if not isinstance(fields, list) or not 25 <= len(fields) <= len(V1_COLUMNS):
        raise ValueError("not a version 1 ledger record")
    return msgspec.convert(dict(zip(V1_COLUMNS, fields, strict=False)), LedgerRecord)


def safe_text(text: str) -> str:
    """`text` without NUL (-> U+FFFD) or lone surrogates (-> '?'): storable in PostgreSQL."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _safe(value: object) -> object:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value

