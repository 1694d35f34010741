"""The HTTP edge: size caps and timeouts uvicorn's httptools mode does not enforce by itself.

`GuardedHttpTools` is uvicorn's httptools protocol with four guards added:

* request line + headers larger than `max_head_bytes` -> 431 and the connection is closed
  (httptools would buffer a header of any size);
* the request line and headers not complete within `header_timeout_s` of the connection or of the
  request's first byte -> 408 and close (idle new connections and slow-header clients);
* a body not complete within `body_timeout_s` of its headers -> 408 and close (slow bodies);
* idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`.

and one of fairness: a client address (an IPv6 address by its /64) may hold at most
`max_per_address` open connections; one more is answered 429 `too_many_connections_from_address`
and closed at once, so one address holding thousands of sockets cannot take the global bound
from everyone else. Addresses in `trusted_proxies` (a load balancer in front, which carries many
clients' connections) are not capped; the app then takes the client from their X-Forwarded-For
(uvicorn's proxy-headers middleware, on only when trusted proxies are set).

Timeouts are checked by one sweep a second over the open connections instead of a timer per
request, so a request pays two attribute writes and a clock read. The connection bound is
uvicorn's `limit_concurrency`; past it the request gets an OpenAI-shaped 503
(`too_many_connections`) instead of uvicorn's plain text. `raise_fd_limit` lifts the soft
file-descriptor limit to the hard one so that the bound, not the kernel, decides.

This class subclasses uvicorn's `HttpToolsProtocol` and copies its `data_received`; uvicorn is
pinned to the minor versions this was checked against (pyproject.toml), and
tests/api/test_edges_uvicorn_pin.py fails when uvicorn changes any method relied on here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from typing import Any, cast

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tallygate.api.coalesce import CoalescingTransport
from tallygate.core.addresses import client_bucket
from tallygate.pipeline.messages import anthropic_type
from tallygate.pipeline.wire import EDGE_ANSWER, REQUEST_ID
from tallygate.settings import Settings

log = logging.getLogger("tallygate.edges")

_STATUS = {400: b"400 Bad Request", 408: b"408 Request Timeout", 429: b"429 Too Many Requests",
           431: b"431 Request Header Fields Too Large"}
_TYPE = {429: b"rate_limit_error"}
_EXTRA = {429: b"retry-after: 1\r\n"}
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_BUSY_BODY = (b'{"error":{"message":"the gateway is at its connection limit; retry shortly",'
              b'"type":"server_error","param":null,"code":"too_many_connections"}}')


_BUSY_ANTHROPIC = (b'{"type":"error","error":{"type":"overloaded_error","message":"the gateway is at its '
                   b'connection limit; retry shortly","code":"too_many_connections"}}')


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's 503 past `limit_concurrency`, shaped like the API's other errors (Anthropic's on
    `/v1/messages`)."""
    path = scope.get("path", "")
    body = _BUSY_ANTHROPIC if path == "/v1/messages" or path.startswith("/v1/messages/") else _BUSY_BODY
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _reject(transport: asyncio.WriteTransport, status: int, message: str, code: str, path: str = "",
            request_id: str | None = None) -> None:
    """Write a complete error response and close the connection: OpenAI-shaped, or Anthropic's on
    `/v1/messages` (`path`, when the request line was read), naming the request's ledger record
    in `x-request-id` when it has one."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        body = (b'{"type":"error","error":{"type":"%s","message":"%s","code":"%s"}}'
                % (anthropic_type(status).encode(), message.encode(), code.encode()))
    else:
        body = (b'{"error":{"message":"%s","type":"%s","param":null,"code":"%s"}}'
                % (message.encode(), _TYPE.get(status, b"invalid_request_error"), code.encode()))
    named = b"" if request_id is None else b"x-request-id: %s\r\n" % request_id.encode()
    head = (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s"
            b"connection: close\r\n\r\n" % (_STATUS[status], len(body), _EXTRA.get(status, b""), named))
    if not transport.is_closing():
        transport.write(head + body)
        transport.close()


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with header-size, header-time and body-time limits.

    The limits are class attributes, set by `configure(settings)` in `tallygate serve`; a worker
    process uvicorn starts (which imports this class afresh) reads them from the environment at
    its first connection."""

    max_head_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    max_per_address = 256
    trusted_proxies: tuple[Network, ...] = ()
    _configured = False
    _sweeper: asyncio.Task[None] | None = None
    _open: dict[str, int] = {}  # client address -> connections open in this process

    @classmethod
    def configure(cls, settings: Settings) -> None:
        cls.max_head_bytes = settings.max_head_bytes
        cls.header_timeout_s = float(settings.header_timeout_s)
        cls.body_timeout_s = float(settings.body_timeout_s)
        cls.max_per_address = settings.max_connections_per_address
        cls.trusted_proxies = tuple(ipaddress.ip_network(n) for n in settings.trusted_proxies)
        cls._configured = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_since: float | None = None  # loop time the current head started arriving
        self._body_since: float | None = None  # loop time the current body started
        self._head_bytes = 0
        self._head_too_large = False
        self._counted: str | None = None  # the client address this connection counts against

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvicorn writes a response's head and body apart: one send for both (api/coalesce.py)
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._head_since = self.loop.time()
        cls = type(self)
        if not cls._configured:
            cls.configure(Settings.from_env())
        if cls._sweeper is None or cls._sweeper.done():
            cls._sweeper = self.loop.create_task(_sweep(cls, self.connections))
        if cls.max_per_address:
            self._count_address(transport)

    def _count_address(self, transport: asyncio.Transport) -> None:
        """Count this connection against its client address; refuse it past the address's cap."""
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or self._trusted(peer[0]):
            return  # a Unix socket, or a proxy carrying many clients
        address = client_bucket(peer[0])
        held = self._open.get(address, 0) + 1
        self._open[address] = held
        self._counted = address
        if held > self.max_per_address:
            self._head_since = None
            _reject(transport, 429, f"this address has {self.max_per_address} connections open already; "
                                    "close some or retry shortly", "too_many_connections_from_address")

    def _trusted(self, host: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted is not None:
            left = self._open.get(self._counted, 1) - 1
            if left > 0:
                self._open[self._counted] = left
            else:
                self._open.pop(self._counted, None)
            self._counted = None
        super().connection_lost(exc)

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
            return _reject(self.transport, 400, "invalid HTTP request", "invalid_http", self.request_path())
        if in_head and self._head_since is not None and self._head_bytes > self.max_head_bytes:
            self._too_large()

    def _too_large(self) -> None:
        _reject(self.transport, 431, f"request line and headers exceed {self.max_head_bytes} bytes",
                "headers_too_large", self.request_path())

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

    def request_path(self) -> str:
        """The path of the request line read so far ('' before it)."""
        url = getattr(self, "url", b"")
        return url.partition(b"?")[0].decode("latin-1") if isinstance(url, bytes) else ""

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
            scope = cast(dict[str, Any] | None, conn.cycle.scope if conn.cycle is not None else None)
            if scope is not None:  # the app records the request as answered here
                scope[EDGE_ANSWER] = broken
            if conn.cycle is not None and conn.cycle.response_started:
                conn.transport.close()  # the app has answered already: just stop reading
            elif scope is not None:
                _reject(conn.transport, *broken, scope.get("path", ""), scope.get(REQUEST_ID))
            else:  # headers late: the request line may have been read
                _reject(conn.transport, *broken, conn.request_path())


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
