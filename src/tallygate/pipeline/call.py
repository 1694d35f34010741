"""One request's journey through the gateway, ending as exactly one ledger record."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from tallygate.core import clock
from tallygate.core.record import Attempt, LedgerRecord
from tallygate.errors import GatewayError, JournalUnavailable, UpstreamError
from tallygate.pipeline.budget import IMAGE_TOKENS, body_size
from tallygate.pipeline.image_tokens import image_tokens
from tallygate.pipeline.models import Route
from tallygate.pipeline.pricing import PriceContext, Rate
from tallygate.types import Principal, Reported, Usage


class StreamScrub(Protocol):
    """Scrubs one stream's bytes in order; holds back a tail that could begin a secret."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Scrub(Protocol):
    """What keeps provider secrets from a client (`providers.secrets.Scrubber`)."""

    def text(self, text: str) -> str: ...

    def body(self, data: bytes) -> bytes: ...

    def stream(self) -> StreamScrub: ...


class _Unscrubbed:
    """No secrets configured: every byte goes out as it came."""

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class Call:
    """Mutable facts about one authenticated request; `record()` turns them into a ledger row."""

    __slots__ = ("id", "endpoint", "principal", "started", "created_ms", "tags", "route", "stream",
                 "status", "error", "usage", "cost_pico", "pricing_source", "ttft", "partial",
                 "attempts", "requested_model", "streamed_chars", "reported", "trace_parent", "recorded",
                 "price_context",
                 "_finisher", "_scrubber", "admit_route", "worst_case", "held", "output_cap", "_lost",
                 "_lost_pico", "_lost_source", "stalled")

    def __init__(self, request_id: str, endpoint: str, principal: Principal,
                 finisher: Callable[[Call], object] | None = None, scrubber: Scrub | None = None) -> None:
        self.id = request_id
        self.endpoint = endpoint
        self.principal = principal
        self.started = time.perf_counter()
        self.created_ms = clock.now_ms()
        self.tags: tuple[str, ...] = ()
        self.route: Route | None = None
        # admits the request under a target's model rate limits before it is tried (target_limits.py)
        self.admit_route: Callable[[Route], Awaitable[None]] | None = None
        self.requested_model: str | None = None
        self.stream = False
        self.status = 200
        self.error: GatewayError | None = None
        self.usage = Usage()
        self.cost_pico = 0
        self.pricing_source: str | None = None
        self.ttft: float | None = None
        self.partial = False
        self.attempts: list[Attempt] = []
        self.streamed_chars = 0  # text relayed so far in a stream, for estimates
        self.reported = Reported()  # the usage the attempt's stream reported before its end, for estimates
        self.trace_parent: str | None = None  # the client's W3C `traceparent` header, if any
        self.recorded = False  # finish() has run: the ledger has this call's record
        self.price_context: PriceContext = ()  # what the body asks that selects a dearer price (service_tier ...)
        # An attempt's most, (usage, rate) on a route: what one that timed out is charged (`lose`).
        self.worst_case: Callable[[Route], tuple[Usage, Rate]] | None = None
        self.held = 0  # the worst case a limit holds for this call (picodollars; 0: under none)
        self.output_cap: int | None = None  # the most output the body sent may produce (`output_cap.sent_cap`)
        self.stalled = False  # its stream timed out after it began: the output is estimated at the cap sent
        self._lost = Usage()  # attempts that timed out after being sent, at their worst case
        self._lost_pico = 0
        self._lost_source: str | None = None
        self._finisher = finisher  # hands the finished call to the observers (the ledger first)
        self._scrubber = scrubber

    def finish(self) -> None:
        """The call is complete: record it, once. Called just before the response's last byte
        is sent, so that a record exists for everything a client was answered.

        If the ledger's journal cannot take the record of a success, the answer must not leave:
        the call becomes the 503 `JournalUnavailable` (recorded as such, the ledger keeping that
        record in memory until its disk takes writes again) and this raises it, for the caller
        to send instead (a JSON answer's error, or a stream's error event)."""
        if self.recorded:
            return
        self.recorded = True
        if self._finisher is None:
            return
        try:
            self._finisher(self)
        except JournalUnavailable as err:
            self.fail(err)
            if self.stream:
                self.partial = True
            else:
                self.ttft = None  # nothing of the JSON answer was sent: the 503 is
            self._finisher(self)
            raise

    def scrub(self, data: bytes) -> bytes:
        """Response bytes without the configured provider secrets."""
        return data if self._scrubber is None else self._scrubber.body(data)

    def stream_scrub(self) -> StreamScrub:
        """A scrubber for this call's relayed stream (secrets split across events included)."""
        return _Unscrubbed() if self._scrubber is None else self._scrubber.stream()

    def meter(self, usage: Usage, rate: Rate) -> int:
        """Price `usage` at `rate`, or the variant of it the body asked for (`price_context`);
        returns the cost in picodollars."""
        rate = rate.under(self.price_context)
        self.usage = usage
        self.cost_pico = rate.cost(usage)
        self.pricing_source = rate.source
        if self._lost_pico:  # and the attempts before it that timed out, at their worst case
            self.usage = replace(usage, input_tokens=usage.input_tokens + self._lost.input_tokens,
                                 output_tokens=usage.output_tokens + self._lost.output_tokens)
            self.cost_pico += self._lost_pico
            self.pricing_source = f"{rate.source} (estimated)"
        return self.cost_pico

    def lose(self, route: Route) -> None:
        """An attempt on `route` timed out after the request was sent: the provider bills it as if
        it had answered, so it is charged its worst case (`worst_case`: the prompt as estimated
        elsewhere, the output cap sent), as an estimate, never more than a limit holds for it."""
        if self.worst_case is None:
            return
        usage, rate = self.worst_case(route)
        rate = rate.under(self.price_context)
        self._lost = replace(self._lost, input_tokens=self._lost.input_tokens + usage.input_tokens,
                             output_tokens=self._lost.output_tokens + usage.output_tokens)
        self._lost_pico += rate.cost(usage)
        if self.held:
            self._lost_pico = min(self._lost_pico, self.held)
        self._lost_source = f"{rate.source} (estimated)"

    def may_try_again(self) -> bool:
        """Whether another attempt may follow the ones that failed: not once one timed out under a
        limit, which holds the worst case of one attempt only (the timed-out one may have spent it)."""
        return not (self.held and self._lost_pico)

    def meter_estimate(self, body: dict[str, Any], rate: Rate) -> int:
        """Price a stream the provider never reported all its usage for (cut short, or a server
        that ignores `include_usage`): the prompt as `prompt_estimate` has it, the output by the
        text relayed, at about four characters a token. The record's pricing source says it is
        an estimate."""
        usage = self.prompt_estimate(body)
        usage.output_tokens = self.output_estimate(self.streamed_chars)
        cost = self.meter(usage, rate)
        self.mark_estimated()
        return cost

    def prompt_estimate(self, body: dict[str, Any]) -> Usage:
        """The prompt of a stream cut short: the counts its provider reported at the stream's
        start (`reported`: input and cache tokens), else the body's size, as a JSON answer
        without usage is priced (`relay.meter_answer`): about four characters a token, an image
        at IMAGE_TOKENS, or the most the route's model bills for one where that is less (as the
        reservation counts it; never its base64, which could price a photo past the request's
        reservation)."""
        if self.reported.prompt is not None and self.reported.prompt.input_tokens:
            return self.reported.prompt.prompt()
        chars, images = body_size(body)
        per_image = IMAGE_TOKENS if self.route is None else min(IMAGE_TOKENS, image_tokens(self.route.upstream_model))
        return Usage(input_tokens=math.ceil(chars / 4) + images * per_image)

    def output_estimate(self, chars: int) -> int:
        """The output tokens of `chars` characters of text relayed: about four characters a
        token, never more than the cap the provider was sent (`output_cap`; a token may be a
        long run of characters), so an estimate stays within what the request reserved. A stream
        that `stalled` (timed out after it began: a reasoning model thinking silently, billed for
        what it thought) is charged the cap sent, as an attempt that timed out is (`lose`)."""
        tokens = math.ceil(chars / 4)
        if self.stalled and self.worst_case is not None and self.route is not None:
            tokens = max(tokens, self.worst_case(self.route)[0].output_tokens)
        return tokens if self.output_cap is None else min(tokens, self.output_cap)

    def mark_estimated(self) -> None:
        """Say in the record's pricing source that its cost is (in part) an estimate."""
        if self.pricing_source is not None and not self.pricing_source.endswith(" (estimated)"):
            self.pricing_source = f"{self.pricing_source} (estimated)"

    def attempt(self, status: int, error: GatewayError | None = None, started: float | None = None) -> None:
        """Note the outcome of one upstream try of the current route, begun at `started`
        (`time.perf_counter()`; the start of the request when not given)."""
        route = self.route
        if route is not None:
            self.attempts.append(Attempt(
                provider=route.provider_name, model=route.upstream_model, status=status,
                latency_ms=(time.perf_counter() - (started or self.started)) * 1000.0,
                error=None if error is None else type(error).__name__, target=route.name))

    def fail(self, err: GatewayError) -> None:
        if self._scrubber is not None and isinstance(err, UpstreamError):
            err.message = self._scrubber.text(err.message)  # a provider's words lose any secret
        self.status = err.status
        self.error = err
        if self.pricing_source is None and self._lost_pico:  # nothing answered: the attempts lost
            self.usage, self.cost_pico, self.pricing_source = self._lost, self._lost_pico, self._lost_source

    def record(self) -> LedgerRecord:
        """The ledger record of this request, as it stands now."""
        route, usage, err = self.route, self.usage, self.error
        p = self.principal
        model = self.requested_model
        return LedgerRecord(
            id=self.id, created_at=self.created_ms, key_id=p.key_id, key_name=p.name, labels=p.labels,
            tags=self.tags, endpoint=self.endpoint, requested_model=model and model.replace("\x00", "\ufffd"),
            served_model=route.upstream_model if route else None,
            provider=route.provider_name if route else None, status=self.status,
            error_type=err.type if err else None, error_message=err.message[:1000] if err else None,
            stream=self.stream, partial=self.partial, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens, reasoning_tokens=usage.reasoning_tokens,
            cost_pico=self.cost_pico, pricing_source=self.pricing_source,
            latency_us=int((time.perf_counter() - self.started) * 1e6),
            ttft_us=None if self.ttft is None else int((self.ttft - self.started) * 1e6),
            attempts=tuple(self.attempts), error_code=err.code if err else None)
