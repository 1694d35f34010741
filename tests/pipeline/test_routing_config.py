"""Routing policies in `tallygate.yaml`: the issue's shape is accepted, every mistake is a
`ConfigError` naming the field, and `GET /v1/models` lists the policies."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tallygate.pipeline.models import ModelCatalog
from tallygate.providers.http import HttpClient
from tallygate.providers.registry import build_providers
from tallygate.settings import ConfigError, load_config, parse_config

BASE = {
    "providers": {"openai": {"type": "openai", "api_key": "sk-o"},
                  "anthropic": {"type": "anthropic", "api_key": "sk-a"},
                  "local": {"type": "openai", "base_url": "http://127.0.0.1:8000/v1"}},
    "models": {"gpt-4o-mini": {"provider": "openai", "model": "gpt-4o-mini"},
               "claude-3.5-haiku": {"provider": "anthropic", "model": "claude-3-5-haiku-latest"},
               "local-llama": {"provider": "local", "model": "llama-3.1-8b"}},
    "policies": {
        "resilient": {"strategy": "fallback", "targets": ["gpt-4o-mini", "claude-3.5-haiku", "local-llama"]},
        "split": {"strategy": "weighted", "targets": [{"model": "gpt-4o-mini", "weight": 3},
                                                      {"model": "local-llama", "weight": 1}]},
        "fastest": {"strategy": "latency", "targets": ["gpt-4o-mini", "claude-3.5-haiku"], "timeout_s": 20},
    },
}


def test_issue_shaped_policies_are_accepted_with_defaults() -> None:
    cfg = parse_config(copy.deepcopy(BASE), {})
    assert set(cfg.policies) == {"resilient", "split", "fastest"}
    fastest = cfg.policies["fastest"]
    assert fastest.strategy == "latency" and fastest.timeout_s == 20 and fastest.explore == 0.05
    assert fastest.retries == 0 and fastest.cooldown.failures == 3
    split = cfg.policies["split"].targets
    assert [(t.model, t.weight) for t in split] == [("gpt-4o-mini", 3), ("local-llama", 1)]


def test_a_bare_model_name_in_a_weighted_policy_weighs_one() -> None:
    cfg = copy.deepcopy(BASE)
    cfg["policies"]["split"]["targets"][1] = "local-llama"
    assert parse_config(cfg, {}).policies["split"].targets[1].weight == 1


@pytest.mark.parametrize("policy, message", [
    ({"strategy": "round-robin", "targets": ["gpt-4o-mini"]},
     "policies.p.strategy: unknown strategy 'round-robin' (known: fallback, weighted, latency)"),
    ({"targets": ["gpt-4o-mini"]}, "policies.p.strategy: required"),
    ({"strategy": "fallback", "targets": ["gpt-4o-mini"], "colour": "red"},
     "policies.p.colour: unknown field"),
    ({"strategy": "fallback", "targets": ["gpt-4o-mini"], "explore": 0.1},
     "policies.p.explore: unknown field"),
    ({"strategy": "weighted", "targets": [{"model": "gpt-4o-mini", "weight": 0}]},
     "policies.p.targets.0.weight"),
    ({"strategy": "weighted", "targets": [{"model": "gpt-4o-mini", "share": 2}]},
     "policies.p.targets.0.share: unknown field"),
    ({"strategy": "latency", "targets": ["gpt-4o-mini", "gpt-5"]},
     "policies.p.targets.1: unknown model 'gpt-5'"),
    ({"strategy": "fallback", "targets": ["gpt-4o-mini", "gpt-4o-mini"]},
     "policies.p.targets.1: 'gpt-4o-mini' is listed twice"),
    ({"strategy": "fallback", "targets": []}, "policies.p.targets"),
    ({"strategy": "fallback", "targets": ["gpt-4o-mini"], "timeout_s": 0}, "policies.p.timeout_s"),
    ({"strategy": "fallback", "targets": ["gpt-4o-mini"], "cooldown": {"failures": 0}},
     "policies.p.cooldown.failures"),
    ({"strategy": "fallback", "targets": ["gpt-4o-mini"], "cooldown": {"after": 3}},
     "policies.p.cooldown.after: unknown field"),
    ({"strategy": "latency", "targets": ["gpt-4o-mini"], "explore": 2}, "policies.p.explore"),
])
def test_policy_mistakes_name_the_field(policy: dict, message: str) -> None:
    cfg = copy.deepcopy(BASE)
    cfg["policies"] = {"p": policy}
    with pytest.raises(ConfigError) as exc:
        parse_config(cfg, {})
    assert message in str(exc.value)


@pytest.mark.parametrize("name", ["", "a/b", " padded"])
def test_policy_names_must_fit_in_policy_slash_name(name: str) -> None:
    cfg = copy.deepcopy(BASE)
    cfg["policies"] = {name: {"strategy": "fallback", "targets": ["gpt-4o-mini"]}}
    with pytest.raises(ConfigError, match="a policy name must be"):
        parse_config(cfg, {})


def test_a_policy_name_given_twice_is_an_error_not_last_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "tallygate.yaml"
    path.write_text("providers:\n  demo: {type: mock}\nmodels:\n  a: {provider: demo, model: a}\n"
                    "policies:\n  p: {strategy: fallback, targets: [a]}\n"
                    "  p: {strategy: latency, targets: [a]}\n")
    with pytest.raises(ConfigError, match="duplicate key 'p'"):
        load_config(path)


def test_models_listing_includes_policies() -> None:
    cfg = parse_config(copy.deepcopy(BASE), {})
    catalog = ModelCatalog(cfg, build_providers(cfg, HttpClient()))
    ids = [m["id"] for m in catalog.listing()["data"]]
    assert ids[-3:] == ["policy/resilient", "policy/split", "policy/fastest"]
    assert "gpt-4o-mini" in ids
