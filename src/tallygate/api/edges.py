"""The HTTP edge: size caps and timeouts uvicorn's httptools mode does not enforce by itself.

`GuardedHttpTools` is uvicorn's httptools protocol with four guards added:

* request line + headers larger than `max_head_bytes` -> 431 and the connection is closed
  (httptools would buffer a header of any size);
* the request line and headers not complete within `header_timeout_s` of the connection or of the
  request's first byte -> 408 and close (idle new connections and slow-header clients);
* a body not complete within `body_timeout_s` of its headers -> 408 and close (slow bodies);
* idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`.

Timeouts are checked by one sweep a second over the open connections instead of a timer per
request, so a request pays two attribute writes and a clock read. The connection bound is
uvicorn's `limit_concurrency`; past it the request gets an OpenAI-shaped 503
(`too_many_connections`) instead of uvicorn's plain text. `raise_fd_limit` lifts the soft
file-descriptor limit to the hard one so that the bound, not the kernel, decides.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, cast

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tallygate.pipeline.wire import EDGE_ANSWER
from tallygate.settings import Settings

log = logging.getLogger("tallygate.edges")

_STATUS = {400: b"400 Bad Request", 408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}


_BUSY_BODY = (b'{"error":{"message":"the gateway is at its connection limit; retry shortly",'
              b'"type":"server_error","param":null,"code":"too_many_connections"}}')


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's 503 past `limit_concurrency`, shaped like the API's other errors."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BUSY_BODY)),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _BUSY_BODY, "more_body": False})


def _reject(transport: asyncio.BaseTransport, status: int, message: str, code: str) -> None:
    """Write a complete OpenAI-shaped error response and close the connection."""
    body = (b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":"%s"}}'
            % (message.encode(), code.encode()))
    head = (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (_STATUS[status], len(body)))
    if not transport.is_closing():
        transport.write(head + body)  # type: ignore[attr-defined]
        transport.close()


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header-size, header-time and body-time limits.

    The limits are class attributes, set by `configure(settings)` in `tallygate serve`; a worker
    process uvicorn starts (which imports this class afresh) reads them from the environment at
    its first connection."""

    max_head_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    _configured = False
    _sweeper: asyncio.Task[None] | None = None

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.max_head_bytes = settings.max_head_bytes
        cls.header_timeout_s = float(settings.header_timeout_s)
        cls.body_timeout_s = float(settings.body_timeout_s)
        cls._configured = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_since: float | None = None  # loop time the current head started arriving
        self._body_since: float | None = None  # loop time the current body started
        self._head_bytes = 0
        self._head_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_since = self.loop.time()
        cls = type(self)
        if not cls._configured:
            cls.configure(Settings.from_env())
        if cls._sweeper is None or cls._sweeper.done():
            cls._sweeper = self.loop.create_task(_sweep(cls, self.connections))

    def data_received(self, data: bytes) -> None:
        """uvicorn's `data_received`, counting the bytes of an unfinished head."""
        self._unset_keepalive_if_required()
        in_head = self._head_since is not None
        if in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._head_too_large:
                return self._too_large()
            return _reject(self.transport, 400, "invalid HTTP request", "invalid_http")
        if in_head and self._head_since is not None and self._head_bytes > self.max_head_bytes:
            self._too_large()

    def _too_large(self) -> None:
        _reject(self.transport, 431, f"request line and headers exceed {self.max_head_bytes} bytes",
                "headers_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_since is None:
            self._head_since = self.loop.time()
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        if self._head_bytes > self.max_head_bytes and self._head_size() > self.max_head_bytes:
            self._head_too_large = True  # the head ended inside one oversized read
            raise ValueError("head too large")
        self._head_since = None
        self._head_bytes = 0
        self._body_since = self.loop.time()
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) + 16

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        super()._start_asgi_task(cycle, _too_many_connections if app is service_unavailable else app)

    def on_message_complete(self) -> None:
        self._body_since = None
        super().on_message_complete()

    def expired(self, now: float) -> tuple[int, str, str] | None:
        """The guard this connection broke at loop time `now`, if any."""
        if self._head_since is not None and now - self._head_since > self.header_timeout_s:
            return 408, f"request headers not received within {self.header_timeout_s:g} s", "header_timeout"
        if self._body_since is not None and now - self._body_since > self.body_timeout_s:
            return 408, f"request body not received within {self.body_timeout_s:g} s", "body_timeout"
        return None


async def _sweep(cls: type[GuardedHttpTools], connections: set[Any]) -> None:
    """Once a second, close the connections whose head or body is late."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        now = loop.time()
        for conn in list(connections):
            if not isinstance(conn, cls):
                continue
            broken = conn.expired(now)
            if broken is None or conn.transport is None:
                continue
            conn._head_since = conn._body_since = None
            if conn.cycle is not None:  # the app records the request as answered here
                cast(dict[str, Any], conn.cycle.scope)[EDGE_ANSWER] = broken
            if conn.cycle is not None and conn.cycle.response_started:
                conn.transport.close()  # the app has answered already: just stop reading
            else:
                _reject(conn.transport, *broken)


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards `wanted` (up to the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft
