"""The built-in demo config: what `tallygate serve` runs without `--config`.

An in-process mock answers its OpenAI and Anthropic models, so the demo needs no account. A
cloud provider type joins it, with one model, when the environment variables its own SDKs read
are set (nothing is sent anywhere otherwise):

- `azure`: `AZURE_OPENAI_ENDPOINT` and `AZURE_OPENAI_API_KEY` (deployment `AZURE_OPENAI_DEPLOYMENT`,
  default gpt-4o-mini) add `azure-gpt-4o-mini`;
- `bedrock`: `AWS_REGION` (credentials from AWS's usual chain) adds `bedrock-claude-haiku`;
- `gemini`: `GEMINI_API_KEY` adds `gemini-2.5-flash`;
- `vertex`: `GOOGLE_CLOUD_PROJECT` (`GOOGLE_CLOUD_LOCATION`, default us-central1; Google's
  application default credentials) adds `vertex-gemini-2.5-flash`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEMO_CONFIG: dict[str, Any] = {
    "providers": {"demo": {"type": "mock", "latency_ms": 0}},
    "models": {
        "gpt-4o-mini": {"provider": "demo", "model": "gpt-4o-mini"},
        "claude-3.5-haiku": {"provider": "demo", "model": "claude-3-5-haiku-latest"},
        "text-embedding-3-small": {"provider": "demo", "model": "text-embedding-3-small"},
        "demo-local": {"provider": "demo", "model": "demo-local",
                       "pricing": {"input_per_mtok": "0.05", "output_per_mtok": "0.10"}},
    },
}
BEDROCK_DEMO_MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def demo_config(env: Mapping[str, str]) -> dict[str, Any]:
    """DEMO_CONFIG with a provider and a model of each cloud type whose variables `env` sets."""
    providers, models = dict(DEMO_CONFIG["providers"]), dict(DEMO_CONFIG["models"])
    if env.get("AZURE_OPENAI_ENDPOINT") and env.get("AZURE_OPENAI_API_KEY"):
        providers["azure"] = {"type": "azure", "base_url": env["AZURE_OPENAI_ENDPOINT"].rstrip("/"),
                              "api_key": "env:AZURE_OPENAI_API_KEY"}
        deployment = env.get("AZURE_OPENAI_DEPLOYMENT") or "gpt-4o-mini"
        models["azure-gpt-4o-mini"] = {"provider": "azure", "model": deployment}
    if env.get("AWS_REGION"):
        providers["bedrock"] = {"type": "bedrock", "region": env["AWS_REGION"], "anthropic_messages": True}
        models["bedrock-claude-haiku"] = {"provider": "bedrock", "model": BEDROCK_DEMO_MODEL}
    if env.get("GEMINI_API_KEY"):
        providers["gemini"] = {"type": "gemini", "api_key": "env:GEMINI_API_KEY"}
        models["gemini-2.5-flash"] = {"provider": "gemini", "model": "gemini-2.5-flash"}
    if env.get("GOOGLE_CLOUD_PROJECT"):
        providers["vertex"] = {"type": "vertex", "project": env["GOOGLE_CLOUD_PROJECT"],
                               "location": env.get("GOOGLE_CLOUD_LOCATION") or "us-central1"}
        models["vertex-gemini-2.5-flash"] = {"provider": "vertex", "model": "gemini-2.5-flash"}
    return {"providers": providers, "models": models}
