"""What every HTTP provider shares: one aiohttp session, error mapping, SSE line reading.

`transport_errors` is the single place where aiohttp's exceptions become the gateway's
`UpstreamError`s; nothing from the provider's body or our credentials reaches the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp

from tallygate.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable


@contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Map transport failures talking to `provider` onto the gateway's error tree."""
    try:
        yield
    except UpstreamError:
        raise
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"provider {provider!r} did not answer in time") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnavailable(f"could not connect to provider {provider!r}") from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
        raise UpstreamUnavailable(f"provider {provider!r} closed the connection mid-response") from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"provider {provider!r} failed: {type(exc).__name__}") from None


def retry_after(headers: object) -> float | None:
    """Seconds from a `retry-after` header, if it holds a number."""
    value = headers.get("retry-after") if hasattr(headers, "get") else None  # type: ignore[union-attr]
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class HttpClient:
    """One lazily created connection pool shared by all providers of a gateway process."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",), auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def sse_data(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, bytes]]:
    """Yield `(event, data)` for each SSE event of a response (single-line `data:` fields)."""
    event: str | None = None
    async for line in resp.content:
        if line.startswith(b"data:"):
            yield event, line[5:].strip()
            event = None
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        # blank lines, comments (":") and other fields carry nothing we need
