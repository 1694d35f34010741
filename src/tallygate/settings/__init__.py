"""The one place that reads the environment and the config file.

`load_config(path)` turns `tallygate.yaml` into typed, validated objects (their shape:
`settings/schema.py`, re-exported here); `Settings.from_env` gathers the `TALLYGATE_*` variables.
Errors are `ConfigError`s that name the offending field.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from tallygate.core.demo import demo_config
from tallygate.settings.schema import (
    ALERT_KINDS,
    DEFAULT_BASE_URLS,
    OPENAI_PRESETS,
    STRATEGIES,
    AlertsConfig,
    AzureEntraConfig,
    ConfigError,
    CooldownConfig,
    ErrorRateConfig,
    FallbackPolicyConfig,
    GatewayConfig,
    LatencyPolicyConfig,
    MetricsConfig,
    ModelConfig,
    PolicyConfig,
    PricingOverride,
    ProviderConfig,
    ReportingConfig,
    SpikeConfig,
    TracingConfig,
    WebhookConfig,
    WeightedPolicyConfig,
    WeightedTarget,
    target_names,
)

__all__ = [
    "ALERT_KINDS",
    "AlertsConfig",
    "AzureEntraConfig",
    "ConfigError",
    "CooldownConfig",
    "DEFAULT_BASE_URLS",
    "ErrorRateConfig",
    "FallbackPolicyConfig",
    "GatewayConfig",
    "LatencyPolicyConfig",
    "MetricsConfig",
    "ModelConfig",
    "OPENAI_PRESETS",
    "PolicyConfig",
    "PricingOverride",
    "ProviderConfig",
    "ReportingConfig",
    "STRATEGIES",
    "Settings",
    "SpikeConfig",
    "TracingConfig",
    "WebhookConfig",
    "WeightedPolicyConfig",
    "WeightedTarget",
    "load_config",
    "parse_config",
    "target_names",
]


def _resolve_env(value: str | None, where: str, env: dict[str, str]) -> str | None:
    """`env:NAME` reads NAME from the environment; anything else is taken literally."""
    if value is None or not value.startswith("env:"):
        return value
    name = value[4:]
    if name not in env or not env[name]:
        raise ConfigError(f"{where}: environment variable {name} is not set")
    return env[name]


def _field_path(loc: tuple[Any, ...]) -> str:
    if len(loc) > 2 and loc[0] == "policies" and loc[2] in STRATEGIES:
        loc = loc[:2] + loc[3:]  # the discriminated union's tag is not part of the user's path
    return ".".join(str(p) for p in loc)


def _message(err: dict[str, Any]) -> tuple[str, str]:
    """(field path, message) of one pydantic error, in the user's terms."""
    field = _field_path(err["loc"])
    if err["type"] == "extra_forbidden":
        return field, "unknown field"
    if err["type"] == "union_tag_invalid":
        return f"{field}.strategy", (f"unknown strategy {err['input'].get('strategy')!r} "
                                     f"(known: {', '.join(STRATEGIES)})")
    if err["type"] == "union_tag_not_found":
        return f"{field}.strategy", f"required (one of: {', '.join(STRATEGIES)})"
    return field, err["msg"]


def parse_config(raw: object, env: dict[str, str] | None = None) -> GatewayConfig:
    """Validate a parsed YAML document; resolve `env:` references; check cross references."""
    env = dict(os.environ) if env is None else env
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping with `providers` and `models`")
    try:
        cfg = GatewayConfig.model_validate(raw)
    except TypeError as exc:  # e.g. a YAML mapping used as a key
        raise ConfigError(f"invalid config: {exc}") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field, msg = _message(dict(err))
            lines.append(f"{field}: {msg}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
    providers = {}
    for name, p in cfg.providers.items():
        where = f"providers.{name}"
        if p.credentials_file and not Path(p.credentials_file).is_file():
            raise ConfigError(f"{where}.credentials_file: no such file: {p.credentials_file}")
        default_url = OPENAI_PRESETS[p.preset][0] if p.preset else DEFAULT_BASE_URLS.get(p.type)
        if not p.base_url and default_url:
            p = p.model_copy(update={"base_url": default_url})
        providers[name] = p.model_copy(update={
            "api_key": _resolve_env(p.api_key, f"{where}.api_key", env),
            "headers": {k: _resolve_env(v, f"{where}.headers.{k}", env) for k, v in p.headers.items()},
            "entra": p.entra and p.entra.model_copy(update={
                "client_secret": _resolve_env(p.entra.client_secret, f"{where}.entra.client_secret", env)}),
        })
    for name, m in cfg.models.items():
        if m.provider not in providers:
            raise ConfigError(f"models.{name}.provider: unknown provider {m.provider!r} "
                              f"(known: {', '.join(sorted(providers)) or 'none'})")
        if name.startswith("policy/"):
            raise ConfigError(f"models.{name}: names starting with 'policy/' are reserved")
    _check_policies(cfg)
    alerts = cfg.alerts.model_copy(update={"webhooks": [
        w.model_copy(update={"secret": _resolve_env(w.secret, f"alerts.webhooks.{i}.secret", env)})
        for i, w in enumerate(cfg.alerts.webhooks)]})
    token = _resolve_env(cfg.metrics.bearer_token, "metrics.bearer_token", env)
    return GatewayConfig.model_construct(providers=providers, models=cfg.models, policies=cfg.policies,
                                         alerts=alerts, metrics=cfg.metrics.model_copy(update={"bearer_token": token}),
                                         tracing=cfg.tracing, reporting=cfg.reporting)


def _check_policies(cfg: GatewayConfig) -> None:
    """Policy names are usable in `policy/<name>`; targets are distinct configured models."""
    for name, policy in cfg.policies.items():
        where = f"policies.{name}"
        if not name or "/" in name or name != name.strip():
            raise ConfigError(f"{where}: a policy name must be non-empty, without '/' or surrounding spaces")
        seen: set[str] = set()
        for i, target in enumerate(target_names(policy)):
            if target not in cfg.models:
                raise ConfigError(f"{where}.targets.{i}: unknown model {target!r} "
                                  f"(known: {', '.join(sorted(cfg.models)) or 'none'})")
            if target in seen:
                raise ConfigError(f"{where}.targets.{i}: {target!r} is listed twice")
            seen.add(target)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not "last
    one wins": two policies (or models, or providers) of the same name are a mistake to report."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> GatewayConfig:
    """Read `tallygate.yaml`, or the built-in demo config (`core/demo.py`) when `path` is None."""
    if path is None:
        return parse_config(demo_config(os.environ if env is None else env), env)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except TypeError:  # a mapping or list used as a key
        raise ConfigError(f"{path}: every key must be a plain string") from None
    return parse_config(raw, env)


def _networks(text: str) -> tuple[str, ...]:
    """TALLYGATE_TRUSTED_PROXIES: comma-separated IP addresses or networks (CIDR)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(f"TALLYGATE_TRUSTED_PROXIES: {part!r} is not an IP address or network") from None
    return tuple(out)


def _fake_now(text: str, rate: str) -> dict[str, object]:
    """TALLYGATE_FAKE_NOW and TALLYGATE_CLOCK_RATE (tests only: see `core/clock.py`)."""
    when, _, origin = text.partition("@")
    try:
        start = dt.datetime.fromisoformat(when)
        if start.tzinfo is None:
            raise ValueError(when)
        out: dict[str, object] = {"fake_now_ms": int(start.timestamp() * 1000), "clock_rate": float(rate)}
        if origin:
            out["fake_now_from_ms"] = int(origin)
    except ValueError:
        raise ConfigError("TALLYGATE_FAKE_NOW: must be an ISO 8601 instant with its offset, optionally "
                          "@<epoch ms>; TALLYGATE_CLOCK_RATE: a number") from None
    return out


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings: where the ledger lives and the limits the gateway enforces."""

    db_url: str = "sqlite:///tallygate.db"
    admin_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    ledger_flush_ms: int = 250
    shutdown_grace_s: int = 30  # on SIGTERM, how long requests in flight may still run
    ledger_batch: int = 1000
    routing_seed: int | None = None  # seeds routing randomness (weighted picks, exploration, jitter)
    log_format: str = "text"  # 'json': one JSON line per request and per log message
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR: prometheus_client's multiprocess mode
    # The HTTP edge (api/edges.py): caps and timeouts that hold without a key.
    max_manage_body_bytes: int = 64 * 1024  # management, feedback, analytics bodies
    max_head_bytes: int = 64 * 1024  # request line + headers
    header_timeout_s: int = 10  # from connection (or first byte of a request) to end of headers
    body_timeout_s: int = 30  # from end of headers to end of body
    idle_timeout_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 4096  # open connections (and requests in flight); 503 past it
    max_connections_per_address: int = 256  # open connections from one client address (IPv6: /64); 0: no cap
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For names the client
    # The ledger journal (store/journal.py).
    journal_dir: str | None = None  # default: `<db file>.journal/` for SQLite, `./tallygate-journal/`
    journal_max_bytes: int = 1024 * 1024 * 1024  # backlog past which the proxy answers 503
    journal_fsync: str = "batch"  # "off" | "batch" | "always": see the README
    redis_url: str | None = None  # shared budget state for several processes/replicas; None: in memory
    budgets_unavailable: str = "closed"  # Redis unreachable: 'closed' refuses limited requests, 'open' serves
    budgets_open_allowance: Decimal = Decimal(1)  # USD served per limited scope and process while Redis is away
    hold_ttl_s: float = 15.0  # a dead process's reservations are gone this long after its last renewal
    analytics_columnar: str | None = None  # DuckDB copy: a file, ':memory:' or 'off' (analytics/columnar_service.py)
    # Tests only (core/clock.py): TALLYGATE_FAKE_NOW=<ISO 8601 instant>[@<system epoch ms it is read at>]
    # and TALLYGATE_CLOCK_RATE=<how many times as fast the clock runs>.
    fake_now_ms: int | None = None
    fake_now_from_ms: int | None = None
    clock_rate: float = 1.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, object] = {}
        if env.get("TALLYGATE_DB_URL"):
            values["db_url"] = env["TALLYGATE_DB_URL"]
        if env.get("TALLYGATE_ADMIN_KEY"):
            values["admin_key"] = env["TALLYGATE_ADMIN_KEY"]
        if env.get("PROMETHEUS_MULTIPROC_DIR"):
            values["metrics_dir"] = env["PROMETHEUS_MULTIPROC_DIR"]
        if env.get("TALLYGATE_LOG_FORMAT"):
            if env["TALLYGATE_LOG_FORMAT"] not in ("text", "json"):
                raise ConfigError("TALLYGATE_LOG_FORMAT: must be text or json")
            values["log_format"] = env["TALLYGATE_LOG_FORMAT"]
        if env.get("TALLYGATE_REDIS_URL"):
            values["redis_url"] = env["TALLYGATE_REDIS_URL"]
        if env.get("TALLYGATE_BUDGETS_UNAVAILABLE"):
            values["budgets_unavailable"] = env["TALLYGATE_BUDGETS_UNAVAILABLE"]
        if env.get("TALLYGATE_BUDGETS_OPEN_ALLOWANCE"):
            try:
                allowance = Decimal(env["TALLYGATE_BUDGETS_OPEN_ALLOWANCE"])
            except ArithmeticError:
                raise ConfigError("TALLYGATE_BUDGETS_OPEN_ALLOWANCE: must be an amount in USD") from None
            if not allowance.is_finite() or allowance < 0:
                raise ConfigError("TALLYGATE_BUDGETS_OPEN_ALLOWANCE: must be an amount in USD, 0 or more")
            values["budgets_open_allowance"] = allowance
        if env.get("TALLYGATE_HOLD_TTL_S"):
            try:
                values["hold_ttl_s"] = float(env["TALLYGATE_HOLD_TTL_S"])
            except ValueError:
                raise ConfigError("TALLYGATE_HOLD_TTL_S: must be a number of seconds") from None
        for name, field in (("TALLYGATE_MAX_BODY_BYTES", "max_body_bytes"),
                            ("TALLYGATE_LEDGER_FLUSH_MS", "ledger_flush_ms"),
                            ("TALLYGATE_SHUTDOWN_GRACE_S", "shutdown_grace_s"),
                            ("TALLYGATE_ROUTING_SEED", "routing_seed"),
                            ("TALLYGATE_MAX_MANAGE_BODY_BYTES", "max_manage_body_bytes"),
                            ("TALLYGATE_MAX_HEAD_BYTES", "max_head_bytes"),
                            ("TALLYGATE_HEADER_TIMEOUT_S", "header_timeout_s"),
                            ("TALLYGATE_BODY_TIMEOUT_S", "body_timeout_s"),
                            ("TALLYGATE_IDLE_TIMEOUT_S", "idle_timeout_s"),
                            ("TALLYGATE_MAX_CONNECTIONS", "max_connections"),
                            ("TALLYGATE_MAX_CONNECTIONS_PER_ADDRESS", "max_connections_per_address"),
                            ("TALLYGATE_JOURNAL_MAX_BYTES", "journal_max_bytes")):
            if env.get(name):
                try:
                    values[field] = int(env[name])
                except ValueError:
                    raise ConfigError(f"{name}: must be an integer") from None
        if env.get("TALLYGATE_TRUSTED_PROXIES"):
            values["trusted_proxies"] = _networks(env["TALLYGATE_TRUSTED_PROXIES"])
        if env.get("TALLYGATE_ANALYTICS_COLUMNAR"):
            values["analytics_columnar"] = env["TALLYGATE_ANALYTICS_COLUMNAR"]
        if env.get("TALLYGATE_JOURNAL_DIR"):
            values["journal_dir"] = env["TALLYGATE_JOURNAL_DIR"]
        if env.get("TALLYGATE_JOURNAL_FSYNC"):
            if env["TALLYGATE_JOURNAL_FSYNC"] not in ("off", "batch", "always"):
                raise ConfigError("TALLYGATE_JOURNAL_FSYNC: must be off, batch or always")
            values["journal_fsync"] = env["TALLYGATE_JOURNAL_FSYNC"]
        if env.get("TALLYGATE_FAKE_NOW"):
            values.update(_fake_now(env["TALLYGATE_FAKE_NOW"], env.get("TALLYGATE_CLOCK_RATE") or "1"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("budgets_unavailable", "closed") not in ("closed", "open"):
            raise ConfigError("TALLYGATE_BUDGETS_UNAVAILABLE / --budgets-unavailable: must be 'closed' or 'open'")
        redis_url = values.get("redis_url")
        if isinstance(redis_url, str) and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("TALLYGATE_REDIS_URL / --redis: must be a redis://, rediss:// or unix:// URL")
        if not 1.0 <= float(values.get("hold_ttl_s", 15.0)) <= 60.0:  # type: ignore[arg-type]
            raise ConfigError("TALLYGATE_HOLD_TTL_S: must be between 1 and 60 seconds")
        return cls(**values)  # type: ignore[arg-type]
