"""The pure Gemini translations: what reaches Gemini, what comes back, and what is refused."""

from __future__ import annotations

import orjson
import pytest

from tallygate.errors import InvalidRequest
from tallygate.providers.gemini_translate import GeminiStreamTranslator, gemini_error, gemini_usage, to_gemini
from tallygate.types import Usage


def test_thinking_is_billed_output_and_cached_content_part_of_the_prompt() -> None:
    usage = gemini_usage({"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 20,
                          "thoughtsTokenCount": 30, "toolUsePromptTokenCount": 5, "totalTokenCount": 155})
    assert usage == Usage(input_tokens=105, output_tokens=50, cached_tokens=60, reasoning_tokens=30)


def test_stream_without_finish_reason_is_unfinished_and_usage_is_the_last_metadata() -> None:
    t = GeminiStreamTranslator("id", 0, "m")
    t.feed({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}], "usageMetadata": {"promptTokenCount": 4}})
    assert not t.finished
    chunks = t.feed({"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS"}],
                     "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2}})
    assert t.finished and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert t.usage_chunk()["usage"]["completion_tokens"] == 2


def test_a_stream_of_two_candidates_is_complete_only_when_both_finished() -> None:
    """The provider stops reading at `complete` (then only the body's end is read)."""
    t = GeminiStreamTranslator("id", 0, "m", candidates=2)
    t.feed({"candidates": [{"index": 1, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
                           {"index": 0, "content": {"parts": [{"text": "b"}]}}]})
    assert t.finished and not t.complete
    t.feed({"candidates": [{"index": 1, "content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}]})
    assert not t.complete  # the same candidate again
    t.feed({"candidates": [{"index": 0, "content": {"parts": [{"text": "c"}]}, "finishReason": "STOP"}]})
    assert t.complete


def test_a_blocked_prompt_completes_the_stream() -> None:
    t = GeminiStreamTranslator("id", 0, "m", candidates=3)
    chunks = t.feed({"promptFeedback": {"blockReason": "SAFETY"}})
    assert t.complete and chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "{}"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "max"}, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 2}}, "logit_bias"),
    ({"messages": [{"role": "critic", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "hi"}], "cached_content": "abc"}, "cached_content"),
])
def test_what_gemini_cannot_take_is_a_400_naming_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        to_gemini(body)
    assert err.value.param == param


def test_turns_roles_and_tool_choice() -> None:
    out = to_gemini({"messages": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "a"},
                                  {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
                     "tool_choice": {"type": "function", "function": {"name": "f"}}, "max_tokens": 9})
    assert out["systemInstruction"] == {"parts": [{"text": "rules"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                               {"role": "model", "parts": [{"text": "c"}]}]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
    assert out["generationConfig"] == {"maxOutputTokens": 9}


@pytest.mark.parametrize(("status", "body", "gateway_status", "retryable"), [
    (400, {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                     "details": [{"reason": "API_KEY_INVALID"}]}}, 502, False),
    (400, {"error": {"code": 400, "message": "bad schema", "status": "INVALID_ARGUMENT"}}, 400, False),
    (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}, 429, True),
    (503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}, 503, True),
])
def test_google_errors_map_to_status_and_retryability(status: int, body: dict, gateway_status: int,
                                                      retryable: bool) -> None:
    err = gemini_error("g", status, orjson.dumps(body), {"retry-after": "3"})
    assert (err.status, err.retryable, err.retry_after) == (gateway_status, retryable, 3.0)


def test_a_null_max_completion_tokens_leaves_max_tokens_the_cap() -> None:
    """`max_completion_tokens: null` is no cap: `max_tokens` is (the reservation bounds it)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10,
            "max_completion_tokens": None}
    assert to_gemini(body)["generationConfig"]["maxOutputTokens"] == 10
