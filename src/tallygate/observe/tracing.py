"""OpenTelemetry traces, opt-in (`tracing: {enabled: true}`, `pip install tallygate[otel]`).

A call observer: when a request finishes it becomes a span (`SERVER`, named
`"<operation> <model>"`) with a `CLIENT` child per upstream attempt, with the GenAI semantic
conventions' attributes (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
`gen_ai.response.model`, `gen_ai.usage.*` including cache read/creation and reasoning tokens) and
Tallygate's own (`tallygate.request_id`, `tallygate.cost_usd` as an exact decimal string,
`tallygate.tags`, `tallygate.key.id`, `tallygate.key.name`, `tallygate.key.label.<name>`). The
span's times are the request's own (start and latency as measured by the proxy); attempts are
laid end to end from the request's start, each with its measured duration. An incoming W3C
`traceparent` makes the span its child. Prompts and completions are never recorded.

The exporter is the SDK's OTLP exporter behind a batch processor, both configured by the
standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, ...); the
batch processor exports from its own thread. With tracing off nothing here is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tallygate.core.money import usd_text
from tallygate.core.record import LedgerRecord
from tallygate.pipeline.call import Call

_OPERATIONS = {"chat": "chat", "embeddings": "embeddings", "messages": "chat", "responses": "chat"}
_PROPAGATOR = TraceContextTextMapPropagator()


def default_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class RequestTracer:
    """Turns each finished call into spans on `provider` (a TracerProvider of its own)."""

    def __init__(self, provider_types: Mapping[str, str], exporter: SpanExporter | None = None,
                 processor: Any = None) -> None:
        """`provider_types`: configured provider name -> its type (`openai`, `anthropic` ...)."""
        self.provider = TracerProvider(resource=Resource.create({"service.name": "tallygate"}))
        self.provider.add_span_processor(processor or BatchSpanProcessor(exporter or default_exporter()))
        self._tracer = self.provider.get_tracer("tallygate")
        self._types = dict(provider_types)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.provider.shutdown()  # flushes what is batched

    def call_finished(self, call: Call, r: LedgerRecord) -> None:
        op = _OPERATIONS.get(r.endpoint, r.endpoint)
        ctx = _PROPAGATOR.extract({"traceparent": call.trace_parent}) if call.trace_parent else None
        start = r.created_at * 1_000_000
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "tallygate.request_id": r.id, "tallygate.endpoint": r.endpoint,
            "tallygate.cost_usd": usd_text(r.cost_pico), "http.response.status_code": r.status,
            "tallygate.stream": r.stream,
        }
        if r.requested_model:
            attrs["gen_ai.request.model"] = r.requested_model
        if r.served_model:
            attrs["gen_ai.response.model"] = r.served_model
        if r.provider:
            attrs["gen_ai.provider.name"] = self._types.get(r.provider, r.provider)
            attrs["tallygate.provider"] = r.provider
        for name, n in (("gen_ai.usage.input_tokens", r.input_tokens), ("gen_ai.usage.output_tokens", r.output_tokens),
                        ("gen_ai.usage.cache_read.input_tokens", r.cached_tokens),
                        ("gen_ai.usage.cache_creation.input_tokens", r.cache_write_tokens),
                        ("gen_ai.usage.reasoning.output_tokens", r.reasoning_tokens)):
            attrs[name] = n
        if r.tags:
            attrs["tallygate.tags"] = list(r.tags)
        if r.key_id:
            attrs["tallygate.key.id"] = r.key_id
            attrs["tallygate.key.name"] = r.key_name or ""
        for k, v in r.labels.items():
            attrs[f"tallygate.key.label.{k}"] = v
        if r.error_type:
            attrs["error.type"] = r.error_type
        span = self._tracer.start_span(f"{op} {r.requested_model or ''}".strip(), context=ctx, kind=SpanKind.SERVER,
                                       start_time=start, attributes=attrs)
        if r.status >= 400:
            span.set_status(Status(StatusCode.ERROR, r.error_type or str(r.status)))
        with_parent = _in_span(span)
        offset = start
        for a in r.attempts:
            duration = int(a.latency_ms * 1_000_000)
            child_attrs: dict[str, Any] = {"gen_ai.operation.name": op, "gen_ai.request.model": a.model,
                                           "gen_ai.provider.name": self._types.get(a.provider, a.provider),
                                           "tallygate.provider": a.provider, "http.response.status_code": a.status}
            if a.target:
                child_attrs["tallygate.target"] = a.target
            if a.error:
                child_attrs["error.type"] = a.error
            child = self._tracer.start_span(f"{op} {a.model}", context=with_parent, kind=SpanKind.CLIENT,
                                            start_time=offset, attributes=child_attrs)
            if a.error or a.status >= 400:
                child.set_status(Status(StatusCode.ERROR, a.error or str(a.status)))
            child.end(end_time=offset + duration)
            offset += duration
        span.end(end_time=start + r.latency_us * 1000)


def _in_span(span: Any) -> Any:
    from opentelemetry.trace import set_span_in_context

    return set_span_in_context(span)
