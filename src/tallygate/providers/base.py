"""The one seam every provider implements.

A provider speaks OpenAI's chat-completions shape on our side, whatever it speaks upstream:
`chat` returns an OpenAI `chat.completion` dict, `chat_stream` yields lists of OpenAI
`chat.completion.chunk` dicts as they arrive (the last one carrying `usage` with
`choices: []`), and `embed`
returns an OpenAI embeddings `list`. Failures are raised as `tallygate.errors.UpstreamError`
subclasses; a stream raises before its first chunk when the provider refused the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tallygate.types import Usage


class Provider(Protocol):
    name: str

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        """One non-streaming completion. `body` is OpenAI-shaped with the upstream model set."""
        ...

    def chat_stream(self, body: dict) -> AsyncIterator[list[dict]]:
        """A streaming completion as batches of OpenAI chunk dicts, usage chunk last."""
        ...

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        """Embeddings, OpenAI-shaped."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
