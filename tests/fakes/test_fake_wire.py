"""The fake's wire helpers on their own: scripted tool calls and the one-hour cache write scenario."""
from __future__ import annotations

from .wire import parse_scenario, tool_call
from .wire_anthropic import anthropic_usage


def test_prompt_scripts_the_tool_call_of_an_agent_that_always_offers_tools():
    tools = [{"name": "Agent"}, {"type": "function", "function": {"name": "Read"}}]
    ask = [{"role": "user", "content": [{"type": "text", "text": 'go [[call Read {"file_path": "/x"}]]'}]}]
    assert tool_call({"tools": tools, "messages": ask}) == ("Read", '{"file_path":"/x"}')
    plain = [{"role": "user", "content": "[[no tools]] hi"}]
    assert tool_call({"tools": tools, "messages": plain}) is None
    unknown = [{"role": "user", "content": "[[call Nope {}]]"}]
    assert tool_call({"tools": tools, "messages": unknown}) is None
    answered = [*ask, {"role": "tool", "content": "file text"}]
    assert tool_call({"tools": tools, "messages": answered}) is None  # the tool answered: final text
    assert tool_call({"tools": tools, "messages": [{"role": "user", "content": "hi"}]})[0] == "Agent"


def test_one_hour_cache_write_scenario_reports_the_ttl_split():
    usage = anthropic_usage(10, 2, parse_scenario("cachewrite1h-30"))
    assert usage["cache_creation_input_tokens"] == 30
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 30}
