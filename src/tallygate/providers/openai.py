"""Any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, llama.cpp, LM Studio ..."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import aiohttp
import orjson

from tallygate.errors import UpstreamHTTPError, UpstreamUnavailable
from tallygate.providers.http import (
    HttpClient,
    parse_json,
    retry_after,
    sse_batches,
    sse_response,
    transport_errors,
)
from tallygate.settings import ProviderConfig
from tallygate.types import Usage


def openai_error(provider: str, status: int, body: bytes, headers: object = None) -> UpstreamHTTPError:
    """An OpenAI-style error response as an `UpstreamHTTPError` (its message only, if any)."""
    detail = None
    try:
        err = orjson.loads(body).get("error")
        detail = err.get("message") if isinstance(err, dict) else err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return UpstreamHTTPError(status, f"provider {provider!r} returned HTTP {status}",
                             detail=detail if isinstance(detail, str) else None,
                             retry_after=retry_after(headers))


class OpenAIProvider:
    """Relays chat completions and embeddings to `<base_url>/chat/completions` etc."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        self.name = name
        self._http = http
        base = (cfg.base_url or "").rstrip("/")
        self._chat_url = base + "/chat/completions"
        self._embed_url = base + "/embeddings"
        self._headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s, sock_connect=cfg.connect_timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.timeout_s)

    async def _post_json(self, url: str, body: dict) -> tuple[dict, Usage]:
        with transport_errors(self.name):
            async with self._http.session.post(url, data=orjson.dumps(body), headers=self._headers,
                                               timeout=self._timeout) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise openai_error(self.name, resp.status, raw, resp.headers)
        data = parse_json(self.name, raw)
        return data, Usage.from_openai(data.get("usage"))

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        return await self._post_json(self._chat_url, body)

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        return await self._post_json(self._embed_url, body)

    async def chat_stream(self, body: dict) -> AsyncIterator[list[dict]]:
        # Always ask for usage: metering needs it whether or not the client wants to see it.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        error = partial(openai_error, self.name)
        async with sse_response(self.name, self._http.session, self._chat_url, orjson.dumps(body),
                                self._headers, self._stream_timeout, error) as resp:
            with transport_errors(self.name):
                async for events in sse_batches(resp):
                    batch: list[dict] = []
                    for _name, data in events:
                        if data == b"[DONE]":
                            yield batch
                            return
                        chunk = parse_json(self.name, data, "a stream event")
                        if "error" in chunk and "choices" not in chunk:
                            raise error(500, data, None)
                        batch.append(chunk)
                    yield batch
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before [DONE]")

    async def close(self) -> None:
        return None
