"""OpenTelemetry spans, checked with the SDK's in-memory exporter: one per request with a child
per upstream attempt, GenAI semantic-convention attributes, Tallygate's own, the caller's
`traceparent` honoured, and no prompt or completion text anywhere."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.gateway import InProcessGateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SECRET_PROMPT = "my very private prompt"


@pytest.fixture(scope="module")
def traced(upstream, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
           ) -> Iterator[tuple[InProcessGateway, InMemorySpanExporter]]:
    from tests.conftest import standard_config

    config = standard_config(upstream)
    config["tracing"] = {"enabled": True}
    config["policies"] = {"safe": {"strategy": "fallback", "targets": ["fail-503", "gpt-4o-mini"]}}
    exporter = InMemorySpanExporter()
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), config)
    gw.span_exporter = exporter
    gw.start()
    yield gw, exporter
    gw.stop()


def _spans(gw: InProcessGateway, exporter: InMemorySpanExporter, request_id: str | None = None,
           model: str | None = None) -> list:
    """The finished spans, once the request's own is among them (the proxy hands a request to its
    observers just after the answer's last byte, so the client may be faster)."""
    deadline = time.monotonic() + 5
    while True:
        gw.app.tracer.provider.force_flush()
        spans = list(exporter.get_finished_spans())
        if any(s.attributes.get("tallygate.request_id") == request_id or s.attributes.get("gen_ai.request.model")
               == model for s in spans if s.kind == SpanKind.SERVER) or time.monotonic() > deadline:
            return spans
        time.sleep(0.02)


def test_request_span_has_genai_attributes_attempt_children_and_honours_traceparent(traced) -> None:  # type: ignore[no-untyped-def]
    gw, exporter = traced
    key = gw.create_key("traced", team="growth")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        resp = client.chat.completions.create(
            model="policy/safe", messages=[{"role": "user", "content": SECRET_PROMPT}],
            extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"}, extra_body={"request_tags": ["feature/x"]})
    spans = _spans(gw, exporter, request_id=resp.id)
    server = next(s for s in spans if s.attributes.get("tallygate.request_id") == resp.id)
    assert server.kind == SpanKind.SERVER and server.name == "chat policy/safe"
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "policy/safe" and a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert "gen_ai.usage.cache_read.input_tokens" in a and "gen_ai.usage.reasoning.output_tokens" in a
    assert a["tallygate.tags"] == ("feature/x",) and a["tallygate.key.label.team"] == "growth"
    assert a["tallygate.key.name"] == "traced" and a["tallygate.cost_usd"].replace(".", "").isdigit()
    children = sorted((s for s in spans if s.parent and s.parent.span_id == server.context.span_id),
                      key=lambda s: s.start_time)
    assert [c.attributes["gen_ai.request.model"] for c in children] == ["fail-503", "gpt-4o-mini"]
    assert all(c.kind == SpanKind.CLIENT for c in children)
    assert children[0].attributes["error.type"] and children[1].attributes["http.response.status_code"] == 200
    assert server.start_time <= children[0].start_time <= children[1].end_time <= server.end_time
    text = repr([(s.name, dict(s.attributes)) for s in spans])
    assert SECRET_PROMPT not in text and "Echo" not in text


def test_failed_request_span_is_an_error_and_starts_a_trace_without_traceparent(traced) -> None:  # type: ignore[no-untyped-def]
    gw, exporter = traced
    key = gw.create_key("traced2")
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="fail-500", messages=[{"role": "user", "content": "x"}])
    spans = _spans(gw, exporter, model="fail-500")
    server = [s for s in spans
              if s.attributes.get("gen_ai.request.model") == "fail-500" and s.kind == SpanKind.SERVER][-1]
    assert server.parent is None and not server.status.is_ok and server.attributes["error.type"]
