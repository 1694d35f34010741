"""A translated request (Messages or Responses onto a provider that speaks neither) with a field
of the wrong type is a 400 naming that field, as a native provider would answer: never coerced
(`5` sent on as the text `"5"`), never a message about a `None` block, and recorded."""

from __future__ import annotations

import pytest

from tests.gateway import Gateway

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": [5]}], "messages[0].content[0]"),
    ([{"role": "user", "content": [{"text": "no type"}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ([{"role": "assistant", "content": [{"type": "text", "text": ["a"]}]}], "messages[0].content[0].text"),
    ([{"role": "assistant", "content": [7]}], "messages[0].content[0]"),
    ([{"role": "assistant", "content": [{"type": "tool_use", "id": 5, "name": "f", "input": {}}]}],
     "messages[0].content[0].id"),
    ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": None, "input": {}}]}],
     "messages[0].content[0].name"),
    ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}],
     "messages[0].content[0].input"),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": 5, "content": "ok"}]}],
     "messages[0].content[0].tool_use_id"),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "text", "text": 5}]}]}], "messages[0].content[0].content"),
    ([{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": 5}}]}], "messages[0].content[0].source"),
])
def test_translated_messages_field_of_wrong_type_is_400_naming_it(gateway: Gateway, api_key: str,
                                                                  messages: list, param: str) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": messages}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        status, headers, out = gateway.post_json(path, body, key=api_key)
        assert status == 400, (path, out)
        assert out["type"] == "error" and out["error"]["type"] == "invalid_request_error"
        message = out["error"]["message"]
        assert message.startswith(param + " ") or message.startswith(param + ":"), (path, message)
        assert "None" not in message, message
        assert gateway.log_record(headers["x-request-id"])["status"] == 400


def test_translated_tool_schema_that_is_not_an_object_is_400(gateway: Gateway, api_key: str) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [USER],
            "tools": [{"name": "f", "input_schema": 5}]}
    status, _, out = gateway.post_json("/v1/messages", body, key=api_key)
    assert status == 400 and out["error"]["message"].startswith("tools[0].input_schema ")


@pytest.mark.parametrize("items, param", [
    ([5], "input[0]"),
    (["hi"], "input[0]"),
    ([{"role": "user", "content": [5]}], "input[0].content[0]"),
    ([{"role": "user", "content": [{"type": "input_text", "text": 5}]}], "input[0].content[0].text"),
    ([{"type": "function_call", "call_id": 5, "name": "f", "arguments": "{}"}], "input[0].call_id"),
    ([{"type": "function_call", "call_id": "c", "name": 5, "arguments": "{}"}], "input[0].name"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": {"a": 1}}], "input[0].arguments"),
])
def test_translated_responses_field_of_wrong_type_is_400_naming_it(gateway: Gateway, api_key: str,
                                                                   items: list, param: str) -> None:
    status, headers, out = gateway.post_json("/v1/responses", {"model": "claude", "input": items}, key=api_key)
    assert status == 400, out
    assert out["error"]["param"] == param, out
    assert "None" not in out["error"]["message"], out
    assert gateway.log_record(headers["x-request-id"])["status"] == 400


@pytest.mark.parametrize("model", ["claude", "gpt-4o-mini"])
@pytest.mark.parametrize("field, value", [("temperature", 5), ("temperature", "hot"), ("top_p", 2)])
def test_sampling_fields_out_of_the_apis_range_are_400_native_or_translated(
        gateway: Gateway, api_key: str, model: str, field: str, value: object) -> None:
    """temperature and top_p are checked on /v1/messages (Anthropic's 0..1) and /v1/responses
    (OpenAI's 0..2 and 0..1) as on /v1/chat/completions, whichever provider serves the model."""
    status, headers, out = gateway.post_json("/v1/messages", {"model": model, "max_tokens": 8, "messages": [USER],
                                                              field: value}, key=api_key)
    assert status == 400 and out["error"]["message"].startswith(f"{field} must be a number"), out
    assert gateway.log_record(headers["x-request-id"])["status"] == 400
    status, _, out = gateway.post_json("/v1/responses", {"model": model, "input": "hi", field: value * 2 if
                                                         isinstance(value, int) else value}, key=api_key)
    assert status == 400 and out["error"]["param"] == field, out
