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


def _refused(gw: InProcessGateway, key: str, model: str, *, stream: bool,
             claude: bool = False) -> openai.APIStatusError | anthropic.APIStatusError:
    """The 502 a request for `model` gets (through the Anthropic SDK when `claude`)."""
    if claude:
        with anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=20) as sdk, \
                pytest.raises(anthropic.APIStatusError) as failed:
            sdk.messages.create(model=model, messages=PROMPT, max_tokens=100, stream=stream)  # type: ignore[arg-type]
    else:
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=20) as client, \
                pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model=model, messages=PROMPT, max_tokens=100,  # type: ignore[call-overload]
                                           stream=stream)
    assert failed.value.status_code == 502
    return failed.value


@pytest.mark.parametrize(("model", "stream", "claude"), [("cut", False, False), ("claude-cut", False, True),
                                                         ("head", True, False), ("claude-head", True, True)],
                         ids=["chat cut mid-body", "messages cut mid-body", "chat stream cut before its first event",
                              "messages stream cut before its first event"])
def test_an_answer_cut_after_its_200_is_charged_its_worst_case(gateway: InProcessGateway, model: str, stream: bool,
                                                               claude: bool) -> None:
    key = gateway.create_key("cut", monthly_limit="5")
    failed = _refused(gateway, key, model, stream=stream, claude=claude)
    assert_worst_case(gateway, failed.response.headers["x-request-id"], key)


@pytest.mark.parametrize(("policy", "stream", "billed"), [("cut-then-fast", False, "cut-stream"),
                                                          ("head-then-fast", True, "cut-head")])
def test_a_limited_request_is_not_tried_again_after_a_cut_answer(gateway: InProcessGateway, upstream: FakeUpstream,
                                                                 policy: str, stream: bool, billed: str) -> None:
    upstream.clear()
    key = gateway.create_key("cut", monthly_limit="5")
    _refused(gateway, key, f"policy/{policy}", stream=stream)
    assert [r["body"]["model"] for r in upstream.requests] == [billed]  # one answer billed, one held
    assert Decimal(0) < gateway.spend_when_settled(key) <= 5
