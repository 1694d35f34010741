"""Webhook delivery: signed POSTs, retried with backoff, never in a request's way.

`deliver(events)` only queues; a service task sends each event to every webhook whose `kinds`
include it, at most `CONCURRENCY` at once. A delivery succeeds on any 2xx; anything else (an
error status, a refused connection, a timeout) is retried after 1, 2, 4 ... seconds (capped at
`MAX_BACKOFF_S`) until the webhook's `retry_for_s` (default one hour) has passed since the
first try, then dropped with a log line. Each try is signed afresh (`Tallygate-Signature`, a new
timestamp). At most `MAX_PENDING` deliveries wait; past that the oldest are dropped and logged.
Pending retries live in this process's memory: a restart drops them (the alerts themselves are
stored and listed by `GET /v1/alerts`).

Redirects are not followed, and a hook reaches only public addresses unless it sets
`allow_private` (see `webhook_guard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tallygate.observe.events import SIGNATURE_HEADER, body_for, sign
from tallygate.observe.webhook_guard import PrivateAddressRefused, PublicOnlyResolver, check_at_start
from tallygate.settings import WebhookConfig

log = logging.getLogger("tallygate.webhooks")


def where(hook: WebhookConfig) -> str:
    """A webhook for log lines: scheme and host only (Slack-style URLs carry their secret in the path)."""
    parts = urlsplit(hook.url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


CONCURRENCY = 8
MAX_BACKOFF_S = 60.0
MAX_PENDING = 10_000


class WebhookSender:
    """A service: queues events and delivers them to the configured webhooks."""

    def __init__(self, webhooks: Sequence[WebhookConfig], clock: Callable[[], float] = time.time,
                 first_backoff_s: float = 1.0) -> None:
        self._hooks = list(webhooks)
        self._clock = clock
        self._first_backoff = first_backoff_s
        self._queue: deque[tuple[WebhookConfig, Mapping[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._public: aiohttp.ClientSession | None = None  # connects to checked public addresses only
        self._private: aiohttp.ClientSession | None = None  # for hooks with allow_private
        self.delivered = 0
        self.dropped = 0

    def deliver(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Queue `events` for every webhook that wants their kind. Never blocks."""
        for ev in events:
            for hook in self._hooks:
                if ev["kind"] in hook.kinds:
                    if len(self._queue) >= MAX_PENDING:
                        old_hook, old = self._queue.popleft()
                        self.dropped += 1
                        log.error("webhook queue full: dropped alert %s for %s", old["id"], where(old_hook))
                    self._queue.append((hook, ev))
        if self._queue:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._tasks)

    async def start(self) -> None:
        """Check where the hooks resolve (raises `ConfigError` for a private one), then deliver."""
        if self._hooks:
            await check_at_start(self._hooks)
            headers = {"User-Agent": "tallygate-webhooks"}
            self._public = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(resolver=PublicOnlyResolver()))
            self._private = aiohttp.ClientSession(headers=headers)
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace_s: float = 2.0) -> None:
        """Give deliveries in progress `grace_s` to finish, then drop the rest (logged)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.pending and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.pending:
            log.warning("stopping with %d webhook deliveries not done", self.pending)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in (self._public, self._private):
            if session is not None:
                await session.close()

    async def _run(self) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                hook, ev = self._queue.popleft()
                await limit.acquire()
                task = asyncio.get_running_loop().create_task(self._send(hook, ev))
                self._tasks.add(task)
                task.add_done_callback(partial(self._done, limit))

    def _done(self, limit: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        limit.release()

    async def _send(self, hook: WebhookConfig, ev: Mapping[str, Any]) -> None:
        body = body_for(ev, hook.format)
        first, backoff = self._clock(), self._first_backoff
        while True:
            why = await self._try(hook, body, ev["id"])
            if why is None:
                self.delivered += 1
                return
            if self._clock() - first + backoff > hook.retry_for_s:
                log.error("webhook %s: giving up on alert %s after %.0fs (%s)", where(hook), ev["id"],
                          self._clock() - first, why)
                self.dropped += 1
                return
            log.warning("webhook %s: alert %s not delivered (%s); retrying in %.0fs", where(hook), ev["id"], why,
                        backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _try(self, hook: WebhookConfig, body: bytes, alert_id: str) -> str | None:
        """One signed POST, redirects not followed; None on success, else why it failed."""
        session = self._private if hook.allow_private else self._public
        assert session is not None
        headers = {"Content-Type": "application/json", "Tallygate-Event-Id": alert_id,
                   SIGNATURE_HEADER: sign(hook.secret, body, int(self._clock()))}
        try:
            async with session.post(hook.url, data=body, headers=headers, allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as resp:
                await resp.read()
                if 300 <= resp.status < 400:
                    return f"HTTP {resp.status}: redirects are not followed"
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PrivateAddressRefused):
                return f"refused: {exc.os_error}"
            return type(exc).__name__
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return type(exc).__name__
