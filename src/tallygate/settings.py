"""The one place that reads the environment and the config file.

`load_config(path)` turns `tallygate.yaml` into typed, validated objects; `Settings.from_env`
gathers the `TALLYGATE_*` variables. Errors are `ConfigError`s that name the offending field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """The config file or the environment is wrong; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PricingOverride(_Strict):
    """USD per million tokens; strings keep them exact."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal = Decimal(0)
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None

    @field_validator("*")
    @classmethod
    def _non_negative(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and (not v.is_finite() or v < 0):
            raise ValueError("must be a non-negative number")
        return v


class ProviderConfig(_Strict):
    type: Literal["openai", "anthropic", "mock"]
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0  # mock only: time before the first byte
    headers: dict[str, str] = {}


class ModelConfig(_Strict):
    provider: str
    model: str
    pricing: PricingOverride | None = None


class GatewayConfig(_Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]


DEMO_CONFIG = {
    "providers": {"demo": {"type": "mock", "latency_ms": 0}},
    "models": {
        "gpt-4o-mini": {"provider": "demo", "model": "gpt-4o-mini"},
        "claude-3.5-haiku": {"provider": "demo", "model": "claude-3-5-haiku-latest"},
        "text-embedding-3-small": {"provider": "demo", "model": "text-embedding-3-small"},
        "demo-local": {"provider": "demo", "model": "demo-local",
                       "pricing": {"input_per_mtok": "0.05", "output_per_mtok": "0.10"}},
    },
}


def _resolve_env(value: str | None, where: str, env: dict[str, str]) -> str | None:
    """`env:NAME` reads NAME from the environment; anything else is taken literally."""
    if value is None or not value.startswith("env:"):
        return value
    name = value[4:]
    if name not in env or not env[name]:
        raise ConfigError(f"{where}: environment variable {name} is not set")
    return env[name]


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def parse_config(raw: object, env: dict[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed YAML document; resolve `env:` references; check cross references."""
    env = dict(os.environ) if env is None else env
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping with `providers` and `models`")
    try:
        cfg = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = _field_path(err["loc"])
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{field}: {msg}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
    providers = {}
    for name, p in cfg.providers.items():
        where = f"providers.{name}"
        if p.type == "openai" and not p.base_url:
            p = p.model_copy(update={"base_url": "https://api.openai.com/v1"})
        if p.type == "anthropic" and not p.base_url:
            p = p.model_copy(update={"base_url": "https://api.anthropic.com"})
        providers[name] = p.model_copy(update={
            "api_key": _resolve_env(p.api_key, f"{where}.api_key", env),
            "headers": {k: _resolve_env(v, f"{where}.headers.{k}", env) for k, v in p.headers.items()},
        })
    for name, m in cfg.models.items():
        if m.provider not in providers:
            raise ConfigError(f"models.{name}.provider: unknown provider {m.provider!r} "
                              f"(known: {', '.join(sorted(providers)) or 'none'})")
        if name.startswith("policy/"):
            raise ConfigError(f"models.{name}: names starting with 'policy/' are reserved")
    return GatewayConfig.model_construct(providers=providers, models=cfg.models)


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> GatewayConfig:
    """Read `tallygate.yaml`, or the built-in demo config when `path` is None."""
    if path is None:
        return parse_config(DEMO_CONFIG, env)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, env)


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings: where the ledger lives and the limits the gateway enforces."""

    db_url: str = "sqlite:///tallygate.db"
    admin_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    ledger_flush_ms: int = 50
    ledger_batch: int = 1000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {}
        if env.get("TALLYGATE_DB_URL"):
            values["db_url"] = env["TALLYGATE_DB_URL"]
        if env.get("TALLYGATE_ADMIN_KEY"):
            values["admin_key"] = env["TALLYGATE_ADMIN_KEY"]
        for name, field in (("TALLYGATE_MAX_BODY_BYTES", "max_body_bytes"),
                            ("TALLYGATE_LEDGER_FLUSH_MS", "ledger_flush_ms")):
            if env.get(name):
                try:
                    values[field] = int(env[name])
                except ValueError:
                    raise ConfigError(f"{name}: must be an integer") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
