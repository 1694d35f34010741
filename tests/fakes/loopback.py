"""A server for the fakes: on a loopback port, served from a thread of the test process with its own
event loop, recording every request it gets; and the loopback ports themselves.

A fake subclasses `LoopbackServer` and builds its routes in `_app()`, with `_record` as middleware:

    with FakeSomething() as fake:                   # serves on 127.0.0.1:<free port>
        fake.base_url                               # "http://127.0.0.1:PORT/v1"
        fake.requests[-1]["body"]                   # what it was sent (JSON, or None)
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"


def json_or_none(raw: bytes) -> Any:
    """`raw` parsed as JSON; None if it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class LoopbackServer:
    """An aiohttp app (`_app()`) on a loopback port, served from a background thread and event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    ssl_context: Any = None  # an ssl.SSLContext serves https (FakeEntra)

    def _app(self) -> web.Application:
        """The routes, with `self._record` among the middlewares."""
        raise NotImplementedError

    @property
    def root_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        sock = socket.socket()
        if os.name == "posix":  # a restart may rebind a port whose old connections are in TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready: dict[str, Any] = {"event": threading.Event(), "error": None}
        self._thread = threading.Thread(target=self._run, args=(sock, ready),
                                        name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        if not ready["event"].wait(10) or ready["error"] is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"fake upstream failed to start: {ready['error']!r}")
        return self

    def _run(self, sock: socket.socket, ready: dict[str, Any]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False,
                               shutdown_timeout=0.1, handler_cancellation=True)
        self._stopping = asyncio.Event()
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock, ssl_context=self.ssl_context).start())
        except BaseException as exc:  # report to start(), then clean up
            ready["error"] = exc
            sock.close()
        ready["event"].set()
        try:
            if ready["error"] is None:
                loop.run_until_complete(self._stopping.wait())
            if runner.server is not None:
                loop.run_until_complete(runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def stop(self) -> None:
        """Stop serving, close the port and join the thread (idempotent)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # loop closed meanwhile
                pass
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("fake upstream thread did not stop")
        self._thread = self._loop = self._stopping = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------------
    def clear(self) -> None:
        """Forget recorded requests."""
        self.requests.clear()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least n requests were recorded (e.g. from a gateway subprocess)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {len(self.requests)} upstream requests, wanted {n}")
            time.sleep(0.01)
        return self.requests

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append({"method": request.method, "path": request.path,
                              "query": dict(request.query),
                              "headers": {k.lower(): v for k, v in request.headers.items()},
                              "body": json_or_none(raw), "raw": raw})
        return await handler(request)
