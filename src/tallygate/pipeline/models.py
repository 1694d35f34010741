"""The model catalogue: a requested model name -> the provider and upstream model serving it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tallygate.errors import InvalidRequest, ModelNotFound
from tallygate.pipeline.pricing import FREE_TO_RUN, MUST_PRICE, UNPRICED, PriceBook, Rate, listed_window
from tallygate.providers.base import Capabilities, Provider
from tallygate.settings import ConfigError, GatewayConfig, PricingOverride

log = logging.getLogger("tallygate.pricing")


@dataclass(frozen=True, slots=True)
class Route:
    """Where one configured model is served, how it is priced, and what its provider can do
    natively (`native`)."""

    name: str
    provider_name: str
    provider_type: str  # the provider's `type:`
    provider: Provider
    upstream_model: str
    pricing: PricingOverride | None
    native: Capabilities
    kind: str = "chat"  # "chat" or "embeddings" (`ModelConfig.model_kind`)
    price_list: str = "mock"  # whose prices apply (`ProviderConfig.price_list`)
    context_window: int | None = None  # `ModelConfig.context_window`, else the price list's


_KIND_OF_ENDPOINT = {"chat": "chat", "messages": "chat", "count_tokens": "chat", "responses": "chat",
                     "embeddings": "embeddings"}


def check_kind(routes: Sequence[Route], endpoint: str, model: str) -> None:
    """A 400 naming `model` when a target is not the kind of model the endpoint serves (a chat
    request to an embeddings model, embeddings from a chat model), before any provider is called."""
    wanted = _KIND_OF_ENDPOINT.get(endpoint)
    for route in routes:
        if wanted is not None and route.kind != wanted:
            what, use = (("an embeddings", "/v1/embeddings") if route.kind == "embeddings"
                         else ("a chat", "/v1/chat/completions"))
            via = "" if route.name == model else f" (a target of {model!r})"
            raise InvalidRequest(f"the model {route.name!r}{via} is {what} model: use {use} for it "
                                 "(or set `kind:` in its config if this is wrong)",
                                 param="model", code="model_kind_mismatch")


class ModelCatalog:
    """Resolves configured model names and prices their usage."""

    def __init__(self, config: GatewayConfig, providers: dict[str, Provider],
                 prices: PriceBook | None = None) -> None:
        self._routes = {
            name: Route(name, m.provider, config.providers[m.provider].type, providers[m.provider],
                        m.model, m.pricing, Capabilities.of(providers[m.provider]), m.model_kind(),
                        config.providers[m.provider].price_list(), m.context_window)
            for name, m in config.models.items()
        }
        self._policies = list(config.policies)
        self._prices = prices or PriceBook()
        for route in self._routes.values():  # load pricing data now, not on the first request
            if self.rate(route).source != UNPRICED.source:
                continue
            unpriced = (f"models.{route.name}: genai-prices has no {route.provider_type} price for "
                        f"{route.upstream_model!r}; set models.{route.name}.pricing "
                        "(input_per_mtok, output_per_mtok ...)")
            if route.price_list in MUST_PRICE:
                raise ConfigError(unpriced)
            if route.price_list not in FREE_TO_RUN:
                log.warning("%s: until then its requests are recorded at $0", unpriced)

    def resolve(self, name: object) -> Route:
        route = self._routes.get(name) if isinstance(name, str) else None
        if route is None:
            raise ModelNotFound(f"the model {name!r} does not exist on this gateway; "
                                "GET /v1/models lists the ones that do", param="model")
        return route

    def rate(self, route: Route) -> Rate:
        return self._prices.rate(route.price_list, route.upstream_model, route.pricing)

    def context_window(self, route: Route) -> int | None:
        """Input tokens one request to the model can hold, if known (config, else genai-prices)."""
        return route.context_window or listed_window(route.price_list, route.upstream_model)

    def listing(self) -> dict[str, Any]:
        return {"object": "list", "data": [
            *({"id": r.name, "object": "model", "created": 0, "owned_by": r.provider_name}
              for r in self._routes.values()),
            *({"id": "policy/" + name, "object": "model", "created": 0, "owned_by": "tallygate"}
              for name in self._policies)]}
