"""Reservations against monthly limits: exact, never leaking, reset at the UTC month boundary."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallygate.core.timebuckets import month_start
from tallygate.errors import BudgetExceeded, InvalidRequest
from tallygate.pipeline.budget import DEFAULT_MAX_TOKENS, TOOLS_TOKENS, MemoryBudget, Scope, prompt_bound, worst_case
from tallygate.pipeline.image_tokens import MAX_IMAGE_TOKENS
from tallygate.pipeline.output_cap import cap_output
from tallygate.pipeline.pricing import Rate


def test_one_reservation_holds_against_every_limited_scope_or_none() -> None:
    budget = MemoryBudget()
    team = Scope("label", "b1", "team growth", 100)
    key = Scope("key", "k", "key", 1000)
    free = Scope("key", "k2", "unlimited", None)
    held = budget.reserve_now([key, team, free], 80)
    assert (budget.reserved("k"), budget.reserved("b1"), budget.reserved("k2")) == (80, 80, 0)
    with pytest.raises(BudgetExceeded):
        budget.reserve_now([key, team], 30)  # the key has room, the team does not: nothing is held
    assert (budget.reserved("k"), budget.reserved("b1")) == (80, 80)
    budget.settle(held, 50)
    assert [budget.spend(s) for s in ("k", "b1", "k2")] == [50, 50, 50]
    assert budget.reserved("k") == budget.reserved("b1") == 0


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def test_refuses_what_does_not_fit_and_counts_reservations() -> None:
    budget = MemoryBudget()
    a = budget.reserve_now([Scope("key", "k", "key", 100)], 60)
    with pytest.raises(BudgetExceeded) as exc:
        budget.reserve_now([Scope("key", "k", "key", 100)], 50)
    assert exc.value.status == 402 and ("x-should-retry", "false") in [
        (k.decode(), v.decode()) for k, v in exc.value.headers()]
    budget.settle(a, 30)
    assert budget.spend("k") == 30 and budget.reserved("k") == 0
    budget.reserve_now([Scope("key", "k", "key", 100)], 70)  # 30 spent + 70 held = exactly the limit
    with pytest.raises(BudgetExceeded):
        budget.reserve_now([Scope("key", "k", "key", 100)], 1)


def test_failed_requests_release_their_reservation_exactly() -> None:
    budget = MemoryBudget()
    holds = [budget.reserve_now([Scope("key", "k", "key", 10**9)], 7) for _ in range(50)]
    for h in holds:
        budget.settle(h, 0)
    assert budget.reserved("k") == 0 and budget.spend("k") == 0


def test_keys_without_limit_are_tracked_but_never_refused() -> None:
    budget = MemoryBudget()
    h = budget.reserve_now([Scope("key", "k", "key", None)], 10**15)
    assert h.amount == 0 and budget.reserved("k") == 0
    budget.settle(h, 42)
    assert budget.spend("k") == 42


def test_spend_resets_at_the_utc_month_boundary() -> None:
    clock = Clock(dt.datetime(2026, 11, 30, 23, 59, 59, tzinfo=dt.UTC))
    budget = MemoryBudget(clock)
    budget.load({"k": 90}, month_start(2026, 11))
    with pytest.raises(BudgetExceeded):
        budget.reserve_now([Scope("key", "k", "key", 100)], 20)
    straddling = budget.reserve_now([Scope("key", "k", "key", 100)], 10)
    clock.now = dt.datetime(2026, 12, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp()
    assert budget.spend("k") == 0
    budget.settle(straddling, 10)  # started in November: not December's spend
    assert budget.spend("k") == 0 and budget.reserved("k") == 0
    budget.reserve_now([Scope("key", "k", "key", 100)], 100)


def test_loading_last_months_totals_is_ignored() -> None:
    budget = MemoryBudget(Clock(dt.datetime(2026, 12, 5, tzinfo=dt.UTC)))
    budget.load({"k": 99}, month_start(2026, 11))
    assert budget.spend("k") == 0


def test_worst_case_prices_prompt_and_max_tokens_over_every_target() -> None:
    cheap = Rate(input=1, output=2, cached=1, cache_write=1, source="t")
    dear = Rate(input=10, output=20, cached=1, cache_write=12, source="t")
    body = {"messages": [{"role": "user", "content": "x" * 3000}], "max_tokens": 100}
    prompt = worst_case(body, "chat", [cheap]) - 100 * 2
    assert 3000 <= prompt <= 3080  # 3000 bytes at a token each, plus the JSON around them (63 bytes)
    assert worst_case(body, "chat", [cheap, dear]) == prompt * 12 + 100 * 20
    assert worst_case({"messages": []}, "chat", [cheap]) >= DEFAULT_MAX_TOKENS * 2


def test_worst_case_counts_every_part_of_the_prompt_but_images_at_a_flat_rate() -> None:
    rate = Rate(input=1, output=0, cached=1, cache_write=1, source="t")
    big = "y" * 30_000
    for message in ({"role": "assistant", "tool_calls": [{"type": "function",
                                                          "function": {"name": "f", "arguments": big}}]},
                    {"role": "user", "content": [{"type": "file", "file": {"file_data": big}}]},
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": big}}]},
                    {"role": "tool", "tool_call_id": "1", "content": big}):
        assert worst_case({"messages": [message]}, "chat", [rate]) >= 10_000, message
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:" + big}}]}
    assert worst_case({"messages": [image]}, "chat", [rate], image_tokens=1600) < 2_000
    assert worst_case({"messages": [image]}, "chat", [rate]) >= MAX_IMAGE_TOKENS  # a model no table knows
    assert worst_case({"messages": [], "tools": [{"schema": big}]}, "chat", [rate]) >= 10_000
    assert 900 <= worst_case({"input": [[1] * 900]}, "embeddings", [rate]) < 950  # a token an id


def test_the_prompt_bound_is_a_token_per_byte_whatever_the_script() -> None:
    """Every tokenizer spends at least a byte a token: the bound holds for text built to cost the most."""
    for text in ("\U0001F9EC" * 100, "\u9F98" * 100, "é" * 100, "!@#$" * 25):
        body = {"messages": [{"role": "user", "content": text}]}
        assert prompt_bound(body, "chat") >= len(text.encode()), text[:4]
    assert prompt_bound({"messages": [], "tools": [{"type": "function"}]}, "chat") >= TOOLS_TOKENS


_TEXT = st.text(st.characters(exclude_categories=("Cs",)))  # what orjson writes (no lone surrogates)
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | _TEXT,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                     max_leaves=20)


@given(st.dictionaries(_TEXT, _JSON, max_size=4))
@settings(max_examples=300, deadline=None)
def test_the_prompt_bound_holds_the_compact_json_text_escapes_included(body: dict) -> None:
    """A provider may read a value as its JSON text (a tool's input): every byte of it, a control
    character's six-byte escape and a quote's two included, is under the bound."""
    body = {"messages": [{"role": "user", "content": "x"}], "tool_input": body}
    assert prompt_bound(body, "chat") >= len(orjson.dumps(body))


@pytest.mark.parametrize(("endpoint", "body"), [
    ("chat", {}), ("chat", {"max_output_tokens": 10}), ("chat", {"max_tokens": 10, "max_completion_tokens": 900}),
    ("chat", {"max_completion_tokens": 10, "max_tokens": 900}), ("chat", {"n": 3, "max_tokens": 50}),
    ("messages", {"max_tokens": 900, "max_completion_tokens": 10}),
    ("responses", {}), ("responses", {"max_tokens": 10}), ("responses", {"max_output_tokens": 900, "max_tokens": 10}),
])
def test_every_translation_sends_at_most_the_output_reserved_for(endpoint: str, body: dict) -> None:
    from tallygate.providers.anthropic_translate import to_anthropic
    from tallygate.providers.messages_translate import messages_to_chat
    from tallygate.providers.responses_translate import responses_to_chat

    prompt = {"input": "hi"} if endpoint == "responses" else {"messages": [{"role": "user", "content": "hi"}]}
    body = {**body, **prompt}
    bound = cap_output(body, endpoint)
    try:
        if endpoint == "chat":
            sent = [max(body.get("max_tokens") or 0, body.get("max_completion_tokens") or 0) * (body.get("n") or 1)]
            if not body.get("n"):
                sent.append(to_anthropic(body, "m")["max_tokens"])
        elif endpoint == "messages":
            sent = [body["max_tokens"], messages_to_chat(body, "m")["max_tokens"]]
        else:
            chat = responses_to_chat(body, "m")
            sent = [body["max_output_tokens"], chat["max_tokens"], to_anthropic(chat, "m")["max_tokens"]]
    except InvalidRequest as refused:  # another API's cap field: refused by name, nothing is sent
        assert refused.param in ("max_tokens", "max_completion_tokens", "max_output_tokens")
        assert refused.param not in {"chat": ("max_tokens", "max_completion_tokens"), "messages": ("max_tokens",),
                                     "responses": ("max_output_tokens",)}[endpoint]
        return
    assert sent and max(sent) <= bound


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_output_tokens", "n"])
@pytest.mark.parametrize("value", [0, -1, "9999", 1.5, True])
def test_an_output_cap_that_is_not_a_positive_integer_is_a_400_naming_it(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as exc:
        cap_output({"max_tokens": 5, field: value} if field != "max_tokens" else {field: value}, "chat")
    assert exc.value.param == field
