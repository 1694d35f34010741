"""Routing policies from config, ready to plan requests; the `Router` that picks one.

`Router.plan(model, key_policy)` decides how a request is served:

- a key bound to a policy (`Principal.policy`) is always served through it, whatever `model`
  says (the requested model is still recorded);
- `model: "policy/<name>"` names a policy;
- any other name is a configured model: a one-target plan, built once at start-up, with no
  retries and no circuit, so a plain request costs what it did before routing existed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tallygate.errors import ModelNotFound, PolicyNotConfigured
from tallygate.pipeline.models import ModelCatalog, Route
from tallygate.pipeline.routing.plan import Plan, Target
from tallygate.pipeline.routing.plan import plan as plan_targets
from tallygate.pipeline.routing.stats import Health
from tallygate.settings import GatewayConfig, LatencyPolicyConfig, PolicyConfig, WeightedPolicyConfig

PREFIX = "policy/"
Clock = Callable[[], float]


class Policy:
    """One configured policy: its targets, retry settings, target health and randomness."""

    def __init__(self, name: str, cfg: PolicyConfig, resolve: Callable[[str], Route], rng: random.Random,
                 clock: Clock = time.monotonic) -> None:
        self.name = name
        self.strategy = cfg.strategy
        if isinstance(cfg, WeightedPolicyConfig):
            self.targets = tuple(Target(resolve(t.model), t.weight) for t in cfg.targets)
        else:
            self.targets = tuple(Target(resolve(t)) for t in cfg.targets)
        self.explore = cfg.explore if isinstance(cfg, LatencyPolicyConfig) else 0.0
        self.timeout_s = cfg.timeout_s
        self.retries = cfg.retries
        self.backoff_s = cfg.backoff_s
        self.max_wait_s = cfg.max_wait_s
        self.health = Health([t.name for t in self.targets], cfg.cooldown.failures, cfg.cooldown.seconds)
        self.rng = rng
        self.clock = clock

    def plan(self) -> Plan:
        ordered, forced = plan_targets(self.strategy, self.targets, self.health, self.clock(), self.rng,
                                       self.explore)
        return Plan(tuple(t.route for t in ordered), self, forced)

    def retry_delay(self, round_no: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry round `round_no` (1, 2, ...): exponential backoff with
        jitter, but never less than the provider's `retry-after`; None when that is more than
        `max_wait_s` (the retries end and the error goes back with its `retry-after`)."""
        backoff: float = min(self.backoff_s * 2 ** (round_no - 1), self.max_wait_s) * (0.5 + self.rng.random() / 2)
        if retry_after is None:
            return backoff
        return None if retry_after > self.max_wait_s else max(backoff, retry_after)


def _rng(seed: int | None, name: str) -> random.Random:
    """Each policy draws from its own generator: with a seed, its plans do not depend on the
    traffic of other policies."""
    return random.Random(f"{seed}:{name}") if seed is not None else random.Random()


class Router:
    """Turns a request's `model` (and its key's policy) into a `Plan`."""

    def __init__(self, config: GatewayConfig, catalog: ModelCatalog, seed: int | None = None,
                 clock: Clock = time.monotonic) -> None:
        self._catalog = catalog
        self._single = {name: Plan((catalog.resolve(name),)) for name in config.models}
        self.policies = {name: Policy(name, cfg, catalog.resolve, _rng(seed, name), clock)
                         for name, cfg in config.policies.items()}

    def plan(self, model: str, key_policy: str | None = None) -> Plan:
        if key_policy is not None:
            policy = self.policies.get(key_policy)
            if policy is None:
                raise PolicyNotConfigured(f"this API key is bound to the routing policy {key_policy!r}, "
                                          "which this gateway's config does not define")
            return policy.plan()
        single = self._single.get(model)
        if single is not None:
            return single
        if model.startswith(PREFIX):
            policy = self.policies.get(model[len(PREFIX):])
            if policy is not None:
                return policy.plan()
            raise ModelNotFound(f"the routing policy {model[len(PREFIX):]!r} does not exist on this "
                                "gateway; GET /v1/models lists the ones that do", param="model")
        return Plan((self._catalog.resolve(model),))  # raises ModelNotFound
