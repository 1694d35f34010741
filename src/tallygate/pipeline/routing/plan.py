"""Planning: which targets a request may be sent to, and in what order. Pure functions.

`plan(strategy, targets, health, now, rng, explore)` orders a policy's targets for one request:

- `fallback`: config order;
- `weighted`: a weighted random draw without replacement, so the first target is picked by
  weight and the fallbacks behind it too;
- `latency`: targets never measured first (so each gets measured), then by latency EWMA,
  fastest first; with probability `explore` a random other target is moved to the front, so a
  target that recovered (or got faster) is noticed.

Targets whose circuit is open (`Health.available`) are left out; when that would leave none,
all of them are planned (`forced`): trying a cooling target beats refusing without trying.
Randomness comes only from `rng`, so a seeded `random.Random` makes plans reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING

from tallygate.pipeline.models import Route
from tallygate.pipeline.routing.stats import Health

if TYPE_CHECKING:
    from tallygate.pipeline.routing.policies import Policy


@dataclass(frozen=True, slots=True)
class Target:
    """One target of a policy: a configured model and, for `weighted`, its weight."""

    route: Route
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.route.name


@dataclass(frozen=True, slots=True)
class Plan:
    """The targets one request may be sent to, in the order they will be tried.

    `targets` is every target the request can reach (retry rounds go over the same ones), so the
    budget can price the worst case before anything is sent. `policy` is None for a plain model
    name: one target, no retries, its error returned as it is.
    """

    targets: tuple[Route, ...]
    policy: Policy | None = None
    forced: bool = False  # every target was cooling down; they are tried anyway


def _fallback(targets: list[Target], health: Health, rng: Random, explore: float) -> list[Target]:
    return targets


def _weighted(targets: list[Target], health: Health, rng: Random, explore: float) -> list[Target]:
    pool, out = list(targets), []
    while len(pool) > 1:
        x = rng.random() * sum(t.weight for t in pool)
        i = 0
        while i < len(pool) - 1:
            x -= pool[i].weight
            if x < 0:
                break
            i += 1
        out.append(pool.pop(i))
    return out + pool


def _latency(targets: list[Target], health: Health, rng: Random, explore: float) -> list[Target]:
    unmeasured = [t for t in targets if health.latency(t.name) is None]
    measured = sorted((t for t in targets if health.latency(t.name) is not None),
                      key=lambda t: health.latency(t.name) or 0.0)
    ordered = unmeasured + measured
    if len(ordered) > 1 and explore > 0 and rng.random() < explore:
        ordered.insert(0, ordered.pop(1 + rng.randrange(len(ordered) - 1)))
    return ordered


ORDERS: dict[str, Callable[[list[Target], Health, Random, float], list[Target]]] = {
    "fallback": _fallback, "weighted": _weighted, "latency": _latency,
}


def plan(strategy: str, targets: Sequence[Target], health: Health, now: float, rng: Random,
         explore: float = 0.0) -> tuple[list[Target], bool]:
    """The ordered targets for one request, and whether they were forced (all cooling down)."""
    live = [t for t in targets if health.available(t.name, now)]
    return ORDERS[strategy](live or list(targets), health, rng, explore), not live
