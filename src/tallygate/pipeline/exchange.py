"""The one public pipeline every proxied route takes: authenticate → tags → plan → reserve →
relay → settle → record.

`Pipeline.exchange()` opens one request as an `Exchange` (an async context manager). The route
calls the stages in order, one line each, then relays with its own API's relay:

    async with pipeline.exchange(scope, receive, send, "chat") as ex:
        call = await ex.authenticate()
        body = await ex.read_body()
        plan = ex.plan(body)
        await ex.reserve(body, plan)
        await relay.chat(call, plan, body, send)

Leaving the block settles the budget hold with what the call cost and hands the call to the
observers (the ledger first, which journals it) exactly once: normally the relay has already done
that just before the response's last byte (`Call.finish()`); when the client went away or a stage
failed, it happens here. A `GatewayError` from any stage becomes the answer, in the route's API
shape (`errors`), unless a stream had started (the relay then ended it with an in-band error).
Refusals before authentication leave no record, as documented.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType

from tallygate.core import clock
from tallygate.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    GatewayError,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    RequestCancelled,
)
from tallygate.pipeline.auth import Authenticator
from tallygate.pipeline.budget import (
    BudgetEngine,
    Hold,
    ScopesOf,
    StaleScopes,
    counters,
    key_scopes,
    lost_usage,
    priced_bound,
    prompt_bound,
    redacted,
)
from tallygate.pipeline.budget import Scope as BudgetScope
from tallygate.pipeline.call import Call
from tallygate.pipeline.image_tokens import MAX_IMAGE_TOKENS, image_tokens
from tallygate.pipeline.input_bound import check_inputs, check_routes
from tallygate.pipeline.models import ModelCatalog, Route, check_kind
from tallygate.pipeline.observers import Observers
from tallygate.pipeline.output_cap import cap_output, sent_cap
from tallygate.pipeline.pricing import LONG_CONTEXT, PriceContext, Rate, price_context, unpriced_tier
from tallygate.pipeline.ratelimit import (
    MemoryLimiter,
    RateHold,
    RateLimiter,
    RulesOf,
    SharedLimiter,
    TargetAdmission,
)
from tallygate.pipeline.ratelimit import redacted as rate_redacted
from tallygate.pipeline.ratelimit_rules import Rule
from tallygate.pipeline.routing import Plan, Router
from tallygate.pipeline.sent import sent_bodies
from tallygate.pipeline.tags import parse_tags
from tallygate.pipeline.target_limits import TargetLimits
from tallygate.pipeline.tool_fees import NO_TOOLS, ToolBound, cap_tools
from tallygate.pipeline.wire import (
    REQUEST_ID,
    Message,
    Receive,
    Scope,
    Send,
    client_address,
    edge_answer,
    headers_of,
    new_request_id,
    read_json,
    send_error,
)
from tallygate.providers.secrets import Scrubber

log = logging.getLogger("tallygate.proxy")

AUTHORIZATION, CONTENT_TYPE, TAGS, X_API_KEY = b"authorization", b"content-type", b"x-request-tags", b"x-api-key"
_TRACE, _CLEN, _CENC, _BETA = b"traceparent", b"content-length", b"content-encoding", b"anthropic-beta"
_HEADERS = (AUTHORIZATION, CONTENT_TYPE, TAGS, X_API_KEY, _CLEN, _TRACE, _CENC, _BETA)
ErrorSender = Callable[[Send, GatewayError, str], Awaitable[None]]


def credential(headers: dict[bytes, str]) -> str | None:
    """`Authorization`, or Anthropic's `x-api-key` (as the Anthropic SDKs send the key). Both
    carrying different keys is a 400 naming both: no guess at which key is meant, nor which
    one pays (a client with both ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN set sends both)."""
    auth, api_key = headers.get(AUTHORIZATION), (headers.get(X_API_KEY) or "").strip()
    if not api_key:
        return auth
    if auth is None:
        return "Bearer " + api_key
    scheme, _, secret = auth.partition(" ")
    if scheme.lower() != "bearer" or secret.strip() != api_key:
        raise InvalidRequest("both the x-api-key and the Authorization headers carry a key, and they differ: "
                             "send the gateway key in one of them (ANTHROPIC_API_KEY is sent as x-api-key, "
                             "ANTHROPIC_AUTH_TOKEN as Authorization)", param="x-api-key",
                             code="conflicting_api_keys")
    return auth


class Pipeline:
    """What every proxied request goes through; `exchange()` runs one request through it."""

    def __init__(self, auth: Authenticator, catalog: ModelCatalog, observers: Observers, budget: BudgetEngine,
                 router: Router, max_body_bytes: int, scopes: ScopesOf | None = None,
                 scrubber: Scrubber | None = None,
                 ledger_refusal: Callable[[], GatewayError | None] | None = None,
                 catch_up: Callable[[str], Awaitable[None]] | None = None, *,
                 limits: RulesOf | None = None, limiter: RateLimiter | None = None,
                 model_limits: Callable[[], Mapping[str, tuple[Rule, ...]]] | None = None) -> None:
        """`scopes(principal, tags)`: the limits a request counts against (default: its key's);
        `scrubber` keeps provider secrets from clients; `ledger_refusal()` says why the ledger
        cannot record a request now (its journal's disk refuses writes, or it is at its cap):
        the request is then refused with that 503 before any provider is called; `catch_up(version)`
        reloads budgets and keys when the shared version moved (`pipeline/freshness.py`);
        `limits(principal, tags, models)`: the rate limits a request counts against, admitted by
        `limiter` (`pipeline/ratelimit.py`); `model_limits()`: the model limits by model name
        now (those of a policy's targets, `pipeline/target_limits.py`)."""
        self.auth = auth
        self.catalog = catalog
        self.router = router
        self.observers = observers
        self.budget = budget
        self.max_body_bytes = max_body_bytes
        self.scopes = scopes or (lambda principal, _tags: key_scopes(principal))
        self.scrubber = scrubber or Scrubber(())
        self.ledger_refusal = ledger_refusal or (lambda: None)
        self.catch_up = catch_up  # reloads budgets and keys up to a version (`pipeline/freshness.py`)
        self.limits = limits or (lambda _principal, _tags, _models: ())
        self.limiter = limiter or MemoryLimiter()
        self.model_limits = model_limits or (lambda: {})

    def exchange(self, scope: Scope, receive: Receive, send: Send, endpoint: str,
                 errors: ErrorSender = send_error) -> Exchange:
        """One request to `endpoint` (its name in the ledger); `errors` renders refusals in the
        route's API shape."""
        return Exchange(self, scope, receive, send, endpoint, errors)

    async def _reserve(self, scopes: Sequence[BudgetScope], amount: int, rules: Sequence[Rule], tokens: int,
                       at_ms: int, request_id: str,
                       first: Sequence[Rule]) -> tuple[Hold | None, RateHold | None, TargetAdmission]:
        """Rate limits, then budgets, all or nothing, then the admission under `first` (a
        policy's first target's model limits), which never refuses the request itself: in one
        Redis round trip when shared; budgets in their windows at `at_ms` (when the request is held,
        its ledger `created_at`)."""
        if (rules or first) and isinstance(self.limiter, SharedLimiter):
            held, admitted, ahead = await self.limiter.reserve(scopes, amount, rules, tokens, at_ms, request_id,
                                                               first)
            return held if scopes else None, admitted if rules else None, ahead
        rate = await self.limiter.admit(rules, tokens) if rules else None
        hold = None
        if scopes:
            try:
                hold = await self.budget.reserve(scopes, amount, at_ms, request_id)
            except BaseException:
                if rate is not None:  # refused by a budget: as if never admitted
                    self.limiter.settle(rate, None)
                raise
        if not first:
            return hold, rate, None
        try:
            return hold, rate, await self.limiter.admit(first, tokens)
        except RateLimited as err:
            return hold, rate, err

    def settle(self, call: Call, hold: Hold, adoptions: int) -> None:
        """Settle `hold` to what the call cost, each scope's cost in its window now: when scopes
        appeared or changed period while it was in flight (`adoptions` moved since the
        reservation: the ledger's spend they started from does not hold this request), the cost
        goes to the counters the request's scopes have now, at its start (the ledger's
        `created_at`, where a later ledger read counts it too)."""
        if self.budget.adoptions != adoptions:
            scopes = self.scopes(self.auth.current(call.principal), call.tags)
            names = counters(scopes, self.budget.windows, call.created_ms)
            if names != hold.counters:
                hold = Hold(names, hold.held, hold.amount)
        self.budget.settle(hold, call.cost_pico)

    def _windowed(self, tools: ToolBound, routes: Sequence[Route]) -> ToolBound:
        """`tools` bounded by the largest context window of `routes`: the most one sampling pass
        can read, whatever the tools' results hold. A 400 naming the tool when a target's window
        is unknown (`models.<name>.context_window` sets it)."""
        windows = []
        for route in routes:
            window = self.catalog.context_window(route)
            if not window:
                raise InvalidRequest(
                    f"{tools.open_results}: the results of this provider-run tool have no size bound but the "
                    f"model's context window, which this gateway does not know for {route.name!r}, so a request "
                    "counted against a limit cannot use it there", param=tools.open_results)
            windows.append(window)
        return replace(tools, window=max(windows))

    def target_rules(self, call: Call, target: str) -> tuple[Rule, ...]:
        """The model rate limits on a policy's target (`pipeline/target_limits.py`)."""
        return self.model_limits().get(target, ())

    async def reserve(self, call: Call, body: dict, routes: Sequence[Route],
                      policy: str | None = None) -> tuple[Hold | None, RateHold | None, TargetLimits | None]:
        """Admit the request under every rate limit that applies (429 naming the first that
        won't) and hold its worst-case cost against its key's limit and every budget that
        applies, all or nothing (402 naming the first that won't fit). Scopes decided with
        budgets or keys another process has changed since are decided again, reloaded. Model
        limits bind by the model that serves: a plain model's here; with a `policy`, the limit
        on `policy/<name>` here, with the first target's in the same round trip, and each further
        target's as it is tried (the `TargetLimits` returned, None when no target has one)."""
        models = (f"policy/{policy}",) if policy else tuple(r.name for r in routes)
        bound: tuple[int, int] | None = None  # (prompt, output) tokens at most, counted once
        tools: ToolBound = NO_TOOLS  # what provider-run tools may add
        for attempt in range(3):
            scopes = self.scopes(call.principal, call.tags)
            if not all(s.enforce for s in scopes):  # soft budgets count, never refuse
                scopes = tuple(s if s.enforce else s._replace(limit=None) for s in scopes)
            rules = self.limits(call.principal, call.tags, models)
            by_model = self.model_limits() if policy else None  # empty (falsy) when no model is limited
            on_targets = [x for r in routes for x in by_model.get(r.name, ())] if by_model else []
            targeted = bool(on_targets)
            if not scopes and not rules and not targeted:
                return None, None, None
            priced = any(s.limit is not None for s in scopes)
            counted = any(r.tokens_per_minute is not None for r in (*rules, *on_targets))
            if bound is None and (priced or counted):
                if call.endpoint != "count_tokens":  # counting is free: any input may be counted
                    check_inputs(body, call.endpoint)  # no part the reservation cannot bound
                    check_routes(body, call.endpoint, [r.price_list for r in routes if r.native.chat_payload is None])
                output = cap_output(body, call.endpoint)  # the body sent carries the cap reserved for
                tools = cap_tools(body, call.endpoint, [r.upstream_model for r in routes])  # and the tools' bounds
                if tools.open_results is not None:  # results of no bounded size: each pass reads a window at most
                    tools = self._windowed(tools, routes)
                images = max((image_tokens(r.upstream_model) for r in routes), default=MAX_IMAGE_TOKENS)
                sent = sent_bodies(body, call.endpoint, routes)  # bodies grow in translation
                bound = prompt_bound(body, call.endpoint, images, sent), output
            prompt, output = bound or (0, 0)
            rates = [self.catalog.rate(r) for r in routes] if priced else []  # no limit: no price looked up
            if rates and call.price_context:
                _check_tiers(rates, routes, call.price_context, tools.input_tokens(prompt, output))
            amount = priced_bound(prompt, output, [r.under(call.price_context) for r in rates], tools) if priced else 0
            call.held = amount  # what one attempt may cost (also while Redis is away, budgets open)
            tokens = tools.input_tokens(prompt, output) + output if counted else 0  # every pass, as budgets
            targets = first = None
            # The request counts in the windows of the instant it is held, not of its headers: a
            # body that arrives after a window ended would be held against that window's counters,
            # which this process drops once another request holds in the next one (its spend read
            # as 0). The ledger's `created_at` is that instant, so a later read counts it there too.
            call.created_ms = clock.now_ms()
            if targeted:
                targets = TargetLimits(call, self.target_rules, self.limiter, tokens, self.catch_up)
                first = tuple(r for r in self.target_rules(call, routes[0].name) if r not in rules)
            try:
                if not scopes and not rules and not first:
                    return None, None, targets
                hold, rate, ahead = await self._reserve(scopes, amount, rules, tokens, call.created_ms, call.id,
                                                        first or ())
                if targets is not None:
                    targets.ahead(routes[0].name, ahead)
                return hold, rate, targets
            except BudgetExceeded as err:  # another team's budget is not this caller's to read
                raise redacted(err, call.principal, amount) from None
            except RateLimited as err:  # nor another scope's rate limit (its name or id)
                raise rate_redacted(err, call.principal) from None
            except StaleScopes as stale:
                if self.catch_up is None or attempt == 2:
                    break
                await self.catch_up(stale.version)
                call.principal = self.auth.recheck(call.principal)  # revoked meanwhile: 401
                if not call.principal.can("completions", "write"):
                    raise PermissionDenied("this API key may not make completions (permissions.completions)") from None
        raise BudgetUnavailable("budgets kept changing while this request was admitted; retry")


def _check_tiers(rates: Sequence[Rate], routes: Sequence[Route], context: PriceContext, prompt: int) -> None:
    """A 400 naming the field of `context` that asks a target for a dearer tier whose price is not
    known there for a prompt of up to `prompt` tokens (`pricing.unpriced_tier`): it could be
    neither reserved nor metered."""
    for rate, route in zip(rates, routes, strict=True):
        if (asked := unpriced_tier(rate, context, prompt)) is not None:
            field, value = asked
            raise InvalidRequest(f"{field}: {value!r} is billed above the standard price, and this gateway has no "
                                 f"price for it on {route.name!r}, so a request counted against a limit cannot ask "
                                 "for it", param=field)


class Exchange:
    """One proxied request, stage by stage (see the module's docstring)."""

    __slots__ = ("id", "call", "_pipeline", "_scope", "_receive", "_send", "_endpoint", "_errors", "_headers",
                 "_hold", "_rate", "_targets", "_adoptions")

    def __init__(self, pipeline: Pipeline, scope: Scope, receive: Receive, send: Send, endpoint: str,
                 errors: ErrorSender) -> None:
        self.id = scope[REQUEST_ID] = new_request_id()  # (the HTTP edge's answer names it too)
        self.call: Call | None = None  # set once the caller is known
        self._pipeline, self._scope, self._receive, self._send = pipeline, scope, receive, send
        self._endpoint, self._errors = endpoint, errors
        self._headers = headers_of(scope, *_HEADERS)
        self._hold: Hold | None = None
        self._rate: RateHold | None = None
        self._targets: TargetLimits | None = None
        self._adoptions = 0  # the budget's `adoptions` when this request reserved

    async def __aenter__(self) -> Exchange:
        return self

    async def authenticate(self) -> Call:
        """The caller's key, checked; from here on the request will have a ledger record."""
        p = self._pipeline
        principal = await p.auth.authenticate(credential(self._headers), client_address(self._scope))
        refusal = p.ledger_refusal()  # refused unrecorded: the journal cannot take records now
        if refusal is not None:
            raise refusal
        call = self.call = Call(self.id, self._endpoint, principal, p.observers.finished, p.scrubber)
        call.trace_parent = self._headers.get(_TRACE)
        if not principal.can("completions", "write"):
            raise PermissionDenied("this API key may not make completions (permissions.completions)")
        return call

    async def read_body(self) -> dict:
        """The JSON body, its tags (taken out: never sent upstream) and its model, checked."""
        call, headers = self._started(), self._headers
        body = await read_json(self._receive, self._pipeline.max_body_bytes, headers.get(CONTENT_TYPE),
                               headers.get(_CLEN), headers.get(_CENC))
        call.stream = body.get("stream") is True  # recorded so even when refused before relaying
        model = body.get("model")
        if isinstance(model, str) and model:
            call.requested_model = model[:200]  # recorded so even when its tags are refused
        call.tags = parse_tags(body.pop("request_tags", None), headers.get(TAGS))
        if not call.requested_model:
            raise InvalidRequest("model must be a non-empty string", param="model")
        call.price_context = price_context(body)  # a dearer tier asked for is reserved and metered as such
        if self._endpoint == "messages" and LONG_CONTEXT[1] in (headers.get(_BETA) or ""):  # passed on to Claude
            call.price_context += (LONG_CONTEXT,)
        return body

    def plan(self, body: dict) -> Plan:
        """The targets to try: the model's route, or a routing policy's; each of the kind of
        model this endpoint serves (else a 400 naming `model`)."""
        plan = self._pipeline.router.plan(body["model"], self._started().principal.policy)
        check_kind(plan.targets, self._endpoint, body["model"])
        return plan

    async def reserve(self, body: dict, plan: Plan) -> None:
        """Admit the request under its rate limits, then hold the worst case against every limit
        and budget that applies (both settled on the way out)."""
        policy = plan.policy.name if plan.policy is not None else None
        call = self._started()
        self._adoptions = self._pipeline.budget.adoptions
        self._hold, self._rate, self._targets = await self._pipeline.reserve(call, body, plan.targets, policy)
        call.admit_route = self._targets
        call.output_cap = sent_cap(body, self._endpoint)  # what estimates of the output stop at
        endpoint = self._endpoint
        if endpoint != "count_tokens":  # what an attempt that timed out is charged (`Call.lose`)
            # (not a closure over `self`: the exchange holds the call, and a call that held its
            # exchange would be a cycle only the garbage collector frees, with all it refers to)
            rate = self._pipeline.catalog.rate
            call.worst_case = lambda route: (lost_usage(body, endpoint), rate(route))

    @property
    def send(self) -> Send:
        """The route's `send`, adding the x-ratelimit-* headers of the tightest rate limit."""
        return self._send if self._rate is None or not self._rate.headers else self._send_limited

    async def _send_limited(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self._rate is not None:
            message = {**message, "headers": [*message.get("headers", ()), *self._rate.headers]}
        await self._send(message)

    def _started(self) -> Call:
        if self.call is None:
            raise RuntimeError("authenticate() comes first")
        return self.call

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        call = self.call
        if call is None:  # refused before the caller was known: answered, not recorded
            if isinstance(exc, Exception):
                await self._errors(self._send, self._as_gateway_error(exc), self.id)
                return True
            return False
        try:
            if exc is None:
                return False
            if isinstance(exc, asyncio.CancelledError):  # shutdown ran out of grace time
                if not call.recorded:
                    call.partial = call.ttft is not None
                    cancelled = RequestCancelled("the gateway stopped before this request finished")
                    call.fail(cancelled)
                    call.finish()
                    if call.ttft is None:  # the client gets the 503 the ledger records, not a bare 500
                        await self._errors(self.send, cancelled, self.id)
                # Answered (the 503, or the stream's error event) and recorded: the request ends
                # here, not as the server's "Exception in ASGI application" traceback.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return True
            if not isinstance(exc, Exception):
                return False
            err = edge_answer(self._scope) or self._as_gateway_error(exc)  # the edge may have answered
            call.fail(err)
            if call.ttft is None:
                call.finish()
                await self._errors(self.send, err, self.id)
            return True
        finally:
            if self._hold is not None:
                self._pipeline.settle(call, self._hold, self._adoptions)
            if self._rate is not None:
                self._pipeline.limiter.settle(self._rate, call.usage.input_tokens + call.usage.output_tokens)
            if self._targets is not None:
                served = call.route.name if call.route is not None and call.status < 400 else None
                self._targets.settle(served, call.usage.input_tokens + call.usage.output_tokens)
            call.finish()  # once: a no-op when the response already had it

    def _as_gateway_error(self, exc: Exception) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        log.error("request %s failed unexpectedly", self.id, exc_info=exc)
        return GatewayError("the gateway failed to handle this request", code="internal_error")
