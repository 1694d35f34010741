"""The OpenAI-compatible routes, on raw ASGI: this is the hot path.

Each handler reads like the pipeline: authenticate, read the body, resolve tags, plan the route
(a model, or a routing policy's targets), reserve budget, relay through the routing executor
(which tries the targets until one answers), meter, respond. The finished call goes to the
request observers (the ledger first, which journals it) exactly once: just before the
response's last byte is sent (`Call.finish()`, called by `respond_json` and the stream relay),
or in the `finally` when the client went away. Each upstream attempt gets
its own copy of the body with its target's model, so no attempt sees another's changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import orjson

from tallygate.api.asgi import (
    JSON_HEADERS,
    Receive,
    Scope,
    Send,
    edge_answer,
    headers_of,
    new_request_id,
    read_json,
    send_bytes,
    send_error,
)
from tallygate.api.chat_stream import ChatCodec
from tallygate.api.streaming import relay_stream
from tallygate.core.money import usd_json
from tallygate.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RequestCancelled,
)
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import BudgetEngine, Hold, ScopesOf, key_scopes, worst_case
from tallygate.pipeline.call import Call
from tallygate.pipeline.models import ModelCatalog, Route
from tallygate.pipeline.observers import Observers
from tallygate.pipeline.pricing import Rate
from tallygate.pipeline.routing import Plan, Router, execute
from tallygate.pipeline.tags import parse_tags
from tallygate.pipeline.validate import check_chat, check_embeddings
from tallygate.providers.secrets import Scrubber
from tallygate.types import Usage

log = logging.getLogger("tallygate.proxy")

_AUTH, _CTYPE, _TAGS, _XKEY = b"authorization", b"content-type", b"x-request-tags", b"x-api-key"
_TRACE = b"traceparent"
_CLEN = b"content-length"
Handler = Callable[[Call, Plan, dict, Send], Awaitable[None]]
ErrorSender = Callable[[Send, GatewayError, str], Awaitable[None]]


def credential(headers: dict[bytes, str]) -> str | None:
    """`Authorization`, or Anthropic's `x-api-key` (as the Anthropic SDKs send the key)."""
    auth = headers.get(_AUTH)
    if auth is None and headers.get(_XKEY):
        return "Bearer " + headers[_XKEY].strip()
    return auth


class Proxy:
    """`/v1/chat/completions`, `/v1/embeddings` and `/v1/models`."""

    def __init__(self, auth: Authenticator, catalog: ModelCatalog, observers: Observers,
                 budget: BudgetEngine, max_body_bytes: int, router: Router,
                 scopes: ScopesOf | None = None, scrubber: Scrubber | None = None,
                 ledger_refusal: Callable[[], GatewayError | None] | None = None) -> None:
        """`scopes(principal, tags)`: the limits a request counts against (default: its key's);
        `scrubber` keeps provider secrets from clients; `ledger_refusal()` says why the ledger
        cannot record a request now (its journal's disk refuses writes, or it is at its cap):
        the request is then refused with that 503 before any provider is called."""
        self._auth = auth
        self._scopes = scopes or (lambda principal, _tags: key_scopes(principal))
        self._catalog = catalog
        self._router = router
        self._observers = observers
        self._budget = budget
        self._limit = max_body_bytes
        self._scrub = scrubber or Scrubber(())
        self._ledger_refusal = ledger_refusal or (lambda: None)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = new_request_id()
        try:
            await self._auth.authenticate(credential(headers_of(scope, _AUTH, _XKEY)))
            listing = self._catalog.listing()
            if scope["path"] != "/v1/models":  # GET /v1/models/{id}; ids may hold a "/"
                name = scope["path"][len("/v1/models/"):]
                found = [m for m in listing["data"] if m["id"] == name]
                if not found:
                    raise ModelNotFound(f"the model {name!r} does not exist on this gateway; "
                                        "GET /v1/models lists the ones that do", param="model")
                listing = found[0]
        except GatewayError as err:
            return await send_error(send, err, rid)
        await send_bytes(send, 200, orjson.dumps(listing), [*JSON_HEADERS, (b"x-request-id", rid.encode())])

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, "chat", self._chat)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send, "embeddings", self._embed)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, endpoint: str,
                      relay: Handler, send_error: ErrorSender = send_error, reserve: bool = True) -> None:
        """The pipeline every proxied endpoint shares; `relay` is the endpoint's own part,
        `send_error` renders errors in the endpoint's API shape."""
        rid = new_request_id()
        headers = headers_of(scope, _AUTH, _CTYPE, _TAGS, _XKEY, _CLEN, _TRACE)
        try:
            principal = await self._auth.authenticate(credential(headers))
        except GatewayError as err:
            return await send_error(send, err, rid)
        refusal = self._ledger_refusal()  # refused unrecorded: the journal cannot take records now
        if refusal is not None:
            return await send_error(send, refusal, rid)
        call = Call(rid, endpoint, principal, self._observers.finished, self._scrub)
        call.trace_parent = headers.get(_TRACE)
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
            hold = await self._reserve(call, body, plan.targets) if reserve else None
            await relay(call, plan, body, send)
        except GatewayError as err:
            err = edge_answer(scope) or err  # the edge answered already (a body too slow)
            call.fail(err)
            if call.ttft is None:
                call.finish()
                await send_error(send, err, rid)
        except Exception:
            log.exception("request %s failed unexpectedly", rid)
            internal = GatewayError("the gateway failed to handle this request", code="internal_error")
            call.fail(internal)
            if call.ttft is None:
                call.finish()
                await send_error(send, internal, rid)
        except asyncio.CancelledError:  # shutdown ran out of grace time: record what we know
            if call.recorded:
                raise
            call.partial = call.ttft is not None
            cancelled = RequestCancelled("the gateway stopped before this request finished")
            call.fail(cancelled)
            call.finish()
            if call.ttft is None:  # the client gets the 503 the ledger records, not a bare 500
                await send_error(send, cancelled, rid)
            raise
        finally:
            if hold is not None:
                self._budget.settle(hold, call.cost_pico)
            call.finish()  # once: a no-op when the response already had it

    async def _reserve(self, call: Call, body: dict, routes: Sequence[Route]) -> Hold | None:
        """Hold the request's worst-case cost against its key's limit and every budget that
        applies, all or nothing (402 naming the first that won't fit)."""
        scopes = self._scopes(call.principal, call.tags)
        if not scopes:
            return None
        limited = any(s.limit is not None for s in scopes)
        amount = worst_case(body, call.endpoint, [self._catalog.rate(r) for r in routes]) if limited else 0
        return await self._budget.reserve(scopes, amount)

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
        usage_obj["cost"] = usd_json(cost)
        await respond_json(call, data, send)

    async def _chat_stream(self, call: Call, plan: Plan, body: dict, send: Send) -> None:
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        await relay_stream(call, plan, lambda route: _chat_chunks(body, route),
                           lambda route: ChatCodec(call, self._catalog.rate(route), body, wants_usage), send)

    def rate(self, route: Route) -> Rate:
        return self._catalog.rate(route)


async def respond_json(call: Call, data: dict, send: Send) -> None:
    """Send a finished JSON answer with the gateway's request id; the call is recorded first."""
    out = call.scrub(orjson.dumps(data))
    call.ttft = time.perf_counter()
    call.finish()
    await send_bytes(send, 200, out, [*JSON_HEADERS, (b"x-request-id", call.id.encode())])


def upstream_body(body: dict, route: Route) -> dict:
    """The body one attempt sends: the client's, with the target's model, as a copy of its own."""
    return {**body, "model": route.upstream_model}


def _chat_chunks(body: dict, route: Route) -> AsyncIterator[list[bytes]]:
    """The provider's chat stream as batches of chunk JSON bytes (raw when it can give them)."""
    raw = getattr(route.provider, "chat_stream_raw", None)
    if raw is not None:
        return raw(upstream_body(body, route))  # type: ignore[no-any-return]
    return _dumped(route.provider.chat_stream(upstream_body(body, route)))


async def _dumped(batches: AsyncIterator[list[dict]]) -> AsyncIterator[list[bytes]]:
    try:
        async for batch in batches:
            yield [orjson.dumps(chunk) for chunk in batch]
    finally:
        await batches.aclose()  # type: ignore[attr-defined]
