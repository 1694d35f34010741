"""OpenAI Chat Completions requests translated for Anthropic (`to_anthropic`), checked against fixtures
shaped like Anthropic's wire data. The replies: `test_anthropic_replies.py`."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from tallygate.errors import InvalidRequest
from tallygate.providers.anthropic_translate import to_anthropic

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-5-20250929"


def fixture(name: str) -> dict:
    return orjson.loads((FIXTURES / name).read_bytes())


def req(messages: list[dict] | None = None, **extra) -> dict:
    return {"model": "claude", "messages": messages or [{"role": "user", "content": "hi"}], **extra}


# ---------------------------------------------------------------- request


def recorded_request() -> dict:
    """The recorded request without `seed` (refused: Anthropic has no field for it) and `metadata`."""
    return {k: v for k, v in fixture("openai_request_tools.json").items() if k not in ("seed", "metadata")}


def test_recorded_tool_conversation_translates_to_expected_anthropic_request():
    expected = fixture("anthropic_request_tools.json")
    assert to_anthropic(recorded_request(), MODEL) == expected


def test_translation_does_not_mutate_the_caller_body():
    body = recorded_request()
    before = copy.deepcopy(body)
    to_anthropic(body, MODEL)
    assert body == before


def test_system_and_developer_messages_join_into_top_level_system():
    out = to_anthropic(req([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
    ]), MODEL)
    assert out["system"] == "Be brief.\n\nUse French."
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_system_cache_control_survives_as_system_blocks():
    part = {"type": "text", "text": "Long policy", "cache_control": {"type": "ephemeral"}}
    out = to_anthropic(req([{"role": "system", "content": [part]}, {"role": "user", "content": "hi"}]), MODEL)
    assert out["system"] == [{"type": "text", "text": "Long policy", "cache_control": {"type": "ephemeral"}}]


def test_consecutive_same_role_messages_merge_so_roles_alternate():
    out = to_anthropic(req([
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
    ]), MODEL)
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"},
                                          {"type": "text", "text": "four"}]},
        {"role": "user", "content": [{"type": "text", "text": "five"}]},
    ]


def test_empty_text_is_dropped_because_anthropic_rejects_empty_blocks():
    out = to_anthropic(req([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
    ], tools=[{"type": "function", "function": {"name": "f"}}]), MODEL)
    assert out["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_http_image_url_becomes_url_source():
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    out = to_anthropic(req([{"role": "user", "content": [part]}]), MODEL)
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]


def test_jpg_data_url_is_sent_as_image_jpeg():
    part = {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}}
    out = to_anthropic(req([{"role": "user", "content": [part]}]), MODEL)
    assert out["messages"][0]["content"][0]["source"] == {
        "type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}


def test_pdf_file_part_becomes_document_block():
    part = {"type": "file",
            "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
    out = to_anthropic(req([{"role": "user", "content": [part]}]), MODEL)
    assert out["messages"][0]["content"] == [{"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]


@pytest.mark.parametrize("url", ["data:image/bmp;base64,Qk0=", "data:image/png,raw", "ftp://x/y.png", ""])
def test_unsupported_image_urls_are_rejected_naming_the_part(url):
    part = {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic(req([{"role": "user", "content": "look"}, {"role": "user", "content": [part]}]), MODEL)
    assert exc.value.param == "messages[1].content[0].image_url.url"


def test_max_tokens_defaults_and_prefers_max_completion_tokens():
    assert to_anthropic(req(), MODEL)["max_tokens"] == 4096
    assert to_anthropic(req(), MODEL, default_max_tokens=1000)["max_tokens"] == 1000
    assert to_anthropic(req(max_tokens=50), MODEL)["max_tokens"] == 50
    assert to_anthropic(req(max_tokens=50, max_completion_tokens=70), MODEL)["max_tokens"] == 70


@pytest.mark.parametrize("param, value", [
    ("max_tokens", 0), ("max_tokens", "10"), ("max_completion_tokens", 1.5),
    ("temperature", 2.5), ("temperature", -0.1), ("temperature", True), ("top_p", 1.2),
    ("stop", 3), ("stop", ["ok", None]), ("stream", "yes"), ("user", 42),
])
def test_out_of_range_or_mistyped_sampling_params_are_rejected(param, value):
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic(req(**{param: value}), MODEL)
    assert exc.value.param == param


@pytest.mark.parametrize("openai, anthropic", [(0, 0), (0.7, 0.7), (1, 1), (1.5, 1.0), (2, 1.0)])
def test_temperature_is_clamped_to_anthropic_range_not_scaled(openai, anthropic):
    assert to_anthropic(req(temperature=openai), MODEL)["temperature"] == anthropic


def test_sampling_and_stop_params_pass_through():
    out = to_anthropic(req(top_p=0.9, top_k=40, stop=["END", "STOP"], stream=False), MODEL)
    got = (out["top_p"], out["top_k"], out["stop_sequences"], out["stream"])
    assert got == (0.9, 40, ["END", "STOP"], False)


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "lookup"}}, {"type": "tool", "name": "lookup"}),
])
def test_tool_choice_maps_to_anthropic_tool_choice(choice, expected):
    assert to_anthropic(req(tools=TOOLS, tool_choice=choice), MODEL)["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    out = to_anthropic(req(tools=TOOLS, parallel_tool_calls=False), MODEL)
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    out = to_anthropic(req(tools=TOOLS, tool_choice="required", parallel_tool_calls=False), MODEL)
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_default_tool_choice_is_left_to_anthropic():
    assert "tool_choice" not in to_anthropic(req(tools=TOOLS), MODEL)
    assert "tool_choice" not in to_anthropic(req(tool_choice="none"), MODEL)


@pytest.mark.parametrize("body, param", [
    (req(tool_choice="required"), "tool_choice"),
    (req(tools=TOOLS, tool_choice={"type": "allowed_tools"}), "tool_choice"),
    (req(tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools[0]"),
    (req(tools={"type": "function"}), "tools"),
])
def test_bad_tools_or_tool_choice_are_rejected(body, param):
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic(body, MODEL)
    assert exc.value.param == param


@pytest.mark.parametrize("field, value", [
    ("n", 2), ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"50256": -100}),
    ("frequency_penalty", 0.5), ("presence_penalty", -1),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("modalities", ["text", "audio"]), ("audio", {"voice": "alloy", "format": "wav"}),
    ("functions", [{"name": "f"}]), ("function_call", "auto"),
])
def test_params_anthropic_cannot_honour_raise_naming_the_param(field, value):
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic(req(**{field: value}), MODEL)
    assert exc.value.param == field
    assert exc.value.status == 400


def test_fields_that_ask_for_nothing_are_accepted():
    out = to_anthropic(req(
        n=1, logprobs=False, frequency_penalty=0, presence_penalty=0, store=False,
        service_tier="auto", stream_options={"include_usage": True}, modalities=["text"],
        parallel_tool_calls=True, response_format={"type": "text"},
    ), MODEL)
    assert set(out) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(("field", "value"), [("seed", 1), ("store", True),
                                              ("service_tier", "flex"), ("prediction", {"type": "content"}),
                                              ("web_search_options", {}), ("verbosity", "low")])
def test_fields_anthropic_has_no_place_for_are_refused(field: str, value: object):
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic(req(**{field: value}), MODEL)
    assert exc.value.param == field


def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens():
    assert to_anthropic(req(reasoning_effort="high", max_tokens=30000), MODEL)["thinking"] == {
        "type": "enabled", "budget_tokens": 24576}
    assert to_anthropic(req(reasoning_effort="high", max_tokens=5000), MODEL)["thinking"]["budget_tokens"] == 4999
    assert to_anthropic(req(reasoning_effort="none"), MODEL)["thinking"] == {"type": "disabled"}
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic(req(reasoning_effort="low", max_tokens=1000), MODEL)
    assert exc.value.param == "reasoning_effort"


def test_user_becomes_metadata_user_id():
    assert to_anthropic(req(user="u-1"), MODEL)["metadata"] == {"user_id": "u-1"}


def test_chat_metadata_changes_no_answer_and_is_not_refused():
    # OpenAI's chat `metadata` tags stored completions; chat front ends send it with every request
    assert "metadata" not in to_anthropic(req(metadata={"k": "v"}), MODEL)


@pytest.mark.parametrize("messages, param", [
    ([], "messages"),
    ([{"role": "system", "content": "only system"}], "messages"),
    ([{"role": "user", "content": "a"}, "hello"], "messages[1]"),
    ([{"role": "user", "content": "a"}, {"content": "b"}], "messages[1].role"),
    ([{"role": "user", "content": "a"}, {"role": "function", "content": "b"}], "messages[1].role"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "user", "content": 7}], "messages[2].content"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
     "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}],
     "messages[0].content[0].type"),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}], "messages[1].tool_call_id"),
    ([{"role": "assistant", "tool_calls": {}}], "messages[0].tool_calls"),
    ([{"role": "assistant", "tool_calls": [{"id": "t", "function": {"arguments": "{}"}}]}],
     "messages[0].tool_calls[0].function.name"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}], "messages[0].tool_calls[0].id"),
    ([{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{oops"}}]}],
     "messages[0].tool_calls[0].function.arguments"),
    ([{"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "[1]"}}]}],
     "messages[0].tool_calls[0].function.arguments"),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
     "messages[0].content[0].file.file_data"),
])
def test_malformed_messages_raise_invalid_request_naming_the_field(messages, param):
    with pytest.raises(InvalidRequest) as exc:
        to_anthropic({"model": "claude", "messages": messages}, MODEL)
    assert exc.value.param == param
    assert exc.value.message.startswith(param)
