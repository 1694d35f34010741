"""Calls of one Lua script from any number of coroutines, sent on one connection.

`ScriptBatch` queues each call; one sender task at a time sends every call waiting in one
pipelined round trip (EVALSHA each, reloading the script for the calls Redis no longer knows),
then the calls that queued meanwhile in the next. Concurrency therefore never needs more
connections than one (redis-py's pool refuses past its `max_connections`, 100 by default, which
the gateway used to take for "Redis unreachable"), and a burst costs one write and one read per
round trip instead of one per request. An idle process sends a lone call at once: one round trip,
as before.

A caller that is cancelled does not cancel its call: the call's outcome still arrives, and
`on_orphan` (if given) receives the result nobody awaited (the budget engine releases a hold
reserved for a request that has gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_MAX_BATCH = 4096  # calls per round trip


class ScriptBatch:
    """`await batch(args)` runs the script with `args` (no keys), batched with concurrent calls."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript,
                 on_orphan: Callable[[Sequence[Any], Any], None] | None = None) -> None:
        self._client, self._script, self._on_orphan = client, script, on_orphan
        self._waiting: list[tuple[Sequence[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda f: self._orphaned(args, f))
            raise

    def _orphaned(self, args: Sequence[Any], future: asyncio.Future[Any]) -> None:
        if self._on_orphan is not None and not future.cancelled() and future.exception() is None:
            self._on_orphan(args, future.result())

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:_MAX_BATCH], self._waiting[_MAX_BATCH:]
            try:
                results = await self._round_trip([args for args, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - every caller gets the failure, then re-raised if fatal
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    async def _round_trip(self, calls: list[Sequence[Any]]) -> list[Any]:
        if len(calls) == 1:  # no pipeline object for a lone call (redis-py reloads the script itself)
            return [await self._script(args=list(calls[0]))]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            async with self._client.pipeline(transaction=False) as pipe:
                for i in todo:
                    pipe.evalsha(self._script.sha, 0, *calls[i])
                answers = await pipe.execute(raise_on_error=False)
            for i, answer in zip(todo, answers, strict=True):
                results[i] = answer
            todo = [i for i in todo if isinstance(results[i], NoScriptError)]
            if not todo or attempt:
                break
            await self._client.script_load(self._script.script)  # Redis restarted: nothing of those ran
        return results

