"""Provider failures become OpenAI-shaped errors (or an error event inside a started stream),
each leaving its ledger record, and never leak the provider's body or our credentials."""

from __future__ import annotations

import openai
import pytest

from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("model, error, status, code", [
    ("fail-400", openai.BadRequestError, 400, "upstream_rejected"),
    ("fail-401", openai.InternalServerError, 502, "upstream_auth_failed"),
    ("fail-429", openai.RateLimitError, 429, "upstream_rate_limited"),
    ("fail-500", openai.InternalServerError, 502, "upstream_server_error"),
    ("fail-503", openai.InternalServerError, 503, "upstream_overloaded"),
    ("slow-3000", openai.InternalServerError, 504, "upstream_timeout"),
    ("refused", openai.InternalServerError, 502, "upstream_unavailable"),
    ("reset", openai.InternalServerError, 502, "upstream_unavailable"),
    ("garbage", openai.InternalServerError, 502, "upstream_bad_response"),
    ("claude-fail-400", openai.BadRequestError, 400, "upstream_rejected"),
    ("claude-fail-429", openai.RateLimitError, 429, "upstream_rate_limited"),
    ("claude-fail-500", openai.InternalServerError, 502, "upstream_server_error"),
    ("claude-slow-3000", openai.InternalServerError, 504, "upstream_timeout"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failure_is_mapped_and_recorded(client: openai.OpenAI, gateway: Gateway, model: str,
                                                 error: type, status: int, code: str, stream: bool) -> None:
    with pytest.raises(error) as exc:
        result = client.chat.completions.create(model=model, messages=HELLO, stream=stream)
        if stream:
            list(result)
    assert exc.value.status_code == status
    body = exc.value.body
    assert body["code"] == code
    assert "sk-upstream" not in str(body) and "sk-ant-up" not in str(body)
    record = gateway.log_record(exc.value.response.headers["x-request-id"])
    assert (record["status"], record["error"]["type"], record["error"]["code"]) == (status, body["type"], code)
    assert record["attempts"] and record["attempts"][0]["status"] == status
    if model.endswith("429"):
        assert exc.value.response.headers.get("retry-after") == "2"
    retry = "false" if status in (400, 401, 403) or code == "upstream_auth_failed" else "true"
    assert exc.value.response.headers["x-should-retry"] == retry


def test_stream_cut_midway_ends_with_error_event_and_partial_record(client: openai.OpenAI,
                                                                     gateway: Gateway) -> None:
    stream = client.chat.completions.create(model="cut-stream", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks should have reached the client"
    assert "closed the connection" in exc.value.message or "ended the stream" in exc.value.message
    record = gateway.log_record(received[0].id)
    assert record["partial"] is True and record["status"] == 502 and record["stream"] is True


def test_anthropic_stream_cut_midway(client: openai.OpenAI, gateway: Gateway) -> None:
    stream = client.chat.completions.create(model="claude-cut-stream", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    record = gateway.log_record(received[0].id)
    assert record["partial"] is True and record["pricing_source"].endswith("(estimated)")
    assert record["usage"]["input_tokens"] > 0  # the prompt, estimated: the provider never said


def test_gateway_keeps_serving_after_failures(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices
