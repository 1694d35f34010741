"""Config validation: every mistake is a clear error naming the field."""

from __future__ import annotations

import pytest

from tallygate.settings import ConfigError, load_config, parse_config

GOOD = {
    "providers": {"openai": {"type": "openai", "api_key": "env:OPENAI_API_KEY"},
                  "anthropic": {"type": "anthropic", "api_key": "env:ANTHROPIC_API_KEY"},
                  "local": {"type": "openai", "base_url": "http://127.0.0.1:8000/v1"},
                  "demo": {"type": "mock"}},
    "models": {"gpt-4o-mini": {"provider": "openai", "model": "gpt-4o-mini"},
               "local-llama": {"provider": "local", "model": "llama-3.1-8b",
                               "pricing": {"input_per_mtok": "0.05", "output_per_mtok": "0.10"}}},
}
ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}


def test_issue_shaped_config_is_accepted_and_env_resolved() -> None:
    cfg = parse_config(GOOD, ENV)
    assert cfg.providers["openai"].api_key == "sk-o"
    assert cfg.providers["openai"].base_url == "https://api.openai.com/v1"
    assert cfg.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert str(cfg.models["local-llama"].pricing.input_per_mtok) == "0.05"


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["providers"]["demo"].update(colour="red"), "providers.demo.colour: unknown field"),
    (lambda c: c["providers"]["demo"].update(type="cohere"), "providers.demo.type"),
    (lambda c: c["models"]["gpt-4o-mini"].update(provider="nope"), "models.gpt-4o-mini.provider: unknown provider"),
    (lambda c: c["models"]["local-llama"]["pricing"].update(input_per_mtok="-1"), "input_per_mtok"),
    (lambda c: c.update(extra=1), "extra: unknown field"),
    (lambda c: c.update(reporting={"timezone": "Europe/Berln"}), "reporting.timezone: Value error, unknown time zone"),
])
def test_mistakes_name_the_field(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    import copy

    cfg = copy.deepcopy(GOOD)
    mutate(cfg)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(cfg, ENV)


def test_missing_env_var_names_field_and_variable() -> None:
    with pytest.raises(ConfigError, match=r"providers\.anthropic\.api_key: environment variable "
                                          r"ANTHROPIC_API_KEY is not set"):
        parse_config(GOOD, {"OPENAI_API_KEY": "x"})


def test_unreadable_and_invalid_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_serve_reports_config_errors_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    cfg = tmp_path / "tallygate.yaml"
    cfg.write_text("providers:\n  x: {type: mock, colour: red}\nmodels: {}\n")
    out = subprocess.run([sys.executable, "-m", "tallygate", "serve", "--config", str(cfg),
                          "--db", f"sqlite:///{tmp_path}/t.db"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "providers.x.colour: unknown field" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("provider, message", [
    ({"type": "openai", "base_url": "not a url"}, "providers.p.base_url"),
    ({"type": "openai", "base_url": "ftp://files.example/v1"}, "providers.p.base_url"),
    ({"type": "openai", "headers": {"X-A": "v\r\nInjected: 1"}}, "providers.p.headers"),
    ({"type": "openai", "latency_ms": 5}, "latency_ms applies to type: mock only"),
])
def test_provider_mistakes_that_would_fail_every_request_stop_start_up(provider: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({"providers": {"p": provider}, "models": {}}, {})


def test_yaml_with_a_non_string_key_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("providers:\n  ? [a, b]\n  : {type: mock}\nmodels: {}\n")
    with pytest.raises(ConfigError, match="plain string"):
        load_config(cfg)


def test_reporting_timezone_is_an_iana_name_and_utc_by_default() -> None:
    assert parse_config(GOOD, ENV).reporting.timezone == "UTC"
    cfg = parse_config({**GOOD, "reporting": {"timezone": "Asia/Kathmandu"}}, ENV)
    assert cfg.reporting.timezone == "Asia/Kathmandu"
