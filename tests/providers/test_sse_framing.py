"""An SSE response reads as the same events however its bytes arrive: one-line `data:` events
(split once, the fast path), named and multi-line events, comments, CRLF and CR line endings,
runs of blank lines, and an event left without its blank line at the end."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from tallygate.providers.http import sse_batches, sse_data

PIECES = [b'data: {"id":"c","choices":[]}\n\n', b"data: [DONE]\n\n", b": keep-alive\n\n",
          b"event: ping\ndata: {}\n\n", b"data: one\ndata: two\n\n", b'data: {"a":1}\r\n\r\n',
          b"data: cr\r\r", b"\n\n\n", b"data:no-space\n\n", b"data: x\n\n\n\n", b"data: last"]


class _Content:
    """aiohttp's `StreamReader` as the SSE readers use it: `readany()` gives each read as it
    arrived, then `b""` at the end of the body."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)

    async def readany(self) -> bytes:
        return next(self._reads, b"")


class _Response:
    """What the SSE readers use of an aiohttp response: its content, read as it arrives."""

    def __init__(self, reads: list[bytes]) -> None:
        self.content = _Content(reads)


def _reference(stream: bytes) -> list[tuple[str | None, bytes]]:
    """The events of the whole stream read at once, line by line as the SSE format says."""
    text = stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    events = []
    for block in text.split(b"\n\n"):
        name, data = None, []
        for line in block.strip(b"\n").split(b"\n") if not text.endswith(block) else block.strip(b"\r\n").split(b"\n"):
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode()
        if data:
            events.append((name, b"\n".join(data)))
    return events


async def _read(reader: Any, reads: list[bytes]) -> list[Any]:
    return [item async for batch in reader(cast(aiohttp.ClientResponse, _Response(reads))) for item in batch]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12), st.lists(st.integers(1, 40), max_size=20))
def test_events_are_the_same_however_the_bytes_arrive(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    reads, at = [], 0
    for size in cuts:
        reads.append(stream[at:at + size])
        at += size
    reads.append(stream[at:])
    expected = _reference(stream)
    assert asyncio.run(_read(sse_batches, reads)) == expected
    assert asyncio.run(_read(sse_data, reads)) == [data for _, data in expected]
