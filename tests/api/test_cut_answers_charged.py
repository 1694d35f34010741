"""A JSON answer the provider cut after its 200 (the connection closed mid-body) was made, and is
billed: the ledger charges the attempt its worst case (the prompt estimated, the output cap sent),
marked estimated, as a timed-out attempt is; and a limited request, whose limit holds the worst
case of one attempt, is not tried on another target after it (the 502 is its answer).

So is a stream whose connection closed after its 200 but before its first event (the provider had
begun the answer: a reasoning model may have thought for long before its first word).

Before, such an attempt was charged nothing and the request fell back: the provider billed two
answers against a limit that held one. Real HTTP: the fake provider's `cut-stream` scenario (a
JSON answer's Content-Length, half of its body, then the connection closed) and `cut-head` (a
stream's 200, then the connection closed before any event), the official SDKs.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

PRICED = {"input_per_mtok": "1000", "output_per_mtok": "1000"}  # $0.001 a token both ways
PROMPT = [{"role": "user", "content": "w " * 400}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    providers = {"openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-up"},
                 "anthropic": {"type": "anthropic", "base_url": upstream.root_url, "api_key": "sk-ant-up"}}
    models = {"cut": {"provider": "openai", "model": "cut-stream", "pricing": PRICED},
              "claude-cut": {"provider": "anthropic", "model": "cut-stream", "pricing": PRICED},
              "head": {"provider": "openai", "model": "cut-head", "pricing": PRICED},
              "claude-head": {"provider": "anthropic", "model": "cut-head", "pricing": PRICED},
              "fast": {"provider": "openai", "model": "echo-fast", "pricing": PRICED}}
    policies = {"cut-then-fast": {"strategy": "fallback", "targets": ["cut", "fast"], "cooldown": {"failures": 1000}},
                "head-then-fast": {"strategy": "fallback", "targets": ["head", "fast"],
                                   "cooldown": {"failures": 1000}}}
    gw = InProcessGateway(tmp_path_factory.mktemp("cut"), {"providers": providers, "models": models,
                                                           "policies": policies}).start()
    yield gw
    gw.stop()


def assert_worst_case(gw: InProcessGateway, request_id: str, key: str) -> None:
    row = gw.log_record(request_id)
    assert row["status"] == 502 and row["pricing_source"].endswith("(estimated)"), row
    assert row["usage"]["input_tokens"] >= 200 and row["usage"]["output_tokens"] == 100, row  # the cap sent
    assert gw.spend_when_settled(key) == Decimal(row["cost"]) > 0


def test_a_chat_answer_cut_mid_body_is_charged_its_worst_case(gateway: InProcessGateway) -> None:
    key = gateway.create_key("cut", monthly_limit="5")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="cut", messages=PROMPT, max_tokens=100)  # type: ignore[arg-type]
    assert failed.value.status_code == 502
    assert_worst_case(gateway, failed.value.response.headers["x-request-id"], key)


def test_a_messages_answer_cut_mid_body_is_charged_its_worst_case(gateway: InProcessGateway) -> None:
    key = gateway.create_key("cut", monthly_limit="5")
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20) as claude:
        with pytest.raises(anthropic.APIStatusError) as failed:
            claude.messages.create(model="claude-cut", messages=PROMPT, max_tokens=100)  # type: ignore[arg-type]
    assert failed.value.status_code == 502
    assert_worst_case(gateway, failed.value.response.headers["x-request-id"], key)


def test_a_limited_request_is_not_tried_again_after_a_cut_answer(gateway: InProcessGateway,
                                                                 upstream: FakeUpstream) -> None:
    upstream.clear()
    key = gateway.create_key("cut", monthly_limit="5")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="policy/cut-then-fast", messages=PROMPT,  # type: ignore[arg-type]
                                           max_tokens=100)
    assert failed.value.status_code == 502
    assert [r["body"]["model"] for r in upstream.requests] == ["cut-stream"]  # one answer billed, one held
    assert Decimal(0) < gateway.spend_when_settled(key) <= 5


def test_a_chat_stream_cut_before_its_first_event_is_charged_its_worst_case(gateway: InProcessGateway) -> None:
    key = gateway.create_key("cut", monthly_limit="5")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="head", messages=PROMPT, max_tokens=100,  # type: ignore[arg-type]
                                           stream=True)
    assert failed.value.status_code == 502
    assert_worst_case(gateway, failed.value.response.headers["x-request-id"], key)


def test_a_messages_stream_cut_before_its_first_event_is_charged_its_worst_case(gateway: InProcessGateway) -> None:
    key = gateway.create_key("cut", monthly_limit="5")
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20) as claude:
        with pytest.raises(anthropic.APIStatusError) as failed:
            claude.messages.create(model="claude-head", messages=PROMPT, max_tokens=100,  # type: ignore[arg-type]
                                   stream=True)
    assert failed.value.status_code == 502
    assert_worst_case(gateway, failed.value.response.headers["x-request-id"], key)


def test_a_limited_stream_is_not_tried_again_after_a_cut_before_its_first_event(gateway: InProcessGateway,
                                                                                upstream: FakeUpstream) -> None:
    upstream.clear()
    key = gateway.create_key("cut", monthly_limit="5")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="policy/head-then-fast", messages=PROMPT,  # type: ignore[arg-type]
                                           max_tokens=100, stream=True)
    assert failed.value.status_code == 502
    assert [r["body"]["model"] for r in upstream.requests] == ["cut-head"]  # one answer billed, one held
    assert Decimal(0) < gateway.spend_when_settled(key) <= 5
