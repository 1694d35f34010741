"""A background job run every few seconds on the event loop, until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


class Periodic:
    """Awaits `tick()` every `seconds`; a tick that raises is logged with `failure` and the next
    one runs as planned."""

    def __init__(self, seconds: float, tick: Callable[[], Awaitable[None]], log: logging.Logger,
                 failure: str) -> None:
        self._seconds, self._tick, self._log, self._failure = seconds, tick, log, failure
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._seconds)
            try:
                await self._tick()
            except Exception:
                self._log.exception(self._failure)
