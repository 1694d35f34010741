"""Routing policies end to end: the official `openai` SDK against a real gateway process and fake
upstreams that fail in each way (5xx, 429 with retry-after, timeout, connection reset, slow
first byte, a stream cut midway)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import openai
import pytest
from aiohttp import web

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import Gateway

HELLO = [{"role": "user", "content": "hi"}]
SEED = "1234"


class DegradableUpstream(FakeUpstream):
    """A fake upstream whose every answer can be made slower while it runs."""

    delay_s = 0.0

    async def _serve(self, request: web.Request, body: dict, api: str) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super()._serve(request, body, api)


def routing_config(upstream: FakeUpstream, other: FakeUpstream) -> dict:
    cfg = standard_config(upstream)
    cfg["providers"]["other"] = {"type": "openai", "base_url": other.base_url, "api_key": "sk-other"}
    cfg["models"].update({
        "flaky-429-1": {"provider": "openai", "model": "flaky-429-1"},
        "flaky-503-2": {"provider": "openai", "model": "flaky-503-2"},
        "steady": {"provider": "openai", "model": "slow-40"},
        "degradable": {"provider": "other", "model": "gpt-4o-mini"},
    })
    cfg["policies"] = {
        "chain": {"strategy": "fallback", "timeout_s": 0.3,
                  "targets": ["fail-503", "claude-fail-429", "reset", "slow-3000", "claude"]},
        "guarded": {"strategy": "fallback", "targets": ["fail-400", "gpt-4o-mini"]},
        "doomed": {"strategy": "fallback", "targets": ["fail-500", "reset", "refused"]},
        "limited": {"strategy": "fallback", "targets": ["fail-429", "claude-fail-429"]},
        "patient": {"strategy": "fallback", "targets": ["flaky-429-1"], "retries": 1, "max_wait_s": 3},
        "cutting": {"strategy": "fallback", "targets": ["cut-stream", "gpt-4o-mini"]},
        "split": {"strategy": "weighted", "targets": [{"model": "gpt-4o-mini", "weight": 3},
                                                      {"model": "local-llama", "weight": 1}]},
        "fastest": {"strategy": "latency", "targets": ["degradable", "steady"], "explore": 0.1},
        "healing": {"strategy": "fallback", "targets": ["flaky-503-2", "gpt-4o-mini"],
                    "cooldown": {"failures": 2, "seconds": 1.5}},
    }
    return cfg


@pytest.fixture(scope="module")
def other() -> Iterator[DegradableUpstream]:
    with DegradableUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, other: DegradableUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # A process of its own: the latency policy is judged on timings the test must not share a GIL with.
    gw = Gateway(tmp_path_factory.mktemp("gw"), routing_config(upstream, other),
                 env={"TALLYGATE_ROUTING_SEED": SEED}).start()
    yield gw
    gw.stop()


def attempts(record: dict) -> list[tuple]:
    return [(a["target"], a["status"], a["error"]) for a in record["attempts"]]


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_order_passes_5xx_429_reset_and_slow_first_byte(
        client: openai.OpenAI, gateway: Gateway, upstream: FakeUpstream, stream: bool) -> None:
    upstream.clear()
    if stream:
        chunks = list(client.chat.completions.create(model="policy/chain", messages=HELLO, stream=True))
        rid, text = chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        done = client.chat.completions.create(model="policy/chain", messages=HELLO)
        rid, text = done.id, done.choices[0].message.content
    assert text
    assert [r["body"]["model"] for r in upstream.requests] == [
        "fail-503", "fail-429", "reset", "slow-3000", "claude-3-5-haiku-latest"]
    record = gateway.log_record(rid)
    assert record["status"] == 200 and record["requested_model"] == "policy/chain"
    assert record["served_model"] == "claude-3-5-haiku-latest" and record["provider"] == "anthropic"
    assert attempts(record) == [
        ("fail-503", 503, "UpstreamHTTPError"), ("claude-fail-429", 429, "UpstreamHTTPError"),
        ("reset", 502, "UpstreamUnavailable"), ("slow-3000", 504, "UpstreamTimeout"), ("claude", 200, None)]
    assert 250 <= record["attempts"][3]["latency_ms"] < 1000  # the policy's 0.3 s, not the provider's 1 s
    assert record["usage"]["output_tokens"] > 0 and float(record["cost"]) > 0


def test_callers_own_4xx_is_returned_without_falling_through(client: openai.OpenAI, gateway: Gateway,
                                                             upstream: FakeUpstream) -> None:
    upstream.clear()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="policy/guarded", messages=HELLO)
    assert exc.value.body["code"] == "upstream_rejected"
    assert [r["body"]["model"] for r in upstream.requests] == ["fail-400"]
    record = gateway.log_record(exc.value.response.headers["x-request-id"])
    assert attempts(record) == [("fail-400", 400, "UpstreamHTTPError")]


def test_every_target_failing_gives_one_error_listing_each_cause(client: openai.OpenAI,
                                                                 gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="policy/doomed", messages=HELLO)
    body = exc.value.body
    assert exc.value.status_code == 502 and body["code"] == "all_targets_failed"
    message = body["message"]
    for cause in ("fail-500 (openai): HTTP 500 (upstream_server_error)",
                  "reset (openai): upstream_unavailable", "refused (nowhere): upstream_unavailable"):
        assert cause in message
    for leak in ("sk-upstream", "server had an error", "Sorry about that"):
        assert leak not in str(body)
    record = gateway.log_record(exc.value.response.headers["x-request-id"])
    assert record["status"] == 502 and len(record["attempts"]) == 3
    assert record["error"]["message"] == message


def test_all_targets_rate_limited_is_a_429_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="policy/limited", messages=HELLO)
    assert exc.value.body["code"] == "all_targets_failed"
    assert exc.value.response.headers["retry-after"] == "2"


def test_a_retry_waits_for_the_providers_retry_after(client: openai.OpenAI, gateway: Gateway,
                                                    upstream: FakeUpstream) -> None:
    upstream.clear()
    t0 = time.monotonic()
    done = client.chat.completions.create(model="policy/patient", messages=HELLO)
    assert time.monotonic() - t0 >= 2.0  # the fake says `retry-after: 2`
    assert attempts(gateway.log_record(done.id)) == [("flaky-429-1", 429, "UpstreamHTTPError"),
                                                     ("flaky-429-1", 200, None)]


def test_stream_failing_after_its_first_byte_is_not_retried_and_ends_partial(
        client: openai.OpenAI, gateway: Gateway, upstream: FakeUpstream) -> None:
    upstream.clear()
    received = []
    with pytest.raises(openai.APIError):  # extend() keeps the chunks that came before the error
        received.extend(client.chat.completions.create(model="policy/cutting", messages=HELLO, stream=True))
    assert received and [r["body"]["model"] for r in upstream.requests] == ["cut-stream"]
    record = gateway.log_record(received[0].id)
    assert record["partial"] is True and record["status"] == 502
    assert attempts(record) == [("cut-stream", 200, None)]


def test_weighted_split_is_within_tolerance_under_a_fixed_seed(client: openai.OpenAI) -> None:
    n = 200
    served = Counter(client.chat.completions.create(model="policy/split", messages=HELLO).model
                     for _ in range(n))
    # weights 3:1 -> 150 expected; +-18 is three standard deviations of a binomial(200, 0.75)
    assert set(served) == {"gpt-4o-mini", "llama-3.1-8b"}
    assert abs(served["gpt-4o-mini"] - 150) <= 18, served


def test_latency_policy_converges_on_the_fastest_and_leaves_a_degraded_one(
        client: openai.OpenAI, other: DegradableUpstream) -> None:
    def serve(n: int) -> list[str]:
        return [client.chat.completions.create(model="policy/fastest", messages=HELLO).model
                for _ in range(n)]

    other.delay_s = 0.0  # "degradable" answers at once, "steady" takes 40 ms
    assert serve(40)[10:].count("gpt-4o-mini") >= 22  # 27 expected with explore = 0.1
    other.delay_s = 0.15  # degraded: now the slower of the two
    assert serve(40)[10:].count("slow-40") >= 22
    other.delay_s = 0.0  # recovered: exploration notices
    assert serve(80)[-30:].count("gpt-4o-mini") >= 22


def test_cooldown_takes_a_failing_target_out_and_a_probe_lets_it_back(
        client: openai.OpenAI, gateway: Gateway, upstream: FakeUpstream) -> None:
    upstream.clear()  # flaky-503-2: its first two requests fail
    ids = [client.chat.completions.create(model="policy/healing", messages=HELLO).id for _ in range(3)]
    records = [gateway.log_record(i) for i in ids]
    assert attempts(records[0]) == attempts(records[1]) == [("flaky-503-2", 503, "UpstreamHTTPError"),
                                                            ("gpt-4o-mini", 200, None)]
    assert attempts(records[2]) == [("gpt-4o-mini", 200, None)]  # cooling down: not tried
    time.sleep(1.6)  # the cooldown
    probe = client.chat.completions.create(model="policy/healing", messages=HELLO)
    assert attempts(gateway.log_record(probe.id)) == [("flaky-503-2", 200, None)]
    after = client.chat.completions.create(model="policy/healing", messages=HELLO)
    assert after.model == "flaky-503-2"


def test_a_key_bound_to_a_policy_serves_every_request_through_it(gateway: Gateway) -> None:
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": "routed", "policy": "guarded"})
    assert status == 201, key
    with (openai.OpenAI(base_url=gateway.base_url, api_key=key["key"], max_retries=0) as bound,
          pytest.raises(openai.BadRequestError)):  # "guarded" starts with fail-400, whatever is asked
        bound.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    status, _, key = gateway.post_json("/v1/manage/apikey", {"name": "routed-2", "policy": "healing"})
    with openai.OpenAI(base_url=gateway.base_url, api_key=key["key"], max_retries=0) as bound:
        done = bound.chat.completions.create(model="claude", messages=HELLO)
    record = gateway.log_record(done.id)
    assert record["requested_model"] == "claude" and record["served_model"] in ("flaky-503-2", "gpt-4o-mini")


def test_models_lists_policies_and_an_unknown_policy_is_a_404(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"policy/chain", "policy/split", "policy/fastest", "gpt-4o-mini"} <= ids
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="policy/nope", messages=HELLO)
    assert "policy 'nope'" in exc.value.body["message"]


def test_plain_model_attempt_names_its_target(client: openai.OpenAI, gateway: Gateway) -> None:
    done = client.chat.completions.create(model="local-llama", messages=HELLO)
    record = gateway.log_record(done.id)
    assert attempts(record) == [("local-llama", 200, None)] and record["requested_model"] == "local-llama"
