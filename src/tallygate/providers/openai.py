"""Any OpenAI-compatible server: OpenAI itself, vLLM, Ollama, llama.cpp, LM Studio ..."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial

import orjson

from tallygate.errors import UpstreamHTTPError, UpstreamUnavailable
from tallygate.providers.base import RawEvents
from tallygate.providers.http import (
    HttpClient,
    finish_body,
    parse_json,
    retry_after,
    sse_batches,
    sse_data,
    transport_errors,
)
from tallygate.providers.responses_translate import responses_usage
from tallygate.providers.upstream import Upstream
from tallygate.settings import ProviderConfig
from tallygate.types import Reported, Usage

_MODEL_MISSING = ("model_not_found", "DeploymentNotFound")
_RESPONSE_END = frozenset({"response.completed", "response.incomplete", "response.failed"})


def openai_error(provider: str, status: int, body: bytes, headers: object = None) -> UpstreamHTTPError:
    """An OpenAI-style error response as an `UpstreamHTTPError` (its message only, if any). A 404
    coded `model_not_found` (OpenAI) or `DeploymentNotFound` (Azure) is the target lacking the model."""
    detail = code = None
    try:
        err = orjson.loads(body).get("error")
        detail = err.get("message") if isinstance(err, dict) else err
        code = err.get("code") if isinstance(err, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return UpstreamHTTPError(status, f"provider {provider!r} returned HTTP {status}",
                             detail=detail if isinstance(detail, str) else None,
                             retry_after=retry_after(headers), model_missing=code in _MODEL_MISSING)


def _responses_error(provider: str, data: bytes) -> UpstreamHTTPError:
    """A Responses stream's `error` event (`{"type": "error", "code", "message"}`)."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        event = {}
    message = event.get("message") if isinstance(event, dict) else None
    status = 429 if isinstance(event, dict) and "rate_limit" in str(event.get("code")) else 500
    return UpstreamHTTPError(status, f"provider {provider!r} stream failed",
                             detail=message if isinstance(message, str) else None)


class OpenAIProvider:
    """Relays chat completions and embeddings to `<base_url>/chat/completions` etc."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient) -> None:
        self.name = name
        self._up = Upstream(name, cfg, http, partial(openai_error, name))
        self._base = (cfg.base_url or "").rstrip("/")
        self._classic_cap = cfg.preset is not None  # a named service: `max_tokens` is the cap it reads
        self._headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"

    async def _request_headers(self) -> dict[str, str]:
        """The headers of one request (Azure's Entra credentials add a fresh token)."""
        return self._headers

    def _url(self, operation: str, body: dict) -> str:
        """Where `operation` (`chat/completions`, `embeddings`, `responses`) is POSTed."""
        return f"{self._base}/{operation}"

    async def _post_json(self, url: str, body: dict) -> tuple[dict, Usage]:
        data = await self._up.post_json(url, body, await self._request_headers())
        return data, Usage.from_openai(data.get("usage"))

    def _capped(self, body: dict) -> dict:
        """`body` as a named OpenAI-compatible service is sent it: with `max_tokens` where it
        carries only `max_completion_tokens`. Those services read `max_tokens` (DeepSeek, Mistral,
        Together, Ollama ... know no other cap and ignore `max_completion_tokens`, answering up
        to their own default: DeepSeek's reasoner 32K tokens), and every one of them takes it; the
        cap a limited request reserved for (`pipeline/output_cap.py`) must be the one they apply.
        OpenAI's own API is sent the body as it is (its reasoning models refuse `max_tokens`)."""
        cap = body.get("max_completion_tokens")
        if not self._classic_cap or cap is None or body.get("max_tokens") is not None:
            return body
        return {**body, "max_tokens": cap}

    async def chat(self, body: dict) -> tuple[dict, Usage]:
        body = self._capped(body)
        return await self._post_json(self._url("chat/completions", body), body)

    async def embed(self, body: dict) -> tuple[dict, Usage]:
        return await self._post_json(self._url("embeddings", body), body)

    async def chat_stream(self, body: dict, reported: Reported | None = None) -> AsyncGenerator[list[dict], None]:
        async for batch in self.chat_stream_raw(body):  # its usage comes last: nothing to report early
            yield [parse_json(self.name, data, "a stream event") for data in batch if data != b"[DONE]"]

    async def chat_stream_raw(self, body: dict) -> AsyncGenerator[list[bytes], None]:
        """A streamed chat completion as batches of each chunk's JSON bytes, as they came; the
        last batch ends with `b"[DONE]"`. An in-band error event raises, once the chunks that
        came before it in the same read have been yielded (relayed and counted)."""
        body = self._capped(body)
        # Always ask for usage: metering needs it whether or not the client wants to see it.
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        error = partial(openai_error, self.name)
        headers = await self._request_headers()
        async with self._up.stream(self._url("chat/completions", body), body, headers) as resp:
            with transport_errors(self.name):
                async for batch in sse_data(resp):
                    done = b"[DONE]" in batch
                    if done:
                        batch = batch[:batch.index(b"[DONE]") + 1]
                    # A chunk starts with its id; anything else may be an in-band error event (looked
                    # for only in a batch that says `"error"` somewhere: one scan, not a test a chunk).
                    if b'"error"' in b"".join(batch):
                        for data in [d for d in batch if not d.startswith(b'{"id"')]:
                            if data != b"[DONE]" and b'"error"' in data:
                                chunk = parse_json(self.name, data, "a stream event")
                                if "error" in chunk and "choices" not in chunk:
                                    if at := batch.index(data):
                                        yield batch[:at]
                                    raise error(500, data, None)
                    if done:
                        try:
                            yield batch
                        finally:  # the relay closes this generator after the last batch
                            await finish_body(resp)
                        return
                    yield batch
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before [DONE]")

    # --- native Responses API (`/v1/responses` relayed as it is)
    async def responses(self, body: dict) -> tuple[dict, Usage]:
        data, _ = await self._post_json(self._url("responses", body), body)
        return data, responses_usage(data.get("usage"))

    async def responses_stream(self, body: dict) -> RawEvents:
        """A streamed Response: batches of raw `(event, data)` SSE events, untouched. Ends after
        `response.completed` / `incomplete` / `failed`; an `error` event raises."""
        headers = await self._request_headers()
        async with self._up.stream(self._url("responses", body), body, headers) as resp:
            with transport_errors(self.name):
                async for events in sse_batches(resp):
                    for i, (name, data) in enumerate(events):
                        if name in _RESPONSE_END:
                            try:
                                yield events[:i + 1]
                            finally:  # the connection back to the pool (see `finish_body`)
                                await finish_body(resp)
                            return
                        if name == "error":
                            if i:
                                yield events[:i]
                            raise _responses_error(self.name, data)
                    yield events
            raise UpstreamUnavailable(f"provider {self.name!r} ended the stream before response.completed")

    async def close(self) -> None:
        return None
