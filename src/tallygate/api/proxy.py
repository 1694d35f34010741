"""The OpenAI-compatible routes, on raw ASGI: this is the hot path.

Each handler reads like the pipeline: authenticate, read the body, resolve tags, plan the route
(a model, or a routing policy's targets), reserve budget, relay through the routing executor
(which tries the targets until one answers), meter, respond. The finished call goes to the
request observers (the ledger first, which journals it) exactly once: just before the
response's last byte is sent, or in the `finally` when the client went away. Each upstream attempt gets
its own copy of the body with its target's model, so no attempt sees another's changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

import orjson

from tallygate.api.asgi import (
    JSON_HEADERS,
    SSE_HEADERS,
    Receive,
    Scope,
    Send,
    headers_of,
    new_request_id,
    read_json,
    send_bytes,
    send_error,
)
from tallygate.core.money import usd
from tallygate.errors import (
    GatewayError,
    InvalidRequest,
    LedgerUnavailable,
    PermissionDenied,
    RequestCancelled,
    UpstreamError,
    UpstreamProtocolError,
)
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import BudgetEngine, Hold, key_scopes, worst_case
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import ModelCatalog, Route
from tallygate.pipeline.observers import Observers
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.routing import Plan, Router, execute, stream_failed
from tallygate.pipeline.tags import parse_tags
from tallygate.pipeline.validate import check_chat, check_embeddings
from tallygate.providers.secrets import Scrubber
from tallygate.types import Usage

log = logging.getLogger("tallygate.proxy")

_AUTH, _CTYPE, _TAGS, _CLEN = b"authorization", b"content-type", b"x-request-tags", b"content-length"
Handler = Callable[[Call, Plan, dict, Send], Awaitable[None]]


def _cost_value(pico: int) -> float:
    """Dollars for the JSON response; shortest float repr prints the exact decimal."""
    return float(usd(pico))


class Proxy:
    """`/v1/chat/completions`, `/v1/embeddings` and `/v1/models`."""

    def __init__(self, auth: Authenticator, catalog: ModelCatalog, observers: Observers,
                 budget: BudgetEngine, max_body_bytes: int, router: Router,
                 scrubber: Scrubber | None = None, ledger_full: Callable[[], bool] | None = None) -> None:
        self._auth = auth
        self._catalog = catalog
        self._router = router
        self._observers = observers
        self._budget = budget
        self._limit = max_body_bytes
        self._scrub = scrubber or Scrubber(())
        self._ledger_full = ledger_full or (lambda: False)  # the journal is at its cap: refuse

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = new_request_id()
        try:
            await self._auth.authenticate(headers_of(scope, _AUTH).get(_AUTH))
        except GatewayError as err:
            return await send_error(send, err, rid)
        await send_bytes(send, 200, orjson.dumps(self._catalog.listing()),
                         [*JSON_HEADERS, (b"x-request-id", rid.encode())])

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, "chat", self._chat)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, "embeddings", self._embed)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, endpoint: str,
                      relay: Handler) -> None:
        rid = new_request_id()
        headers = headers_of(scope, _AUTH, _CTYPE, _TAGS, _CLEN)
        try:
            principal = await self._auth.authenticate(headers.get(_AUTH))
        except GatewayError as err:
            return await send_error(send, err, rid)
        if self._ledger_full():  # refused unrecorded, so that the journal stays within its cap
            return await send_error(send, LedgerUnavailable(
                "the ledger cannot record requests now (its database has been away too long); "
                "retry later"), rid)
        call = Call(rid, endpoint, principal)
        hold = None
        try:
            if not principal.can("completions", "write"):
                raise PermissionDenied("this API key may not make completions (permissions.completions)")
            body = await read_json(receive, self._limit, headers.get(_CTYPE), headers.get(_CLEN))
            call.tags = parse_tags(body.pop("request_tags", None), headers.get(_TAGS))
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise InvalidRequest("model must be a non-empty string", param="model")
            call.requested_model = model[:200]
            plan = self._router.plan(model, principal.policy)
            hold = self._reserve(call, body, plan.targets)
            await relay(call, plan, body, send)
        except GatewayError as err:
            self._fail(call, err)
            if call.ttft is None:
                self._finish(call)
                await send_error(send, err, rid)
        except Exception:
            log.exception("request %s failed unexpectedly", rid)
            err = GatewayError("the gateway failed to handle this request", code="internal_error")
            call.fail(err)
            if call.ttft is None:
                self._finish(call)
                await send_error(send, err, rid)
        except asyncio.CancelledError:  # shutdown ran out of grace time: record what we know
            if call.recorded:
                raise
            call.partial = call.ttft is not None
            err = RequestCancelled("the gateway stopped before this request finished")
            call.fail(err)
            self._finish(call)
            if call.ttft is None:  # the client gets the 503 the ledger records, not a bare 500
                await send_error(send, err, rid)
            elif call.stream:
                await send({"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n"})
            raise
        finally:
            if hold is not None:
                self._budget.settle(hold, call.cost_pico)
            if not call.recorded:  # the client went away: nothing more will be sent
                self._finish(call)

    def _fail(self, call: Call, err: GatewayError) -> None:
        """Note the error; words relayed from a provider lose any secret or address first."""
        if isinstance(err, UpstreamError):
            err.message = self._scrub.text(err.message)
        call.fail(err)

    def _finish(self, call: Call) -> None:
        """Hand the call to the observers (the ledger journals it), once, before the last byte."""
        call.recorded = True
        self._observers.finished(call)

    def _reserve(self, call: Call, body: dict, routes: Sequence[Route]) -> Hold | None:
        """Hold the request's worst-case cost against every limit it counts against (402 if it
        won't fit)."""
        scopes = key_scopes(call.principal)
        if not scopes:
            return None
        limited = any(s.limit is not None for s in scopes)
        amount = worst_case(body, call.endpoint, [self._catalog.rate(r) for r in routes]) if limited else 0
        return self._budget.reserve(scopes, amount)

    async def _chat(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        if check_chat(body):
            return await self._chat_stream(call, plan, body, send)

        def attempt(route: Route) -> Awaitable[tuple[dict, Usage]]:
            return route.provider.chat(upstream_body(body, route))

        data, usage = await execute(call, plan, attempt)
        await self._respond(call, call.route, data, usage, send)

    async def _embed(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        check_embeddings(body)

        def attempt(route: Route) -> Awaitable[tuple[dict, Usage]]:
            return route.provider.embed(upstream_body(body, route))

        data, usage = await execute(call, plan, attempt)
        await self._respond(call, call.route, data, usage, send)

    async def _respond(self, call: Call, route: Route | None, data: dict, usage: Usage, send: Send) -> None:
        assert route is not None
        cost = call.meter(usage, self._catalog.rate(route))
        if call.endpoint == "chat":
            data["id"] = call.id
        usage_obj = data.get("usage")
        if not isinstance(usage_obj, dict):
            usage_obj = data["usage"] = usage.to_openai()
        usage_obj["cost"] = _cost_value(cost)
        out = self._scrub.body(orjson.dumps(data))
        call.ttft = time.perf_counter()
        self._finish(call)
        await send_bytes(send, 200, out, [*JSON_HEADERS, (b"x-request-id", call.id.encode())])

    async def _chat_stream(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        call.stream = True
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        batches, batch = await execute(call, plan, partial(_first_batch, body))
        route = call.route
        assert route is not None
        rate = self._catalog.rate(route)
        try:
            call.ttft = time.perf_counter()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*SSE_HEADERS, (b"x-request-id", call.id.encode())]})
            try:
                while True:
                    out = _sse_events(call, batch, rate, wants_usage)
                    if out:
                        await send({"type": "http.response.body", "body": self._scrub.body(out),
                                    "more_body": True})
                    batch = await anext(batches)
            except StopAsyncIteration:
                if call.pricing_source is None:
                    call.meter_estimate(body, rate)  # a server that ignored include_usage
                self._finish(call)
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            except Exception as exc:
                if not isinstance(exc, GatewayError):
                    log.exception("stream %s failed unexpectedly", call.id)
                err = exc if isinstance(exc, GatewayError) else GatewayError(
                    "the gateway failed while relaying this stream", code="internal_error")
                call.partial = True
                self._fail(call, err)
                if isinstance(err, UpstreamError):
                    stream_failed(plan, route)
                call.meter_estimate(body, rate)  # cut short: no usage from the provider
                self._finish(call)
                await send({"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n"})
        finally:
            if not call.recorded and (call.partial or call.pricing_source is None):
                call.meter_estimate(body, rate)  # cut short: no usage from the provider
            await batches.aclose()


def upstream_body(body: dict, route: Route) -> dict:
    """The body one attempt sends: the client's, with the target's model, as a copy of its own."""
    return {**body, "model": route.upstream_model}


async def _first_batch(body: dict, route: Route) -> tuple[AsyncIterator[list[dict]], list[dict]]:
    """One stream attempt: open the stream on `route` and wait for its first chunks. Until they
    arrive nothing has reached the client, so the executor may still try another target."""
    batches = route.provider.chat_stream(upstream_body(body, route))
    try:
        return batches, await anext(batches)
    except StopAsyncIteration:
        raise UpstreamProtocolError(f"provider {route.provider_name!r} sent an empty stream") from None
    except BaseException:
        await batches.aclose()  # type: ignore[attr-defined]
        raise


def _sse_events(call: Call, batch: list[dict], rate: Rate, wants_usage: bool) -> bytes:
    """Re-id, meter and serialise a batch of chunks; the usage chunk only if the client asked."""
    out = []
    for chunk in batch:
        chunk["id"] = call.id
        usage_obj = chunk.get("usage")
        if usage_obj:
            usage_obj["cost"] = _cost_value(call.meter(Usage.from_openai(usage_obj), rate))
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                call.streamed_chars += len(content)
        if not wants_usage:
            chunk.pop("usage", None)
            if usage_obj and not chunk.get("choices"):
                continue
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    return b"".join(out)
