"""Providers are a closed set chosen by `type:` in config: one row per type.

Adding a provider type is adding its module and its row here (and its name to
`settings.ProviderConfig.type`); what it can do natively it declares by implementing the
capability protocols of `providers.base`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tallygate.providers.anthropic import AnthropicProvider
from tallygate.providers.azure import AzureOpenAIProvider
from tallygate.providers.base import Provider
from tallygate.providers.bedrock import BedrockClaudeProvider, BedrockProvider
from tallygate.providers.gemini_embed import GeminiApiProvider
from tallygate.providers.http import HttpClient
from tallygate.providers.mock import MockProvider
from tallygate.providers.openai import OpenAIProvider
from tallygate.providers.vertex import VertexClaudeProvider, VertexGeminiProvider
from tallygate.settings import GatewayConfig, ProviderConfig

log = logging.getLogger(__name__)

Constructor = Callable[[str, ProviderConfig, HttpClient], Provider]
PROVIDER_TYPES: dict[str, Constructor] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "azure": AzureOpenAIProvider,
    "bedrock": lambda name, cfg, http: (BedrockClaudeProvider if cfg.anthropic_messages else BedrockProvider)(
        name, cfg, http),
    "gemini": GeminiApiProvider,
    "vertex": lambda name, cfg, http: (VertexClaudeProvider if cfg.publisher == "anthropic" else VertexGeminiProvider)(
        name, cfg, http),
    "mock": MockProvider,
}


class ProviderSet:
    """The providers of a gateway process, as a service: `stop` closes each (credentials that hold
    connections or background refreshes, such as Azure's Entra tokens)."""

    def __init__(self, providers: dict[str, Provider]) -> None:
        self.providers = providers

    async def start(self) -> None:
        """Nothing to do: credentials are fetched on first use."""

    async def stop(self) -> None:
        for name, provider in self.providers.items():
            try:
                await provider.close()
            except Exception:
                log.exception("closing provider %r failed", name)


def build_providers(config: GatewayConfig, http: HttpClient) -> dict[str, Provider]:
    """One provider object per entry of `providers:`."""
    return {name: PROVIDER_TYPES[cfg.type](name, cfg, http) for name, cfg in config.providers.items()}
