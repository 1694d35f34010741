"""A model-scoped rate limit binds a request by every name it resolves to, over real HTTP with
the openai SDK: the model it names, the routing policy it is routed by (named as `policy/<name>`
or bound to its key), and each configured model (upstream target) it may be sent to; never by
a name it does not reach."""

from __future__ import annotations

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
    }
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


def test_a_target_models_limit_binds_requests_that_name_a_policy_routing_to_it(gateway: InProcessGateway) -> None:
    """`gpt-4o-mini` limited to 2 a minute: requests naming it and requests naming `policy/cheap`
    (whose targets include it) share the 2; a model outside the policy is not counted."""
    rid = _limit(gateway, "mini-upstream", "gpt-4o-mini", 2)
    key = _key(gateway, "via-policy")
    try:
        statuses = _statuses(gateway, key, ["policy/cheap", "gpt-4o-mini", "policy/cheap", "claude"])
        assert statuses == [200, 200, 429, 200]
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
