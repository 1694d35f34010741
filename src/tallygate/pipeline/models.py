"""The model catalogue: a requested model name -> the provider and upstream model serving it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tallygate.errors import ModelNotFound
from tallygate.pipeline.pricing import PriceBook, Rate
from tallygate.providers.base import Capabilities, Provider
from tallygate.settings import GatewayConfig, PricingOverride


@dataclass(frozen=True, slots=True)
class Route:
    """Where one configured model is served, how it is priced, and what its provider can do
    natively (`native`)."""

    name: str
    provider_name: str
    provider_type: str  # the provider's `type:`, which names its price list
    provider: Provider
    upstream_model: str
    pricing: PricingOverride | None
    native: Capabilities


class ModelCatalog:
    """Resolves configured model names and prices their usage."""

    def __init__(self, config: GatewayConfig, providers: dict[str, Provider],
                 prices: PriceBook | None = None) -> None:
        self._routes = {
            name: Route(name, m.provider, config.providers[m.provider].type, providers[m.provider],
                        m.model, m.pricing, Capabilities.of(providers[m.provider]))
            for name, m in config.models.items()
        }
        self._policies = list(config.policies)
        self._prices = prices or PriceBook()
        for route in self._routes.values():  # load pricing data now, not on the first request
            self.rate(route)

    def resolve(self, name: object) -> Route:
        route = self._routes.get(name) if isinstance(name, str) else None
        if route is None:
            raise ModelNotFound(f"the model {name!r} does not exist on this gateway; "
                                "GET /v1/models lists the ones that do", param="model")
        return route

    def rate(self, route: Route) -> Rate:
        return self._prices.rate(route.provider_type, route.upstream_model, route.pricing)

    def listing(self) -> dict[str, Any]:
        return {"object": "list", "data": [
            *({"id": r.name, "object": "model", "created": 0, "owned_by": r.provider_name}
              for r in self._routes.values()),
            *({"id": "policy/" + name, "object": "model", "created": 0, "owned_by": "tallygate"}
              for name in self._policies)]}
