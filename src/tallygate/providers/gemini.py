"""Google's Gemini API (`generativelanguage.googleapis.com`) behind OpenAI's chat shape.

`POST {base_url}/v1beta/models/{model}:generateContent`, and `:streamGenerateContent?alt=sse`
for streams (SSE events of `GenerateContentResponse`s, no terminator: the stream is complete
once each candidate has had a chunk with a `finishReason`; the body's end is then read briefly,
see `finish_body`), authenticated with `x-goog-api-key`. Messages and
Responses reach it through the gateway's chat translations.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from functools import partial
from urllib.parse import quote

from tallygate.errors import UpstreamProtocolError, UpstreamUnavailable
from tallygate.providers.gemini_translate import GeminiStreamTranslator, from_gemini, gemini_error, to_gemini
from tallygate.providers.http import HttpClient, finish_body, parse_json, sse_batches, transport_errors
from tallygate.providers.upstream import Upstream
from tallygate.settings import ProviderConfig
from tallygate.types import Reported, Usage


class GeminiProvider:
    """Translates each chat request to `generateContent` and each answer (or chunk) back."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        self.name = name
        self._up = Upstream(name, cfg, http, partial(gemini_error, name))
        base = (cfg.base_url or "https://generativelanguage.googleapis.com").rstrip("/")
        self._models = base + ("/models/" if base.endswith(("/v1beta", "/v1")) else "/v1beta/models/")
        self._headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            self._headers["x-goog-api-key"] = cfg.api_key

    def _url(self, model: str, method: str) -> str:
        return f"{self._models}{quote(model, safe='')}:{method}"

    async def _request_headers(self) -> dict[str, str]:
        """The headers of one request (Vertex AI adds a fresh access token)."""
        return self._headers

    def chat_payload(self, body: dict) -> dict:
        return to_gemini(body)

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        payload, headers = self.chat_payload(body), await self._request_headers()
        data = await self._up.post_json(self._url(body["model"], "generateContent"), payload, headers)
        try:
            return from_gemini(data, "", int(time.time()), body["model"])
        except (KeyError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"provider {self.name!r} sent a body we cannot read") from None

    async def chat_stream(self, body: dict, reported: Reported | None = None) -> AsyncGenerator[list[dict], None]:
        url = self._url(body["model"], "streamGenerateContent") + "?alt=sse"
        payload, headers = self.chat_payload(body), await self._request_headers()
        candidates = payload.get("generationConfig", {}).get("candidateCount", 1)
        translator = GeminiStreamTranslator("", int(time.time()), body["model"], candidates, reported)
        async with self._up.stream(url, payload, headers) as resp:
            with transport_errors(self.name):
                async for events in sse_batches(resp):
                    batch: list[dict] = []
                    for _name, data in events:
                        chunk = parse_json(self.name, data, "a stream event")
                        if isinstance(chunk.get("error"), dict):  # the chunks before it go first
                            if batch:
                                yield batch
                            raise gemini_error(self.name, int(chunk["error"].get("code") or 500), data)
                        batch.extend(translator.feed(chunk))
                    if translator.complete:  # every candidate finished: the body's end is all that is left
                        try:
                            yield [*batch, translator.usage_chunk()]
                        finally:  # the connection back to the pool (see `finish_body`)
                            await finish_body(resp)
                        return
                    if batch:
                        yield batch
            if not translator.finished:  # after its 200
                raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before a finishReason")
        yield [translator.usage_chunk()]

    async def close(self) -> None:
        return None
