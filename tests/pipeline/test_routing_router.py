"""The router: which plan a request gets from its `model` and its key's policy."""

from __future__ import annotations

import pytest

from tallygate.errors import ModelNotFound, PolicyNotConfigured
from tallygate.pipeline.models import ModelCatalog
from tallygate.pipeline.routing import Router
from tallygate.providers.http import HttpClient
from tallygate.providers.registry import build_providers
from tallygate.settings import parse_config

CONFIG = {
    "providers": {"a": {"type": "mock"}, "b": {"type": "mock"}},
    "models": {"m1": {"provider": "a", "model": "up-1"}, "m2": {"provider": "b", "model": "up-2"}},
    "policies": {"both": {"strategy": "fallback", "targets": ["m2", "m1"]},
                 "split": {"strategy": "weighted", "targets": [{"model": "m1", "weight": 9}, "m2"]}},
}


@pytest.fixture()
def router() -> Router:
    cfg = parse_config(CONFIG, {})
    return Router(cfg, ModelCatalog(cfg, build_providers(cfg, HttpClient())), seed=3)


def test_a_plain_model_gets_a_one_target_plan_built_once(router: Router) -> None:
    plan = router.plan("m1")
    assert [r.name for r in plan.targets] == ["m1"] and plan.policy is None
    assert router.plan("m1") is plan  # nothing is built per request


def test_policy_slash_name_plans_over_the_policys_targets(router: Router) -> None:
    plan = router.plan("policy/both")
    assert [r.name for r in plan.targets] == ["m2", "m1"] and plan.policy is router.policies["both"]
    assert [r.upstream_model for r in plan.targets] == ["up-2", "up-1"]


def test_a_keys_policy_applies_whatever_model_is_asked_for(router: Router) -> None:
    for model in ("m1", "policy/split", "gpt-unknown"):
        assert router.plan(model, key_policy="both").policy is router.policies["both"]


def test_unknown_names_are_404_and_a_key_bound_to_a_missing_policy_is_a_server_error(router: Router) -> None:
    with pytest.raises(ModelNotFound, match="policy 'nope'"):
        router.plan("policy/nope")
    with pytest.raises(ModelNotFound, match="model 'nope'"):
        router.plan("nope")
    with pytest.raises(PolicyNotConfigured) as exc:
        router.plan("m1", key_policy="gone")
    assert exc.value.status == 500 and exc.value.code == "policy_not_configured"


def test_the_seed_makes_weighted_plans_reproducible() -> None:
    cfg = parse_config(CONFIG, {})
    catalog = ModelCatalog(cfg, build_providers(cfg, HttpClient()))
    r1, r2 = Router(cfg, catalog, seed=8), Router(cfg, catalog, seed=8)
    assert [r1.plan("policy/split").targets[0].name for _ in range(100)] == \
           [r2.plan("policy/split").targets[0].name for _ in range(100)]
