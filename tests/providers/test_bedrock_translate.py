"""Chat requests to Converse: the fields Converse has a place for are carried there (reasoning
as Claude's thinking, the end user and metadata as `requestMetadata`), the others refused."""

from __future__ import annotations

import pytest

from tallygate.errors import InvalidRequest
from tallygate.providers.bedrock_messages import messages_to_converse
from tallygate.providers.bedrock_translate import to_converse

CLAUDE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HI = [{"role": "user", "content": "hi"}]


def test_reasoning_effort_is_claudes_thinking_in_additional_model_request_fields() -> None:
    out = to_converse({"model": CLAUDE, "messages": HI, "max_completion_tokens": 4096, "reasoning_effort": "medium"})
    assert out["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 4095}}
    with pytest.raises(InvalidRequest) as exc:
        to_converse({"model": "amazon.nova-pro-v1:0", "messages": HI, "reasoning_effort": "low"})
    assert exc.value.param == "reasoning_effort"


def test_user_and_metadata_are_request_metadata() -> None:
    out = to_converse({"model": CLAUDE, "messages": HI, "user": "u-1", "metadata": {"team": "search"}})
    assert out["requestMetadata"] == {"team": "search", "user": "u-1"}


@pytest.mark.parametrize(("field", "value"), [("seed", 7), ("service_tier", "priority"), ("frequency_penalty", 0.5),
                                              ("prediction", {"type": "content", "content": "x"}),
                                              ("web_search_options", {}), ("verbosity", "low")])
def test_what_converse_has_no_place_for_is_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_converse({"model": CLAUDE, "messages": HI, field: value})
    assert exc.value.param == field


def test_messages_thinking_and_effort_reach_claude_and_are_hints_elsewhere() -> None:
    ask = {"max_tokens": 2000, "messages": HI, "thinking": {"type": "enabled", "budget_tokens": 1024},
           "output_config": {"effort": "low"}, "metadata": {"user_id": "u-1"}}
    claude = messages_to_converse({**ask, "model": CLAUDE})
    assert claude["additionalModelRequestFields"] == {"thinking": ask["thinking"], "output_config": {"effort": "low"}}
    assert claude["requestMetadata"] == {"user_id": "u-1"}
    assert "additionalModelRequestFields" not in messages_to_converse({**ask, "model": "amazon.nova-pro-v1:0"})
    with pytest.raises(InvalidRequest) as exc:
        messages_to_converse({**ask, "model": CLAUDE, "service_tier": "auto"})
    assert exc.value.param == "service_tier"


def test_turning_parallel_tool_use_off_is_refused_on_converse() -> None:
    """Converse's toolChoice has no such switch: dropping it would let the model call tools in parallel."""
    with pytest.raises(InvalidRequest) as exc:
        messages_to_converse({"model": CLAUDE, "max_tokens": 10, "messages": HI,
                              "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                              "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}})
    assert exc.value.param == "tool_choice.disable_parallel_tool_use"


def test_a_null_max_completion_tokens_leaves_max_tokens_the_cap() -> None:
    """`max_completion_tokens: null` is no cap: `max_tokens` is (the reservation bounds it)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10,
            "max_completion_tokens": None}
    assert to_converse(body)["inferenceConfig"]["maxTokens"] == 10
