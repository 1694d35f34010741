"""Every model a `type: bedrock` provider serves is priced from genai-prices' aws list, or the
gateway refuses to start with an error naming the model: never a silent $0."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tallygate.core.money import usd
from tallygate.pipeline.models import ModelCatalog
from tallygate.providers.http import HttpClient
from tallygate.providers.registry import build_providers
from tallygate.settings import ConfigError, parse_config
from tallygate.types import Usage

# One model id per family the provider routes (Converse for chat, InvokeModel for embeddings),
# as clients write them: bare ids and cross-region inference profiles (us., eu., global., ARNs).
FAMILIES = ["us.anthropic.claude-sonnet-4-5-20250929-v1:0", "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "eu.anthropic.claude-haiku-4-5-20251001-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "amazon.nova-pro-v1:0", "us.amazon.nova-lite-v1:0", "us.meta.llama3-3-70b-instruct-v1:0",
            "mistral.mistral-large-2402-v1:0", "us.deepseek.r1-v1:0", "openai.gpt-oss-120b-1:0",
            "qwen.qwen3-32b-v1:0", "us.writer.palmyra-x5-v1:0", "amazon.titan-embed-text-v2:0"]
UNLISTED = ["cohere.command-r-plus-v1:0", "cohere.embed-english-v3", "ai21.jamba-1-5-large-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5"]


def catalog(models: dict) -> ModelCatalog:
    config = parse_config({"providers": {"aws": {"type": "bedrock", "region": "us-east-1"}}, "models": models}, {})
    return ModelCatalog(config, build_providers(config, HttpClient()))


@pytest.mark.parametrize("model", FAMILIES)
def test_each_bedrock_family_is_priced_from_the_aws_list(model: str) -> None:
    cat = catalog({"m": {"provider": "aws", "model": model}})
    rate = cat.rate(cat.resolve("m"))
    assert rate.source.startswith("genai-prices") and rate.input > 0
    assert rate.output > 0 or "embed" in model


def test_claude_on_bedrock_is_priced_as_bedrock_prices_it_cache_included() -> None:
    cat = catalog({"m": {"provider": "aws", "model": FAMILIES[0]}})
    cost = cat.rate(cat.resolve("m")).cost(Usage(input_tokens=1000, output_tokens=100, cached_tokens=300,
                                                 cache_write_tokens=200, cache_write_1h_tokens=50))
    assert usd(cost) == (500 * Decimal("3.3") + 300 * Decimal("0.33") + 150 * Decimal("4.125")
                         + 50 * Decimal("6.6") + 100 * Decimal("16.5")) / 10**6


@pytest.mark.parametrize("model", UNLISTED)
def test_a_bedrock_model_without_a_price_is_a_start_up_error_naming_it(model: str) -> None:
    with pytest.raises(ConfigError, match=rf"models\.m: genai-prices has no bedrock price for '{model}'.*"
                                          r"set models\.m\.pricing"):
        catalog({"m": {"provider": "aws", "model": model}})
    priced = catalog({"m": {"provider": "aws", "model": model,
                            "pricing": {"input_per_mtok": "0.15", "output_per_mtok": "0.6"}}})
    assert priced.rate(priced.resolve("m")).source == "config"


def test_serve_refuses_an_unpriced_bedrock_model_without_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "tallygate.yaml"
    cfg.write_text("providers:\n  aws: {type: bedrock, region: us-east-1}\n"
                   "models:\n  command-r: {provider: aws, model: cohere.command-r-v1:0}\n")
    out = subprocess.run([sys.executable, "-m", "tallygate", "serve", "--config", str(cfg),
                          "--db", f"sqlite:///{tmp_path}/t.db"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "models.command-r: genai-prices has no bedrock price for 'cohere.command-r-v1:0'" in out.stderr


def test_an_unpriced_model_of_another_cloud_is_a_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    """Azure, Gemini, Vertex, OpenAI...: a model without a list price starts, with a warning that
    names it and the setting that prices it; a self-hosted server's models are free to run."""
    azure = {"type": "azure", "base_url": "https://r.openai.azure.com", "api_key": "k"}
    config = parse_config({"providers": {"az": azure, "local": {"type": "openai", "preset": "ollama"}},
                           "models": {"custom": {"provider": "az", "model": "my-gpt-4o-deployment"},
                                      "listed": {"provider": "az", "model": "gpt-4o-mini"},
                                      "llama": {"provider": "local", "model": "llama3.2"}}}, {})
    with caplog.at_level("WARNING", logger="tallygate.pricing"):
        ModelCatalog(config, build_providers(config, HttpClient()))
    warned = [r.getMessage() for r in caplog.records if r.name == "tallygate.pricing"]
    assert len(warned) == 1 and "models.custom" in warned[0] and "'my-gpt-4o-deployment'" in warned[0], warned
    assert "models.custom.pricing" in warned[0] and "$0" in warned[0]
