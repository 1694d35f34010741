"""What every HTTP provider shares: the connection pools, error mapping, SSE line reading.

A JSON answer is fetched with pyreqwest (Rust's reqwest and hyper): measured at about a third
less gateway CPU per call than aiohttp on the 1-client benchmark (docs/performance.md). Streams
stay on one aiohttp session, read chunk by chunk as they arrive.

`transport_errors` is the single place where either client's exceptions become the gateway's
`UpstreamError`s; nothing from the provider's body or our credentials reaches the message.
Redirects are never followed: a provider's 3xx is an upstream error (following it would re-send
the prompt, and headers such as Anthropic's `x-api-key`, to wherever the `Location` points).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from types import TracebackType
from typing import Generic, TypeVar, cast

import aiohttp
import orjson
import pyreqwest.exceptions as rq
from pyreqwest.client import Client, ClientBuilder
from yarl import URL

from tallygate import __version__
from tallygate.errors import UpstreamCutOff, UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

ErrorFactory = Callable[[int, bytes, object], UpstreamError]
USER_AGENT = f"tallygate/{__version__}"  # sent on every provider call, JSON or stream
T = TypeVar("T")


class transport_errors:  # noqa: N801 (used as `with transport_errors(name):`, like a function)
    """Map transport failures talking to `provider` onto the gateway's error tree. A class, not a
    `@contextmanager` generator: entered several times per stream, and a third of the cost."""

    __slots__ = ("_provider",)

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None or isinstance(exc, UpstreamError):
            return
        provider = self._provider
        if isinstance(exc, aiohttp.ConnectionTimeoutError):  # nothing sent (pyreqwest names every timeout so)
            raise UpstreamTimeout(f"could not connect to provider {provider!r} in time", sent=False) from None
        if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):  # pyreqwest's timeouts are TimeoutErrors
            raise UpstreamTimeout(f"provider {provider!r} did not answer in time") from None
        if isinstance(exc, (aiohttp.ClientConnectorError, rq.ConnectError)):
            raise UpstreamUnavailable(f"could not connect to provider {provider!r}") from None
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                            rq.NetworkError, rq.BodyDecodeError)):
            if isinstance(exc, rq.BodyDecodeError):  # a JSON answer's head came, its body was cut: billed
                raise UpstreamCutOff(f"provider {provider!r} closed the connection mid-response") from None
            raise UpstreamUnavailable(f"provider {provider!r} closed the connection mid-response") from None
        if isinstance(exc, (aiohttp.ClientError, rq.RequestError)):
            raise UpstreamUnavailable(f"provider {provider!r} failed: {type(exc).__name__}") from None


MAX_RETRY_AFTER_S = 3600.0  # a provider asking for longer is told to the client as an hour


def retry_after(headers: object) -> float | None:
    """Seconds from a `retry-after` header, if it holds a finite number (`inf`, `nan`, dates and
    junk are ignored), between 0 and `MAX_RETRY_AFTER_S`."""
    value = headers.get("retry-after") if hasattr(headers, "get") else None  # type: ignore[union-attr]
    if not value or len(value) > 32:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def parse_json(provider: str, raw: bytes | memoryview, what: str = "a body") -> dict:
    """A JSON object from the provider, or `UpstreamProtocolError`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"provider {provider!r} sent {what} that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"provider {provider!r} sent {what} that is not a JSON object")
    return data


class sse_response(AbstractAsyncContextManager[aiohttp.ClientResponse]):  # noqa: N801 (used as a function)
    """POST a streaming request; `async with` gives the response once it is known to be a 200 SSE
    stream (or another `content_type`, such as AWS's `vnd.amazon.eventstream`).

    An error status becomes `error(status, body, headers)`; the connection is always released.
    The connection closing after the 200 (before or after the stream's first event) is
    `UpstreamCutOff`: the provider had begun the answer and bills it, so the attempt is charged
    its worst case and a limited request is not tried on another target (`routing/executor.py`).
    A class, not an `@asynccontextmanager` generator: entered once per stream attempt, and the
    generator's wrapping costs five calls more than `__aenter__` and `__aexit__`.
    """

    __slots__ = ("_provider", "_session", "_url", "_data", "_headers", "_timeout", "_error", "_content_type",
                 "_resp")

    def __init__(self, provider: str, session: aiohttp.ClientSession, url: str | URL, data: bytes,
                 headers: dict[str, str], timeout: aiohttp.ClientTimeout, error: ErrorFactory,
                 content_type: str = "event-stream") -> None:
        self._provider, self._session, self._url, self._data = provider, session, url, data
        self._headers, self._timeout, self._error, self._content_type = headers, timeout, error, content_type
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        provider = self._provider
        with transport_errors(provider):
            resp = await self._session.post(self._url, data=self._data, headers=self._headers,
                                            timeout=self._timeout, allow_redirects=False)
        try:
            if resp.status != 200:
                with transport_errors(provider):
                    raw = await resp.read()
                raise self._error(resp.status, raw, resp.headers)
            if self._content_type not in resp.headers.get("content-type", ""):
                raise UpstreamProtocolError(
                    f"provider {provider!r} answered a stream request without {self._content_type}")
        except BaseException:
            resp.release()
            raise
        self._resp = resp
        return resp

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._resp is not None:
            self._resp.release()
        # the connection closed after the 200: the answer was begun, billed
        if isinstance(exc, UpstreamUnavailable) and not isinstance(exc, UpstreamCutOff):
            raise UpstreamCutOff(exc.message) from None


# How long, and how many bytes, a finished stream's rest of body is read for (see `finish_body`).
FINISH_BODY_S = 0.05
FINISH_BODY_MAX = 65536


async def finish_body(resp: aiohttp.ClientResponse) -> None:
    """After a stream's last event: read what is left of the body (the chunked encoding's end,
    normally already on its way) for a moment, so that the connection goes back to the pool.

    aiohttp closes a connection released with unread body; the provider's last event and the
    end of its body often arrive in separate reads, and at 8 concurrent streams (bench mock)
    about one stream in eight then opened a new connection. Bounded in time and bytes: a
    provider that goes on sending after its last event only gets its connection closed.
    """
    content = resp.content
    if content.is_eof():
        return
    read = 0
    try:
        async with asyncio.timeout(FINISH_BODY_S):
            while read < FINISH_BODY_MAX and not content.is_eof():
                data = await content.readany()
                if not data:
                    break
                read += len(data)
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the connection is closed on release, as it was


class HttpClient:
    """The connection pools shared by all providers of a gateway process, created on first use:
    one aiohttp session for streams, one pyreqwest client per connect timeout for JSON calls."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._json: dict[float, Client] = {}

    def json_client(self, connect_timeout_s: float) -> Client:
        """The pyreqwest client for JSON calls: no redirects followed, no proxy from the
        environment (as aiohttp's session), its own pool of kept-alive connections."""
        client = self._json.get(connect_timeout_s)
        if client is None:
            client = (ClientBuilder().follow_redirects(False).no_proxy().user_agent(USER_AGENT)
                      .connect_timeout(timedelta(seconds=connect_timeout_s)).build())
            self._json[connect_timeout_s] = client
        return client

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            # No cookie jar: a provider's Set-Cookie must not ride along on other callers'
            # requests (and the jar's bookkeeping cost ~4 % of the CPU of opening a stream). Our own
            # User-Agent in the session's headers: aiohttp then adds none of its own without copying
            # every request's headers (as `skip_auto_headers` does: ~2 % of a stream's loop time).
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}, auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def start(self) -> None:
        """Nothing to do: the pool opens on first use."""

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        clients, self._json = list(self._json.values()), {}
        for client in clients:
            await client.close()


def _event(raw: bytes) -> tuple[str | None, bytes] | None:
    """One SSE event block -> (event name, data); None for a block with no data (comments...)."""
    if raw.startswith(b"data: ") and b"\n" not in raw:  # the usual one-line event, fast
        return None, raw[6:]
    name: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return (name, b"\n".join(data)) if data else None


def sse_batches(resp: aiohttp.ClientResponse) -> AsyncIterator[list[tuple[str | None, bytes]]]:
    """The `(event, data)` pairs of an SSE response, in batches of whatever has arrived.

    Relaying a batch in one write instead of one write per event saves a system call per token
    when the provider is faster than the client; a slow provider still yields one event at a time.
    """
    return _SSE(resp, _events)


def sse_data(resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The data of each event of an SSE response whose events have no names that matter (OpenAI's
    chat chunks), batched as `sse_batches`: a one-line event costs a slice, not a call and a tuple."""
    return _SSE(resp, _datas)


def _events(body: bytes) -> list[tuple[str | None, bytes]]:
    return [ev for ev in map(_event, body.split(b"\n\n")) if ev is not None]


def _datas(body: bytes) -> list[bytes]:
    if body.startswith(b"data: "):  # every event one `data: ` line (the usual case): one split
        datas = body[6:].split(b"\n\ndata: ")
        if b"\n" not in b"".join(datas):  # (a memchr: half the cost of counting newlines and events)
            return datas
    out = [raw[6:] if raw.startswith(b"data: ") and b"\n" not in raw else _data(raw) for raw in body.split(b"\n\n")]
    if None in out:  # a block without data (a comment, a keep-alive)
        return [data for data in out if data is not None]
    return cast(list[bytes], out)


def _data(raw: bytes) -> bytes | None:
    event = _event(raw)
    return None if event is None else event[1]


class _SSE(Generic[T]):
    """The events of an SSE response as `parse` makes them from their blocks (the bytes up to
    the last blank line, which it splits at each blank line), batch by batch. An async iterator
    calling `readany()` itself, not an async generator over `iter_any()`: no generator for the
    event loop to track (a weak set's add and remove per stream) and one call less per read."""

    __slots__ = ("_content", "_parse", "_buf")

    def __init__(self, resp: aiohttp.ClientResponse, parse: Callable[[bytes], list[T]]) -> None:
        self._content, self._parse = resp.content, parse
        self._buf: bytes | None = b""  # None: the body ended

    def __aiter__(self) -> _SSE[T]:
        return self

    async def __anext__(self) -> list[T]:
        parse = self._parse
        while (buf := self._buf) is not None:
            data = await self._content.readany()
            if not data:  # the end of the body: what is left after the last blank line
                self._buf = None
                if buf.strip() and (last := parse(buf.strip(b"\r\n"))):
                    return last
                break
            buf += data
            if b"\r" in buf:  # CR and CRLF line endings are legal SSE; keep a trailing CR for later
                head, tail = (buf[:-1], b"\r") if buf.endswith(b"\r") else (buf, b"")
                buf = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
            end = buf.rfind(b"\n\n")  # (in a run of 3+ newlines, the extra ones are empty lines)
            if end < 0:
                self._buf = buf
                continue
            body, self._buf = buf[:end], buf[end + 2:]
            batch = parse(body)
            if batch:
                return batch
        raise StopAsyncIteration
