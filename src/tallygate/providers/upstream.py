"""One provider's HTTP plumbing, in one place: timeouts, JSON POSTs and SSE streams.

Every HTTP provider holds an `Upstream`: it knows the provider's name (for error messages),
the shared connection pool, the two timeouts (a whole JSON answer; each stream chunk) and how
the provider's error responses become the gateway's `UpstreamError`s.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
from yarl import URL

from tallygate.providers.http import ErrorFactory, HttpClient, parse_json, sse_response, transport_errors
from tallygate.settings import ProviderConfig


class Upstream:
    """POSTs JSON to one provider and opens its streams, mapping every failure on the way."""

    def __init__(self, name: str, cfg: ProviderConfig, http: HttpClient, error: ErrorFactory) -> None:
        self.name = name
        self._http = http
        self._error = error
        self._connect_timeout_s = cfg.connect_timeout_s
        self._timeout = timedelta(seconds=cfg.timeout_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.timeout_s)

    async def post_json(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """POST `body`; the JSON object answered with 200, else the provider's error raised."""
        return await self.post_bytes(url, orjson.dumps(body), headers)

    async def post_bytes(self, url: str | URL, data: bytes, headers: dict[str, str],
                         response_headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST `data` as it is (a signed body) to `url` (a `yarl.URL(..., encoded=True)` is sent
        exactly as signed); the JSON object answered with 200 (its headers into
        `response_headers`, lower-cased, when given)."""
        client = self._http.json_client(self._connect_timeout_s)
        with transport_errors(self.name):
            request = client.post(str(url)).headers(headers).body_bytes(data).timeout(self._timeout)
            resp = await request.build().send()
            raw = memoryview(await resp.bytes())
        if resp.status != 200:
            raise self._error(resp.status, bytes(raw), resp.headers)
        if response_headers is not None:
            response_headers.update((k.lower(), v) for k, v in resp.headers.items())
        return parse_json(self.name, raw)

    def stream(self, url: str, body: dict[str, Any],
               headers: dict[str, str]) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST a streaming request: the response once it is a 200 SSE stream (see `sse_response`)."""
        return sse_response(self.name, self._http.session, url, orjson.dumps(body), headers,
                            self._stream_timeout, self._error)

    def stream_bytes(self, url: str | URL, data: bytes, headers: dict[str, str],
                     content_type: str) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST `data` as it is for a stream of `content_type` (AWS event streams)."""
        return sse_response(self.name, self._http.session, url, data, headers, self._stream_timeout,
                            self._error, content_type)
