"""Any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, llama.cpp, LM Studio ..."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from tallygate.errors import UpstreamHTTPError, UpstreamProtocolError, UpstreamUnavailable
from tallygate.providers.http import HttpClient, retry_after, sse_batches, transport_errors
from tallygate.settings import ProviderConfig
from tallygate.types import Usage


def openai_error(provider: str, status: int, body: bytes, headers: object = None) -> UpstreamHTTPError:
    """An OpenAI-style error response as an `UpstreamHTTPError` (message only, trimmed)."""
    message = f"provider {provider!r} returned HTTP {status}"
    try:
        err = orjson.loads(body).get("error")
        detail = err.get("message") if isinstance(err, dict) else err
        if isinstance(detail, str) and detail:
            message = f"{message}: {detail[:300]}"
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return UpstreamHTTPError(status, message, retry_after=retry_after(headers))


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
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"provider {self.name!r} sent a body that is not JSON") from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"provider {self.name!r} sent an unexpected JSON body")
        return data, Usage.from_openai(data.get("usage"))

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        return await self._post_json(self._chat_url, body)

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        return await self._post_json(self._embed_url, body)

    async def chat_stream(self, body: dict) -> AsyncIterator[list[dict]]:
        # Always ask for usage: metering needs it whether or not the client wants to see it.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        with transport_errors(self.name):
            resp = await self._http.session.post(self._chat_url, data=orjson.dumps(body),
                                                 headers=self._headers, timeout=self._stream_timeout)
        try:
            if resp.status != 200:
                with transport_errors(self.name):
                    raw = await resp.read()
                raise openai_error(self.name, resp.status, raw, resp.headers)
            if "event-stream" not in resp.headers.get("content-type", ""):
                raise UpstreamProtocolError(f"provider {self.name!r} answered a stream request without SSE")
            with transport_errors(self.name):
                async for events in sse_batches(resp):
                    batch = []
                    for _name, data in events:
                        if data == b"[DONE]":
                            yield batch
                            return
                        batch.append(self._chunk(data))
                    yield batch
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before [DONE]")
        finally:
            resp.release()

    def _chunk(self, data: bytes) -> dict:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"provider {self.name!r} sent a stream event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(f"provider {self.name!r} sent an unexpected stream event")
        if "error" in chunk and "choices" not in chunk:
            raise openai_error(self.name, 500, data)
        return chunk

    async def close(self) -> None:
        return None
