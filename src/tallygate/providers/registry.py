"""Providers are a closed set chosen by `type:` in config: one row per type.

Adding a provider type is adding its module and its row here (and its name to
`settings.ProviderConfig.type`); what it can do natively it declares by implementing the
capability protocols of `providers.base`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

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
    for name, cfg in config.providers.items():
        if cfg.type == "openai" and cfg.preset is None and not _openai_api(cfg.base_url):
            log.warning(UNNAMED_SERVICE, name, name)
    return {name: PROVIDER_TYPES[cfg.type](name, cfg, http) for name, cfg in config.providers.items()}


# A `type: openai` provider without a preset is sent a chat body as it is: the output cap a limited
# request reserved for is `max_completion_tokens` (OpenAI refuses `max_tokens` with it, and its
# reasoning models refuse `max_tokens` alone), which many OpenAI-compatible servers ignore.
UNNAMED_SERVICE = ("providers.%s: type: openai at a URL other than OpenAI's API, without `preset:`: a "
                   "limited request's output cap is sent as max_completion_tokens only, which a server that "
                   "reads max_tokens alone ignores, answering (and spending) past what the request reserved; "
                   "set providers.%s.preset (vllm, ollama, deepseek ...) unless the server is OpenAI's API")


def _openai_api(base_url: str | None) -> bool:
    """Whether `base_url` is OpenAI's own API (the default when none is given)."""
    return base_url is None or urlsplit(base_url).hostname == "api.openai.com"
