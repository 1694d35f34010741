"""Anthropic's Messages API behind OpenAI's chat-completions shape."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from tallygate.errors import UpstreamHTTPError, UpstreamProtocolError, UpstreamUnavailable
from tallygate.providers.anthropic_replies import (
    AnthropicStreamTranslator,
    anthropic_error,
    anthropic_usage,
    from_anthropic,
    stream_error,
)
from tallygate.providers.anthropic_translate import to_anthropic
from tallygate.providers.base import RawEvents
from tallygate.providers.http import (
    HttpClient,
    finish_body,
    parse_json,
    retry_after,
    sse_batches,
    transport_errors,
)
from tallygate.providers.upstream import Upstream
from tallygate.settings import ProviderConfig
from tallygate.types import Reported, Usage

API_VERSION = "2023-06-01"


class AnthropicProvider:
    """Translates each request to `/v1/messages` and each answer (or event) back."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        self.name = name
        self._up = Upstream(name, cfg, http, self._error)
        base = (cfg.base_url or "https://api.anthropic.com").rstrip("/")
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self._count_url = self._url + "/count_tokens"
        self._headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION,
                         **cfg.headers}
        if cfg.api_key:
            self._headers["x-api-key"] = cfg.api_key

    def _endpoint(self, body: dict, stream: bool) -> tuple[str, dict]:
        """Where a Messages body (`model` set) goes, and the body as sent (Vertex AI moves the
        model into the URL)."""
        return self._url, body

    async def _request_headers(self, client: dict[str, str] | None = None) -> dict[str, str]:
        """Our credentials and content type, the client's `anthropic-version` / `anthropic-beta`."""
        return {**self._headers, **{k: v for k, v in client.items() if v}} if client else self._headers

    def _count_body(self, body: dict) -> dict:
        return body

    def _error(self, status: int, raw: bytes, headers: object) -> UpstreamHTTPError:
        err = anthropic_error(status, raw)
        err.message = f"provider {self.name!r}: {err.message}"
        err.retry_after = retry_after(headers)
        return err

    def chat_payload(self, body: dict) -> dict:
        return to_anthropic(body, body["model"])

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        payload = self.chat_payload(body)
        payload.pop("stream", None)
        url, payload = self._endpoint(payload, False)
        data = await self._up.post_json(url, payload, await self._request_headers())
        try:
            return from_anthropic(data, "", int(time.time()), body["model"])
        except (KeyError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent a body we cannot read") from None

    async def chat_stream(self, body: dict, reported: Reported | None = None) -> AsyncGenerator[list[dict], None]:
        payload = self.chat_payload(body)
        payload["stream"] = True
        translator = AnthropicStreamTranslator("", int(time.time()), body["model"], reported)
        url, payload = self._endpoint(payload, True)
        async with self._up.stream(url, payload, await self._request_headers()) as resp:
            with transport_errors(self.name):
                async for events in sse_batches(resp):
                    batch: list[dict] = []
                    for name, data in events:
                        parsed = parse_json(self.name, data, "a stream event")
                        try:
                            batch.extend(translator.feed(name or parsed.get("type", ""), parsed))
                        except UpstreamHTTPError:  # an error event: the chunks before it go first
                            if batch:
                                yield batch
                            raise
                        if translator.done:
                            try:
                                yield batch
                            finally:  # the connection back to the pool (see `finish_body`)
                                await finish_body(resp)
                            return
                    if batch:
                        yield batch
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before message_stop")

    # --- native Messages API (`/v1/messages` relayed as it is)
    async def messages(self, body: dict, headers: dict[str, str]) -> tuple[dict, Usage]:
        """One Messages request as the client sent it (model set); the Message as it came."""
        url, payload = self._endpoint(body, False)
        data = await self._up.post_json(url, payload, await self._request_headers(headers))
        return data, anthropic_usage(data.get("usage"))

    async def count_tokens(self, body: dict, headers: dict[str, str]) -> dict:
        return await self._up.post_json(self._count_url, self._count_body(body),
                                        await self._request_headers(headers))

    async def messages_stream(self, body: dict, headers: dict[str, str]) -> RawEvents:
        """A streamed Messages request: batches of raw `(event, data)` SSE events, untouched.
        Ends after `message_stop`; an `error` event raises, an early end raises too."""
        url, payload = self._endpoint(body, True)
        async with self._up.stream(url, payload, await self._request_headers(headers)) as resp:
            with transport_errors(self.name):
                async for events in sse_batches(resp):
                    for i, (name, data) in enumerate(events):
                        if name == "message_stop":
                            try:
                                yield events[:i + 1]
                            finally:
                                await finish_body(resp)
                            return
                        if name == "error":
                            if i:
                                yield events[:i]
                            raise stream_error(parse_json(self.name, data, "a stream event"))
                    yield events
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before message_stop")

    async def close(self) -> None:
        return None
