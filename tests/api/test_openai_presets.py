"""`type: openai` with a `preset:` is priced by that service's own genai-prices list, through a
real gateway with the official `openai` SDK; the preset fills the base URL when none is given."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tallygate.settings import ConfigError, parse_config
from tests.fakes.upstream import FakeUpstream
from tests.gateway import ADMIN_KEY, Gateway, InProcessGateway


@pytest.fixture(scope="module")
def preset_gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    config = {
        "providers": {
            "groq": {"type": "openai", "preset": "groq", "base_url": upstream.base_url, "api_key": "gsk"},
            "deepseek": {"type": "openai", "preset": "deepseek", "base_url": upstream.base_url, "api_key": "d"},
            "ollama": {"type": "openai", "preset": "ollama", "base_url": upstream.base_url, "api_key": "o"},
        },
        "models": {
            "llama-70b": {"provider": "groq", "model": "llama-3.3-70b-versatile"},
            "deepseek-chat": {"provider": "deepseek", "model": "deepseek-chat"},
            "deepseek-cached": {"provider": "deepseek", "model": "cached-100"},
            "local": {"provider": "ollama", "model": "gpt-4o-mini"},
        },
    }
    gw = InProcessGateway(tmp_path_factory.mktemp("presets"), config).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize(("model", "input_mtok", "output_mtok"), [
    ("llama-70b", "0.59", "0.79"),      # groq's price; no other vendor lists this model name
    ("deepseek-chat", "0.27", "1.1"),   # deepseek's own price
])
@pytest.mark.parametrize("stream", [False, True])
def test_preset_model_is_priced_by_its_services_own_prices(preset_gateway: InProcessGateway, model: str,
                                                           input_mtok: str, output_mtok: str,
                                                           stream: bool) -> None:
    with openai.OpenAI(base_url=preset_gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        if stream:
            chunks = list(client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "price me"}], stream=True,
                stream_options={"include_usage": True}))
            request_id, usage = chunks[-1].id, chunks[-1].usage
        else:
            completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "price me"}])
            request_id, usage = completion.id, completion.usage
    assert usage is not None
    record = preset_gateway.log_record(request_id)
    expected = (usage.prompt_tokens * Decimal(input_mtok) + usage.completion_tokens * Decimal(output_mtok)) / 10**6
    assert Decimal(record["cost"]) == expected > 0
    assert record["pricing_source"].startswith("genai-prices")


def test_self_hosted_preset_is_not_priced_as_openai(preset_gateway: InProcessGateway) -> None:
    """An ollama server running a model named like OpenAI's costs nothing per token."""
    with openai.OpenAI(base_url=preset_gateway.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        completion = client.chat.completions.create(model="local", messages=[{"role": "user", "content": "hi"}])
    record = preset_gateway.log_record(completion.id)
    assert Decimal(record["cost"]) == 0 and record["pricing_source"] == "unpriced"


def test_preset_fills_the_base_url_unless_one_is_given() -> None:
    cfg = parse_config({"providers": {
        "g": {"type": "openai", "preset": "groq"},
        "x": {"type": "openai", "preset": "xai"},
        "mine": {"type": "openai", "preset": "vllm", "base_url": "http://gpu-box:8000/v1"},
    }, "models": {}}, env={})
    assert cfg.providers["g"].base_url == "https://api.groq.com/openai/v1"
    assert cfg.providers["x"].base_url == "https://api.x.ai/v1"
    assert cfg.providers["x"].price_list() == "x-ai"
    assert cfg.providers["mine"].base_url == "http://gpu-box:8000/v1"


@pytest.mark.parametrize(("provider", "message"), [
    ({"type": "openai", "preset": "grok"}, "providers.p.preset"),
    ({"type": "anthropic", "preset": "groq"}, "preset applies to type: openai only"),
])
def test_bad_preset_is_a_config_error_naming_the_field(provider: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({"providers": {"p": provider}, "models": {}}, env={})
    assert "providers.p" in str(info.value)


def test_a_cap_reaches_a_service_that_reads_only_max_tokens(upstream: FakeUpstream, tmp_path_factory:
                                                            pytest.TempPathFactory) -> None:
    """DeepSeek caps its output by `max_tokens` only: a limited request's `max_completion_tokens`
    (the client's, or the one the gateway sets) must reach it as `max_tokens`, or the output its
    reservation counted is not the output billed."""
    config = {
        "providers": {"deepseek": {"type": "openai", "preset": "deepseek", "base_url": upstream.base_url,
                                   "api_key": "d"}},
        "models": {"ds": {"provider": "deepseek", "model": "deepseek-long-3000",  # $0.001 a token
                          "pricing": {"input_per_mtok": "1000", "output_per_mtok": "1000"}}},
    }
    gw = InProcessGateway(tmp_path_factory.mktemp("deepseek-cap"), config).start()
    try:
        key = gw.create_key("ds", monthly_limit="0.5")
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
            for stream in (False, True):
                if stream:
                    chunks = list(client.chat.completions.create(
                        model="ds", messages=[{"role": "user", "content": "write"}], max_completion_tokens=100,
                        stream=True, stream_options={"include_usage": True}))
                    usage = chunks[-1].usage
                else:
                    usage = client.chat.completions.create(model="ds", messages=[{"role": "user", "content": "write"}],
                                                           max_completion_tokens=100).usage
                assert usage is not None and usage.completion_tokens <= 100, usage
        assert upstream.requests[-1]["body"]["max_tokens"] == 100
        assert gw.spend_when_settled(key) <= Decimal("0.5")
    finally:
        gw.stop()


@pytest.mark.parametrize(("preset", "field", "value"), [
    ("openrouter", "models", ["anthropic/claude-opus-4.1"]),  # served when the first model fails, at its price
    ("openrouter", "plugins", [{"id": "web", "max_results": 10}]),  # web results billed per result
    ("xai", "search_parameters", {"mode": "on", "max_search_results": 30}),  # $25 per 1,000 sources
])
def test_service_fields_that_pick_other_prices_are_refused_for_a_limited_key(
        upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory, preset: str, field: str,
        value: object) -> None:
    """A chat request reaches a named service as it is: OpenRouter's `models` lets it serve a
    fallback model (Claude Opus at $15 / $75 a million for a route priced at gpt-4o-mini's
    $0.15 / $0.60), its `plugins` and xAI's `search_parameters` run paid searches, none of it in
    what the gateway prices. A limited request carrying one is refused before the service is
    called; an unlimited one is served."""
    config = {
        "providers": {"svc": {"type": "openai", "preset": preset, "base_url": upstream.base_url,
                              "api_key": "sk-svc"}},
        "models": {"mini": {"provider": "svc", "model": f"{preset}-gpt-4o-mini",
                            "pricing": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}}},
    }
    gw = InProcessGateway(tmp_path_factory.mktemp(f"{preset}-{field}"), config).start()
    try:
        key = gw.create_key("or", monthly_limit="1")
        body = {"model": "mini", "messages": [{"role": "user", "content": "hi"}], field: value}
        sent = len(upstream.requests)
        status, _, answer = gw.post_json("/v1/chat/completions", body, key=key)
        assert status == 400 and answer["error"]["param"] == field, answer
        assert len(upstream.requests) == sent  # OpenRouter never called
        status, _, answer = gw.post_json("/v1/chat/completions", body)  # the admin key: no limit
        assert status == 200, answer
    finally:
        gw.stop()


def test_an_unnamed_openai_compatible_service_is_warned_about_at_start(upstream: FakeUpstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A `type: openai` provider at another URL than OpenAI's API, without a preset, is sent a
    limited request's cap as `max_completion_tokens` only (OpenAI refuses it together with
    `max_tokens`): a server reading `max_tokens` alone would answer past the hold. The log says
    so, naming the provider and the fix; a preset, or OpenAI's API, is not warned about."""
    config = {"providers": {"unnamed": {"type": "openai", "base_url": upstream.base_url, "api_key": "x"},
                            "named": {"type": "openai", "preset": "vllm", "base_url": upstream.base_url},
                            "openai": {"type": "openai", "base_url": "https://api.openai.com/v1", "api_key": "x"}},
              "models": {"a": {"provider": "unnamed", "model": "gpt-4o-mini"},
                         "b": {"provider": "named", "model": "llama", "pricing": {"input_per_mtok": "1"}},
                         "c": {"provider": "openai", "model": "gpt-4o-mini"}}}
    gw = Gateway(tmp_path, config).start()
    try:
        assert gw.get("/v1/models")[0] == 200
    finally:
        gw.stop()
    log = gw.log()
    assert "providers.unnamed: type: openai at a URL other than OpenAI's API, without `preset:`" in log, log
    assert "set providers.unnamed.preset" in log
    assert "providers.named:" not in log and "providers.openai:" not in log
