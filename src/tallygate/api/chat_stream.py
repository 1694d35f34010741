"""Relaying a chat-completions stream: touch only the bytes that change.

Each upstream chunk arrives as its JSON bytes. Nearly all of them only need their `id` replaced
by the gateway's request id, which is a splice when the chunk starts with `{"id":"...`, as
OpenAI's and every compatible server's do. Only a chunk that carries `usage` (the last) is
parsed, metered and re-serialised with `usage.cost`; when the client did not ask for usage, the
`"usage":null` that `include_usage` adds to every chunk is cut out and the usage chunk dropped.
Anything else unusual (another key order, spaces) takes the parse-and-serialise path, so the
bytes the client receives are those `orjson` would write for the same chunk.
"""

from __future__ import annotations

import orjson

from tallygate.errors import GatewayError
from tallygate.pipeline.call import Call
from tallygate.pipeline.pricing import Rate, usd_json
from tallygate.types import Usage

from tallygate.api.streaming import text_chars

_ID = b'{"id":"'
_USAGE = b'"usage":'
_NULL_USAGE = b',"usage":null'


class ChatCodec:
    """Encodes batches of chat chunk bytes for the client; meters the usage chunk."""

    def __init__(self, call: Call, rate: Rate, body: dict, wants_usage: bool) -> None:
        self._call, self._rate, self._body, self._wants_usage = call, rate, body, wants_usage
        self._id = call.id.encode()

    def encode(self, batch: list[bytes]) -> bytes:
        out = []
        for data in batch:
            chunk = self._chunk(data)
            if chunk is not None:
                out.append(b"data: " + chunk + b"\n\n")
        return b"".join(out)

    def _chunk(self, data: bytes) -> bytes | None:
        call = self._call
        call.streamed_chars += text_chars(data)
        at = data.find(_USAGE)
        if at >= 0 and not data.startswith(b"null", at + 8):
            return self._usage_chunk(data)
        if at >= 0 and not self._wants_usage:
            cut = data.replace(_NULL_USAGE, b"", 1)
            if len(cut) == len(data):
                return self._usage_chunk(data)  # not the compact form: parse it
            data = cut
        end = data.find(b'"', 7) if data.startswith(_ID) else -1
        if end < 0 or b"\\" in data[7:end]:
            return self._usage_chunk(data)
        return _ID + self._id + data[end:]

    def _usage_chunk(self, data: bytes) -> bytes | None:
        """The slow path: parse, re-id, meter `usage` if any, serialise."""
        chunk = orjson.loads(data)
        chunk["id"] = self._call.id
        usage_obj = chunk.get("usage")
        if usage_obj:
            usage_obj["cost"] = usd_json(self._call.meter(Usage.from_openai(usage_obj), self._rate))
        if not self._wants_usage:
            chunk.pop("usage", None)
            if usage_obj and not chunk.get("choices"):
                return None
        return orjson.dumps(chunk)

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        return b"data: " + err.body() + b"\n\n"

    def settle(self) -> None:
        call = self._call
        if call.partial or call.pricing_source is None:
            call.meter_estimate(self._body, self._rate)  # cut short: no usage from the provider
