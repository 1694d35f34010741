"""What a provider can do, as typed capabilities: one Protocol per native API.

Every provider speaks OpenAI's chat-completions shape on our side (`Provider`): `chat` returns an
OpenAI `chat.completion` dict, `chat_stream` yields lists of OpenAI `chat.completion.chunk` dicts
as they arrive (the last one carrying `usage` with `choices: []`). What else it can do natively
is a further Protocol it implements: embeddings, Anthropic's Messages API, token counting,
OpenAI's Responses API, chat chunks as raw bytes. `Capabilities.of(provider)` asks once, with
`isinstance`, and the pipeline chooses native or translated by what it finds, never by a
provider's type name. Failures are raised as `tallygate.errors.UpstreamError` subclasses; a
stream raises before its first batch when the provider refused the request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tallygate.types import Reported, Usage

RawEvents = AsyncGenerator[list[tuple[str | None, bytes]], None]  # batches of (SSE event name, data)


@runtime_checkable
class Provider(Protocol):
    """Chat completions, OpenAI-shaped: what every provider does."""

    name: str

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        """One non-streaming completion. `body` is OpenAI-shaped with the upstream model set."""
        ...

    def chat_stream(self, body: dict, reported: Reported | None = None) -> AsyncGenerator[list[dict], None]:
        """A streaming completion as batches of OpenAI chunk dicts, usage chunk last; the
        prompt's counts the provider's first events carry (if any) go in `reported`, for the
        estimate of a stream cut short. An in-band error event raises once the chunks before it
        have been yielded."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class RawChatStream(Protocol):
    """Chat chunks as the JSON bytes they came in (an OpenAI-compatible server): the relay
    re-ids them without parsing. The last batch ends with `b"[DONE]"`."""

    def chat_stream_raw(self, body: dict) -> AsyncGenerator[list[bytes], None]: ...


@runtime_checkable
class Embeddings(Protocol):
    """OpenAI's embeddings."""

    async def embed(self, body: dict) -> tuple[dict, Usage]: ...


@runtime_checkable
class NativeMessages(Protocol):
    """Anthropic's Messages API, relayed as the client sent it (`headers`: the client's
    `anthropic-version` / `anthropic-beta`)."""

    async def messages(self, body: dict, headers: dict[str, str]) -> tuple[dict, Usage]: ...

    def messages_stream(self, body: dict, headers: dict[str, str]) -> RawEvents: ...


@runtime_checkable
class TokenCounting(Protocol):
    """Anthropic's `/v1/messages/count_tokens`."""

    async def count_tokens(self, body: dict, headers: dict[str, str]) -> dict: ...


@runtime_checkable
class NativeResponses(Protocol):
    """OpenAI's Responses API, relayed as the client sent it."""

    async def responses(self, body: dict) -> tuple[dict, Usage]: ...

    def responses_stream(self, body: dict) -> RawEvents: ...


@runtime_checkable
class ChatPayload(Protocol):
    """Chat sent in another API's shape (Anthropic's Messages, Gemini's generateContent,
    Converse): the body sent for a chat `body` with the upstream model set. Pure, no I/O; raises
    what `chat` would. What a limit's reservation bounds (`pipeline/sent.py`)."""

    def chat_payload(self, body: dict) -> dict: ...


@runtime_checkable
class MessagesPayload(Protocol):
    """Anthropic's Messages sent natively in another API's shape (Converse): the body sent."""

    def messages_payload(self, body: dict) -> dict: ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """A provider's native APIs beyond chat (None where it has none), found once at start-up."""

    raw_chat_stream: RawChatStream | None
    embeddings: Embeddings | None
    messages: NativeMessages | None
    count_tokens: TokenCounting | None
    responses: NativeResponses | None
    chat_payload: ChatPayload | None = None  # chat sent in another API's shape
    messages_payload: MessagesPayload | None = None  # Messages sent natively in another API's shape

    @classmethod
    def of(cls, provider: Provider) -> Capabilities:
        return cls(provider if isinstance(provider, RawChatStream) else None,
                   provider if isinstance(provider, Embeddings) else None,
                   provider if isinstance(provider, NativeMessages) else None,
                   provider if isinstance(provider, TokenCounting) else None,
                   provider if isinstance(provider, NativeResponses) else None,
                   provider if isinstance(provider, ChatPayload) else None,
                   provider if isinstance(provider, MessagesPayload) else None)
