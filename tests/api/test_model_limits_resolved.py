"""A model-scoped rate limit counts the requests that model serves, over real HTTP with the
openai SDK: named, or reached through a routing policy, first or by fallback; a policy's limit
(`policy/<name>`) every request it routes, named or bound to the key; never a request a model
does not serve."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import standard_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import InProcessGateway

HELLO = [{"role": "user", "content": "hello routed"}]


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    config = standard_config(upstream)
    config["policies"] = {
        "cheap": {"strategy": "fallback", "targets": ["local-llama", "gpt-4o-mini"]},
        "pinned": {"strategy": "fallback", "targets": ["cached"]},
        "spill": {"strategy": "fallback", "targets": ["down", "gpt-4o-mini"], "retries": 0},
    }
    config["models"]["down"] = {"provider": "openai", "model": "fail-503"}
    gw = InProcessGateway(tmp_path_factory.mktemp("model-limits"), config).start()
    yield gw
    gw.stop()


def _limit(gw: InProcessGateway, name: str, model: str, rpm: int) -> str:
    status, _, rec = gw.post_json("/v1/manage/ratelimit", {"name": name, "scope": {"model": model},
                                                           "requests_per_minute": rpm})
    assert status == 201, rec
    return str(rec["id"])


def _delete(gw: InProcessGateway, limit_id: str) -> None:
    status, _, _ = gw.request("DELETE", f"/v1/manage/ratelimit/{limit_id}")
    assert status == 200


def _key(gw: InProcessGateway, name: str, policy: str | None = None) -> str:
    body: dict = {"name": name}
    if policy:
        body["policy"] = policy
    status, _, key = gw.post_json("/v1/manage/apikey", body)
    assert status == 201, key
    return str(key["key"])


def _statuses(gw: InProcessGateway, key: str, models: list[str]) -> list[int]:
    out = []
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as client:
        for model in models:
            try:
                client.chat.completions.create(model=model, messages=HELLO, max_tokens=5)  # type: ignore[arg-type]
                out.append(200)
            except openai.RateLimitError as err:
                assert err.body["code"] == "rate_limit_exceeded", err.body  # type: ignore[index]
                out.append(429)
    return out


def test_a_models_limit_counts_the_requests_it_serves_including_by_fallback(gateway: InProcessGateway) -> None:
    """`gpt-4o-mini` limited to 2 a minute: `policy/cheap` requests, which its first target
    `local-llama` serves, are not counted; a `policy/spill` request, whose first target fails,
    reaches it by fallback and is, as is one naming it; once the 2 are used, a request that would
    fall back to it gets its 429, while `policy/cheap` goes on."""
    rid = _limit(gateway, "mini-upstream", "gpt-4o-mini", 2)
    key = _key(gateway, "via-policy")
    try:
        statuses = _statuses(gateway, key, ["policy/cheap"] * 3 + ["policy/spill", "gpt-4o-mini", "policy/spill",
                                                                   "policy/cheap", "claude"])
        assert statuses == [200, 200, 200, 200, 200, 429, 200, 200]
        deadline = time.monotonic() + 5  # the ledger writer flushes every 250 ms
        while True:
            rows = [r for r in gateway.ledger_rows() if r["key_name"] == "via-policy"]
            if len(rows) == len(statuses) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        served = [r["served_model"] for r in rows if r["status"] == 200]
        assert served.count("llama-3.1-8b") == 4 and served.count("gpt-4o-mini") == 2, served
        assert [(r["status"], r["error_code"]) for r in rows if r["status"] != 200] == [(429, "rate_limit_exceeded")]
    finally:
        _delete(gateway, rid)


def test_a_policy_limit_binds_a_key_routed_by_it_whatever_model_it_names(gateway: InProcessGateway) -> None:
    """A key bound to the policy `pinned` sends `gpt-4o-mini`; the router sends it by `pinned`, so
    the limit on `policy/pinned` (and the one on its target `cached`) bind it."""
    rid = _limit(gateway, "pinned-policy", "policy/pinned", 1)
    key = _key(gateway, "pinned-key", policy="pinned")
    other = _key(gateway, "free-key")
    try:
        assert _statuses(gateway, key, ["gpt-4o-mini", "claude"]) == [200, 429]
        assert _statuses(gateway, other, ["gpt-4o-mini"]) == [200]  # not routed by `pinned`: not counted
    finally:
        _delete(gateway, rid)
    rid = _limit(gateway, "cached-upstream", "cached", 1)
    try:
        assert _statuses(gateway, key, ["local-llama", "gpt-4o-mini"]) == [200, 429]  # both sent to `cached`
    finally:
        _delete(gateway, rid)


def test_a_limit_on_the_name_a_request_gives_still_binds_it(gateway: InProcessGateway) -> None:
    rid = _limit(gateway, "cheap-by-name", "policy/cheap", 1)
    key = _key(gateway, "by-name")
    try:
        assert _statuses(gateway, key, ["policy/cheap", "policy/cheap", "local-llama"]) == [200, 429, 200]
    finally:
        _delete(gateway, rid)
