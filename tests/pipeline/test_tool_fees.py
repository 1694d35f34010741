"""Provider-run tools: priced per use from the price list, bounded before the request is sent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tallygate.errors import InvalidRequest
from tallygate.pipeline.budget import priced_bound
from tallygate.pipeline.pricing import PriceBook, Rate
from tallygate.pipeline.tool_fees import (
    DEFAULT_TOOL_CALLS,
    RESULT_TOKENS,
    SERVER_LOOP_ITERATIONS,
    ToolBound,
    anthropic_container,
    cap_tools,
    chat_searches,
    responses_tool_use,
)
from tallygate.settings import PricingOverride
from tallygate.types import Usage


def test_list_prices_give_web_and_file_searches_per_call_and_code_containers() -> None:
    book = PriceBook()
    claude = book.rate("anthropic", "claude-sonnet-4-5", None)
    assert claude.web_search == 10 * 10**9  # $10 per 1,000 searches, in picodollars per search
    assert claude.code_session == 5 * 10**10  # $0.05: one container-hour
    mini = book.rate("openai", "gpt-4o-mini", None)
    assert (mini.web_search, mini.file_search, mini.code_session) == (10**10, 25 * 10**8, 3 * 10**10)
    assert book.rate("openai", "gpt-4o-mini-search-preview", None).web_search == 10**10


def test_a_model_the_snapshot_gives_no_search_price_gets_its_vendors_standard_one() -> None:
    book = PriceBook()
    vertex = book.rate("vertex", "claude-sonnet-4-5", None)
    assert vertex.input == 3 * 10**6 and vertex.web_search == 10**10  # Anthropic's $10 / 1,000 searches
    unknown = book.rate("openai", "gpt-99-unreleased", None)
    assert unknown.source == "unpriced" and (unknown.web_search, unknown.file_search) == (10**10, 25 * 10**8)
    assert book.rate("self-hosted", "llama-3.1-8b", None).web_search == 0  # runs no provider tools


def test_a_config_price_keeps_the_list_fees_unless_it_sets_its_own() -> None:
    book = PriceBook()
    own = book.rate("anthropic", "claude-sonnet-4-5", PricingOverride(input_per_mtok=Decimal("3"),
                                                                       web_search_per_call=Decimal("0.02")))
    assert (own.input, own.web_search, own.code_session) == (3 * 10**6, 2 * 10**10, 5 * 10**10)
    listed = book.rate("anthropic", "claude-sonnet-4-5", PricingOverride(input_per_mtok=Decimal("3")))
    assert listed.web_search == 10**10


def test_a_rate_prices_tool_uses_exactly() -> None:
    rate = Rate(input=3, output=15, cached=0, cache_write=0, source="t", web_search=10**10, file_search=7,
                code_session=11)
    usage = Usage(input_tokens=100, output_tokens=10, web_searches=3, file_searches=2, code_sessions=4)
    assert rate.cost(usage) == 100 * 3 + 10 * 15 + 3 * 10**10 + 2 * 7 + 4 * 11


def test_anthropic_web_tools_get_the_bound_reserved_for() -> None:
    body = {"tools": [{"type": "web_search_20250305", "name": "web_search"},
                      {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2}]}
    bound = cap_tools(body, "messages", ["claude-sonnet-4-5"])
    assert body["tools"][0]["max_uses"] == DEFAULT_TOOL_CALLS  # sent upstream: the provider enforces it
    assert body["tools"][1]["max_content_tokens"] == RESULT_TOKENS
    assert bound == ToolBound(calls=DEFAULT_TOOL_CALLS, web=True, code_units=0, result_calls=DEFAULT_TOOL_CALLS + 2,
                              result_tokens=RESULT_TOKENS, passes=DEFAULT_TOOL_CALLS + 2,
                              open_results="tools[0].type")  # a search's results: no bounded size
    mine = {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}
    assert cap_tools(mine, "messages", []).calls == 2 and mine["tools"][0]["max_uses"] == 2


def test_anthropic_code_execution_is_bounded_by_the_server_loop() -> None:
    bound = cap_tools({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, "messages", [])
    assert (bound.calls, bound.code_units, bound.passes) == (0, 1, SERVER_LOOP_ITERATIONS)
    fetch = cap_tools({"tools": [{"type": "web_fetch_20250910", "max_uses": 3, "max_content_tokens": 50_000}]},
                      "messages", [])
    assert (fetch.result_calls, fetch.result_tokens, fetch.passes) == (3, 50_000, 3)
    assert fetch.open_results is None  # a fetch's content is capped (max_content_tokens)


@pytest.mark.parametrize("kind", ["tool_search_tool_regex_20251119", "tool_search_tool_bm25_20251119",
                                  "some_server_tool_20990101"])
def test_any_other_anthropic_server_tool_is_bounded_by_the_server_loop(kind: str) -> None:
    """Each use is another sampling pass reading the prompt again: 10 at most (then pause_turn)."""
    bound = cap_tools({"tools": [{"type": kind, "name": "t"}]}, "messages", [])
    assert (bound.passes, bound.open_results) == (SERVER_LOOP_ITERATIONS, "tools[0].type")
    client = [{"name": "f", "input_schema": {}}, {"type": "custom", "name": "g", "input_schema": {}},
              {"type": "bash_20250124", "name": "bash"}, {"type": "memory_20250818", "name": "memory"}]
    assert cap_tools({"tools": client}, "messages", []) == ToolBound()  # the client runs these


def test_results_of_no_bounded_size_are_bounded_by_the_context_window_of_each_pass() -> None:
    """A search's results fill at most what a pass can read: 3 further passes, each at most the window."""
    bound = ToolBound(result_calls=3, result_tokens=100, passes=3, open_results="tools[0].type", window=1000)
    assert bound.input_tokens(10, 5) == 10 + 3 * 1000


def test_results_read_are_bounded_by_the_worst_order_of_calls_and_passes() -> None:
    """3 calls, 3 further passes: at most 1 + 2 + 3 results read (the calls one before each pass);
    3 calls, 1 further pass: 3 results (all calls first)."""
    assert ToolBound(result_calls=3, result_tokens=100, passes=3).input_tokens(10, 0) == 10 + 3 * 10 + 600
    assert ToolBound(result_calls=3, result_tokens=100, passes=1).input_tokens(10, 5) == 10 + 15 + 300


@pytest.mark.parametrize(("where", "body", "param"), [
    ("messages", {"tools": [{"type": "web_search_20250305", "max_uses": 0}]}, "tools[0].max_uses"),
    ("messages", {"tools": [{"type": "web_fetch_20250910", "max_content_tokens": "9"}]},
     "tools[0].max_content_tokens"),
    ("responses", {"tools": [{"type": "web_search"}], "max_tool_calls": -1}, "body.max_tool_calls"),
])
def test_a_bound_that_is_not_a_positive_integer_is_a_400_naming_it(where: str, body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        cap_tools(body, where, [])
    assert err.value.param == param


def test_responses_built_in_tools_are_bounded_by_max_tool_calls() -> None:
    body = {"tools": [{"type": "function", "name": "f"}, {"type": "web_search"}, {"type": "file_search"},
                      {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}]}
    bound = cap_tools(body, "responses", ["gpt-5"])
    assert body["max_tool_calls"] == DEFAULT_TOOL_CALLS
    assert bound == ToolBound(calls=DEFAULT_TOOL_CALLS, web=True, file=True, code_units=4,
                              result_calls=DEFAULT_TOOL_CALLS, result_tokens=RESULT_TOKENS, passes=DEFAULT_TOOL_CALLS,
                              open_results="tools[1].type")
    functions_only = {"tools": [{"type": "function", "name": "f"}]}
    assert cap_tools(functions_only, "responses", []) == ToolBound() and "max_tool_calls" not in functions_only


def test_chat_on_a_search_model_reserves_a_search_per_choice() -> None:
    assert cap_tools({"n": 2}, "chat", ["gpt-4o-mini", "gpt-4o-mini-search-preview"]).calls == 2
    assert cap_tools({"web_search_options": {}}, "chat", ["gpt-4o-mini"]) == ToolBound()
    assert chat_searches("gpt-4o-search-preview", {}) == 1 and chat_searches("gpt-4o", {}) == 0


def test_the_priced_bound_adds_fees_results_and_passes_at_the_dearest_rate() -> None:
    rate = Rate(input=2, output=5, cached=0, cache_write=3, source="t", web_search=1000, file_search=4000,
                code_session=100)
    tools = ToolBound(calls=2, web=True, file=True, code_units=4, result_calls=3, result_tokens=50, passes=2)
    prompt, output = 10, 7
    read = prompt + 2 * (prompt + output) + 50 * (3 + 2)  # 2 calls, then 1: results read 2 + 3 times
    assert priced_bound(prompt, output, [rate], tools) == read * 3 + output * 5 + 2 * 4000 + 4 * 100


def test_responses_output_items_are_counted_as_billed() -> None:
    body = {"tools": [{"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "16g"}}]}
    response = {"output": [{"type": "web_search_call", "id": "ws_1"}, {"type": "web_search_call", "id": "ws_2"},
                           {"type": "file_search_call", "id": "fs_1"},
                           {"type": "code_interpreter_call", "container_id": "cntr_1"},
                           {"type": "code_interpreter_call", "container_id": "cntr_1"},
                           {"type": "message"}]}
    assert responses_tool_use(response, body) == (2, 1, 16)
    named = {"tools": [{"type": "code_interpreter", "container": "cntr_1"}]}  # created and billed before
    assert responses_tool_use(response, named) == (2, 1, 0)


def test_an_anthropic_container_is_billed_only_for_a_code_execution_tool() -> None:
    message = {"container": {"id": "container_1", "expires_at": "2026-12-06T23:00:00Z"}}
    code = {"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}
    search = {"tools": [{"type": "web_search_20260209", "name": "web_search"}]}  # filters in a free container
    assert anthropic_container(message, code) == 1
    assert anthropic_container(message, search) == 0 and anthropic_container({"container": None}, code) == 0
