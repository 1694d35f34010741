"""Providers are a closed set chosen by `type:` in config: one constructor per type."""

from __future__ import annotations

from tallygate.providers.base import Provider
from tallygate.providers.http import HttpClient
from tallygate.settings import GatewayConfig


def build_providers(config: GatewayConfig, http: HttpClient) -> dict[str, Provider]:
    """One provider object per entry of `providers:`."""
    from tallygate.providers.anthropic import AnthropicProvider
    from tallygate.providers.mock import MockProvider
    from tallygate.providers.openai import OpenAIProvider

    out: dict[str, Provider] = {}
    for name, cfg in config.providers.items():
        if cfg.type == "openai":
            out[name] = OpenAIProvider(name, cfg, http)
        elif cfg.type == "anthropic":
            out[name] = AnthropicProvider(name, cfg, http)
        else:
            out[name] = MockProvider(name, cfg)
    return out
