"""The in-memory sliding window log, with an injected clock: exact per 60-second window, tokens
reserved as the worst case and settled to actual usage, requests in flight released, a request
refused by one limit counted by none, and the headers of the tightest limit."""

from __future__ import annotations

import pytest

from tallygate.errors import RateLimited
from tallygate.pipeline.ratelimit import MemoryLimiter, duration, worst_tokens
from tallygate.pipeline.ratelimit_rules import Rule


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rule(rid: str, rpm: int | None = None, tpm: int | None = None, most: int | None = None) -> Rule:
    return Rule(rid, f"rate limit {rid!r}", rpm, tpm, most)


def test_no_sixty_second_window_admits_more_than_the_limit() -> None:
    clock = Clock()
    limiter, r = MemoryLimiter(clock), rule("a", rpm=3)
    admitted: list[float] = []
    for _ in range(400):  # a request every 0.7 s for 280 s
        try:
            limiter.admit_now([r], 0)
            admitted.append(clock.now)
        except RateLimited:
            pass
        clock.now += 0.7
    for t in admitted:
        assert sum(1 for x in admitted if t <= x < t + 60) <= 3
    assert len(admitted) >= 3 * (280 // 60)  # and it does admit the limit each window


def test_refusal_says_when_a_slot_frees() -> None:
    clock = Clock()
    limiter, r = MemoryLimiter(clock), rule("a", rpm=2)
    limiter.admit_now([r], 0)
    clock.now += 10
    limiter.admit_now([r], 0)
    clock.now += 5
    with pytest.raises(RateLimited) as refused:
        limiter.admit_now([r], 0)
    assert refused.value.retry_after == pytest.approx(45.0)
    assert refused.value.code == "rate_limit_exceeded" and "'a'" in refused.value.message
    headers = dict(refused.value.headers())
    assert headers[b"retry-after"] == b"45" and headers[b"x-ratelimit-remaining-requests"] == b"0"
    clock.now += 45.001
    limiter.admit_now([r], 0)


def test_tokens_are_reserved_as_the_worst_case_and_settled_to_actual_usage() -> None:
    clock = Clock()
    limiter, r = MemoryLimiter(clock), rule("t", tpm=100)
    first = limiter.admit_now([r], 60)
    with pytest.raises(RateLimited) as refused:
        limiter.admit_now([r], 60)
    assert refused.value.type == "tokens"
    limiter.settle(first, 10)  # it used 10: 90 left
    second = limiter.admit_now([r], 60)
    assert dict(second.headers)[b"x-ratelimit-remaining-tokens"] == b"30"
    limiter.settle(second, 80)  # more than reserved: counted as used
    with pytest.raises(RateLimited):
        limiter.admit_now([r], 11)
    clock.now += 60.01
    limiter.admit_now([r], 100)


def test_a_request_larger_than_the_tokens_per_minute_is_refused_without_a_retry_after() -> None:
    limiter = MemoryLimiter(Clock())
    with pytest.raises(RateLimited) as refused:
        limiter.admit_now([rule("t", tpm=100)], 101)
    assert refused.value.retry_after is None and b"retry-after" not in dict(refused.value.headers())
    assert "101 tokens" in refused.value.message


def test_requests_in_flight_are_released_when_they_end() -> None:
    limiter, r = MemoryLimiter(Clock()), rule("c", most=2)
    a, _ = limiter.admit_now([r], 0), limiter.admit_now([r], 0)
    with pytest.raises(RateLimited) as refused:
        limiter.admit_now([r], 0)
    assert refused.value.retry_after == 1.0
    limiter.settle(a, 0)
    assert limiter.in_flight("c") == 1
    limiter.admit_now([r], 0)


def test_a_request_refused_by_one_limit_counts_against_none() -> None:
    limiter = MemoryLimiter(Clock())
    loose, tight = rule("loose", rpm=10, tpm=1000, most=5), rule("tight", rpm=1)
    limiter.admit_now([loose, tight], 50)
    for _ in range(3):
        with pytest.raises(RateLimited):
            limiter.admit_now([loose, tight], 50)
    hold = limiter.admit_now([loose], 50)  # the refusals took nothing of `loose`
    assert dict(hold.headers)[b"x-ratelimit-remaining-requests"] == b"8"
    assert dict(hold.headers)[b"x-ratelimit-remaining-tokens"] == b"900"
    assert limiter.in_flight("loose") == 2


def test_settling_unserved_takes_the_request_out_of_the_window() -> None:
    limiter, r = MemoryLimiter(Clock()), rule("u", rpm=1, tpm=100, most=1)
    hold = limiter.admit_now([r], 100)
    limiter.settle(hold, None)  # a budget refused it after the rate limits admitted it
    limiter.admit_now([r], 100)


def test_headers_name_the_tightest_limit() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    wide, narrow = rule("wide", rpm=100, tpm=10_000), rule("narrow", rpm=5)
    limiter.admit_now([wide, narrow], 10)
    clock.now += 1.5
    headers = dict(limiter.admit_now([wide, narrow], 10).headers)
    assert headers[b"x-ratelimit-limit-requests"] == b"5" and headers[b"x-ratelimit-remaining-requests"] == b"3"
    assert headers[b"x-ratelimit-reset-requests"] == b"58.5s"
    assert headers[b"x-ratelimit-limit-tokens"] == b"10000" and headers[b"x-ratelimit-remaining-tokens"] == b"9980"


def test_worst_tokens_counts_the_prompt_and_the_output_cap() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x" * 300}]}
    assert worst_tokens(body, "chat") >= 300 + 100  # a token a byte of the prompt, and the cap
    assert worst_tokens({**body, "max_tokens": 550}, "chat") == worst_tokens(body, "chat") + 450


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250ms"), (1.5, "1.5s"), (62, "1m2s"), (60, "1m0s")])
def test_reset_durations_read_like_openai(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_no_one_second_window_admits_more_than_the_requests_per_second() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    r = Rule("s", "rate limit 's'", None, None, None, requests_per_second=4)
    admitted: list[float] = []
    for _ in range(1500):  # a request every 0.03 s for 45 s: 33 a second offered
        try:
            hold = limiter.admit_now([r], 0)
            admitted.append(clock.now)
            limiter.settle(hold, 0)
        except RateLimited as refused:
            assert 0 < refused.retry_after <= 1.0  # type: ignore[operator]
            assert "4 requests per second" in refused.message
        clock.now += 0.03
    for t in admitted:
        assert sum(1 for x in admitted if t <= x < t + 1.0) <= 4
    assert 4 * 44 <= len(admitted) <= 4 * 46  # and it admits 4 in each second
    assert limiter.usage_now(["s"])["s"].requests_last_second == 4


def test_the_per_second_limit_is_the_tightest_in_the_headers_and_unserved_requests_leave_it() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    r = Rule("s2", "rate limit 's2'", 100, None, None, requests_per_second=2)
    first = limiter.admit_now([r], 0)
    headers = dict(limiter.admit_now([r], 0).headers)
    assert headers[b"x-ratelimit-limit-requests"] == b"2" and headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert headers[b"x-ratelimit-reset-requests"] == b"1s"
    with pytest.raises(RateLimited):
        limiter.admit_now([r], 0)
    limiter.settle(first, None)  # refused by a budget after the rate limits admitted it
    assert limiter.usage_now(["s2"])["s2"].requests_last_second == 1
    limiter.admit_now([r], 0)
    clock.now += 1.0
    assert limiter.usage_now(["s2"])["s2"].requests_last_second == 0
