"""An attempt that times out after the request was sent is billed by the provider as if it had
answered: the ledger charges it its worst case (the prompt estimated, the output cap sent), marked
estimated, so no limited key can spend past its cap by making requests outlast the timeout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

_PRICED = {"input_per_mtok": "1000", "output_per_mtok": "1000"}  # $0.001 a token both ways
HEADERS = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    providers = {"openai": {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-up", "timeout_s": 0.3},
                 "anthropic": {"type": "anthropic", "base_url": upstream.root_url, "api_key": "sk-ant-up",
                               "timeout_s": 0.3}}
    models = {"slow": {"provider": "openai", "model": "slow-1000", "pricing": _PRICED},
              "claude-slow": {"provider": "anthropic", "model": "slow-1000", "pricing": _PRICED},
              "slow-embed": {"provider": "openai", "model": "slow-1000", "kind": "embeddings", "pricing": _PRICED},
              "stall": {"provider": "openai", "model": "slowstream-1000", "pricing": _PRICED},
              "claude-stall": {"provider": "anthropic", "model": "slowstream-1000", "pricing": _PRICED},
              "fast": {"provider": "openai", "model": "echo-fast", "pricing": _PRICED}}
    policies = {"slow-then-fast": {"strategy": "fallback", "targets": ["slow", "fast"],
                                   "cooldown": {"failures": 1000}}}
    gw = InProcessGateway(tmp_path_factory.mktemp("gw"), {"providers": providers, "models": models,
                                                          "policies": policies}).start()
    yield gw
    gw.stop()


def _body(path: str, model: str, stream: bool, cap: int = 100) -> dict:
    if path == "/v1/embeddings":
        return {"model": model, "input": "w " * 400}
    if path == "/v1/responses":
        return {"model": model, "input": "w " * 400, "max_output_tokens": cap, "stream": stream}
    return {"model": model, "messages": [{"role": "user", "content": "w " * 400}], "max_tokens": cap,
            "stream": stream}


_CASES = [(path, model, stream) for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses")
          for model in ("slow", "claude-slow") for stream in (False, True)] + [("/v1/embeddings", "slow-embed", False)]


@pytest.mark.parametrize(("path", "model", "stream"), _CASES,
                         ids=[f"{p[4:]}-{m}-{'stream' if s else 'json'}" for p, m, s in _CASES])
def test_an_attempt_that_timed_out_is_charged_its_worst_case(gateway: InProcessGateway, path: str, model: str,
                                                             stream: bool) -> None:
    key = gateway.create_key("slow", monthly_limit="5")
    status, answered, answer = gateway.request("POST", path, json.dumps(_body(path, model, stream)).encode(), key,
                                               HEADERS)
    assert status == 504, answer[:300]
    assert b"upstream_timeout" in answer, answer[:300]  # the client is told it timed out, nothing more
    row = gateway.log_record(answered["x-request-id"])
    assert row["pricing_source"].endswith("(estimated)"), row
    assert row["usage"]["input_tokens"] >= 200, row  # 800 characters of prompt, about four a token
    assert row["usage"]["output_tokens"] == (0 if path == "/v1/embeddings" else 100), row  # the cap sent
    assert Decimal(row["cost"]) > 0
    assert gateway.spend_when_settled(key) == Decimal(row["cost"]) <= 5


def test_requests_that_outlast_the_timeout_cannot_spend_past_a_limit_for_free(gateway: InProcessGateway) -> None:
    """Each is charged about $1.2 (1,000 output tokens and its prompt), reserved about $1.9: the
    third is refused."""
    key = gateway.create_key("slow", monthly_limit="3.5")
    statuses = []
    for _ in range(3):
        status, _, answer = gateway.request("POST", "/v1/chat/completions",
                                            json.dumps(_body("/v1/chat/completions", "slow", False, 1000)).encode(),
                                            key, HEADERS)
        statuses.append(status)
    assert statuses == [504, 504, 402], statuses
    assert Decimal("2.4") <= gateway.spend_when_settled(key) <= Decimal("3.5")


def test_a_limited_request_is_not_tried_again_after_a_timeout(gateway: InProcessGateway,
                                                               upstream: FakeUpstream) -> None:
    """Its limit holds the worst case of one attempt, which the timed-out one may have spent; a
    request under no limit falls back, charged both attempts."""
    upstream.clear()
    body = json.dumps(_body("/v1/chat/completions", "policy/slow-then-fast", False)).encode()
    limited = gateway.create_key("slow", monthly_limit="5")
    status, _, answer = gateway.request("POST", "/v1/chat/completions", body, limited, HEADERS)
    assert status == 504, answer[:300]
    assert [r["body"]["model"] for r in upstream.requests] == ["slow-1000"]
    assert Decimal("0") < gateway.spend_when_settled(limited) <= 5

    free = gateway.create_key("slow")
    status, answered, answer = gateway.request("POST", "/v1/chat/completions", body, free, HEADERS)
    assert status == 200, answer[:300]
    served = json.loads(answer)["usage"]
    row = gateway.log_record(answered["x-request-id"])
    assert row["pricing_source"].endswith("(estimated)"), row
    assert row["usage"]["output_tokens"] == served["completion_tokens"] + 100, row
    assert Decimal(row["cost"]) == Decimal(str(served["cost"])) > Decimal("0.1"), row


_STALLS = [(path, model) for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses")
           for model in ("stall", "claude-stall")]


@pytest.mark.parametrize(("path", "model"), _STALLS, ids=[f"{p[4:]}-{m}" for p, m in _STALLS])
def test_a_stream_that_stalls_past_the_timeout_is_charged_the_cap_sent(gateway: InProcessGateway, path: str,
                                                                       model: str) -> None:
    """Its first event came, then nothing within the timeout (a reasoning model thinking without a
    word): the provider bills what it thought, up to the cap. Before, it was charged its prompt and
    the few words relayed, so a key could spend past its limit on streams that stall."""
    key = gateway.create_key("stall", monthly_limit="5")
    status, answered, answer = gateway.request("POST", path, json.dumps(_body(path, model, True)).encode(), key,
                                               HEADERS)
    assert status == 200 and b"upstream_timeout" in answer, answer[:300]  # the stream's in-band error
    row = gateway.log_record(answered["x-request-id"])
    assert row["partial"] and row["pricing_source"].endswith("(estimated)"), row
    assert row["usage"]["output_tokens"] == 100, row  # the cap sent, not the words relayed
    assert gateway.spend_when_settled(key) == Decimal(row["cost"]) <= 5
