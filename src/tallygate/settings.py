"""The one place that reads the environment and the config file.

`load_config(path)` turns `tallygate.yaml` into typed, validated objects; `Settings.from_env`
gathers the `TALLYGATE_*` variables. Errors are `ConfigError`s that name the offending field.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tallygate.core.addresses import is_ip, is_public
from tallygate.core.demo import demo_config
from tallygate.core.zones import zone


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
    cache_write_1h_per_mtok: Decimal | None = None  # Anthropic's 1-hour TTL; default: cache_write
    # USD per use of a provider-run tool (pipeline/tool_fees.py); default: the model's list price
    web_search_per_call: Decimal | None = None
    file_search_per_call: Decimal | None = None
    code_session_per_call: Decimal | None = None  # per 1 GB code container

    @field_validator("*")
    @classmethod
    def _non_negative(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and (not v.is_finite() or v < 0):
            raise ValueError("must be a non-negative number")
        return v


# `type: openai` presets: a known OpenAI-compatible service -> (its base URL, the genai-prices
# provider that prices its models). Self-hosted servers (ollama, vllm) have no list price.
OPENAI_PRESETS: dict[str, tuple[str, str]] = {
    "groq": ("https://api.groq.com/openai/v1", "groq"),
    "together": ("https://api.together.xyz/v1", "together"),
    "fireworks": ("https://api.fireworks.ai/inference/v1", "fireworks"),
    "deepseek": ("https://api.deepseek.com/v1", "deepseek"),
    "xai": ("https://api.x.ai/v1", "x-ai"),
    "mistral": ("https://api.mistral.ai/v1", "mistral"),
    "openrouter": ("https://openrouter.ai/api/v1", "openrouter"),
    "ollama": ("http://localhost:11434/v1", "self-hosted"),
    "vllm": ("http://localhost:8000/v1", "self-hosted"),
}
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com",
                     "gemini": "https://generativelanguage.googleapis.com"}


class AzureEntraConfig(_Strict):
    """A Microsoft Entra ID credential (azure-identity) whose tokens authenticate `type: azure`.
    A field left out is read by azure-identity from its usual environment variables
    (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, IDENTITY_ENDPOINT ...)."""

    credential: Literal["client_secret", "managed_identity", "workload_identity"]
    tenant_id: str | None = None
    client_id: str | None = None  # managed identity: a user-assigned identity's client id
    client_secret: str | None = None  # client_secret only (`env:NAME`)
    token_file: str | None = None  # workload_identity only: the federated (Kubernetes) token file
    authority_host: str | None = None  # default https://login.microsoftonline.com (sovereign clouds differ)
    scope: str = "https://cognitiveservices.azure.com/.default"

    @model_validator(mode="after")
    def _fields_of_the_credential(self) -> AzureEntraConfig:
        if self.credential == "client_secret" and not (self.tenant_id and self.client_id and self.client_secret):
            raise ValueError("credential client_secret needs tenant_id, client_id and client_secret")
        if self.client_secret is not None and self.credential != "client_secret":
            raise ValueError("client_secret applies to credential: client_secret only")
        if self.token_file is not None and self.credential != "workload_identity":
            raise ValueError("token_file applies to credential: workload_identity only")
        if self.authority_host is not None and not self.authority_host.startswith("https://"):
            raise ValueError("authority_host must be an https:// URL (azure-identity refuses others)")
        return self


class ProviderConfig(_Strict):
    type: Literal["openai", "anthropic", "azure", "bedrock", "gemini", "vertex", "mock"]
    preset: Literal["groq", "together", "fireworks", "deepseek", "xai", "mistral", "openrouter",
                    "ollama", "vllm"] | None = None  # type: openai only
    base_url: str | None = None
    api_key: str | None = None
    api_version: str | None = None  # azure only: use the deployment URLs with this `api-version`
    entra: AzureEntraConfig | None = None  # azure only: Microsoft Entra tokens instead of api_key
    project: str | None = None  # vertex only (required): the Google Cloud project id
    location: str | None = None  # vertex only: the region (default us-central1) or `global`
    credentials_file: str | None = None  # vertex only: a service-account JSON; default: ADC
    publisher: Literal["google", "anthropic"] | None = None  # vertex only: Gemini (default) or Claude
    region: str | None = None  # bedrock only (required): the AWS region, e.g. us-east-1
    anthropic_messages: bool = False  # bedrock only: /v1/messages natively via InvokeModel (Claude)
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0  # mock only: time before the first byte
    headers: dict[str, str] = {}

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return v

    @field_validator("headers")
    @classmethod
    def _header_values(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not name or any(c in name for c in " :\r\n") or any(c in value for c in "\r\n\x00"):
                raise ValueError(f"header {name!r} has a name or value that cannot be sent")
        return v

    @model_validator(mode="after")
    def _mock_only(self) -> ProviderConfig:
        if self.latency_ms and self.type != "mock":
            raise ValueError("latency_ms applies to type: mock only")
        if self.preset and self.type != "openai":
            raise ValueError("preset applies to type: openai only")
        if self.api_version is not None and self.type != "azure":
            raise ValueError("api_version applies to type: azure only")
        if self.entra is not None and self.type != "azure":
            raise ValueError("entra applies to type: azure only")
        if self.entra is not None and self.api_key:
            raise ValueError("give api_key or entra, not both")
        for name in ("project", "location", "credentials_file", "publisher"):
            if getattr(self, name) is not None and self.type != "vertex":
                raise ValueError(f"{name} applies to type: vertex only")
        if self.type == "vertex" and not self.project:
            raise ValueError("project is required for type: vertex (the Google Cloud project id)")
        if self.type == "vertex" and self.api_key:
            raise ValueError("api_key does not apply to type: vertex (it uses Google credentials)")
        if self.region is not None and self.type != "bedrock":
            raise ValueError("region applies to type: bedrock only")
        if self.anthropic_messages and self.type != "bedrock":
            raise ValueError("anthropic_messages applies to type: bedrock only")
        if self.type == "bedrock" and not self.region:
            raise ValueError("region is required for type: bedrock (the AWS region, e.g. us-east-1)")
        if self.type == "azure" and not self.base_url:
            raise ValueError("base_url is required for type: azure (https://<resource>.openai.azure.com)")
        return self

    def price_list(self) -> str:
        """Whose prices apply to this provider's models: a genai-prices provider id (the
        preset's, else the type's), `self-hosted` (no list price) or `mock` (any list)."""
        return OPENAI_PRESETS[self.preset][1] if self.preset else self.type


class ModelConfig(_Strict):
    provider: str
    model: str
    pricing: PricingOverride | None = None
    # What the model does: chat (chat, messages, responses) or embeddings. Default: embeddings
    # when the upstream model's name says "embed" (text-embedding-3-small, nomic-embed-text ...).
    kind: Literal["chat", "embeddings"] | None = None
    # Input tokens one request to the model can hold (default: genai-prices' figure). Bounds what
    # provider-run tools' results can add to a limited request (`pipeline/tool_fees.py`).
    context_window: Annotated[int, Field(ge=1)] | None = None

    def model_kind(self) -> str:
        return self.kind or ("embeddings" if "embed" in self.model.lower() else "chat")


class CooldownConfig(_Strict):
    """After `failures` consecutive failures a target sits out `seconds`, then one probe may try it."""

    failures: Annotated[int, Field(ge=1)] = 3
    seconds: Annotated[float, Field(gt=0)] = 30.0


class _PolicyBase(_Strict):
    """What every routing strategy shares: per-attempt timeout, retry rounds, cooldown."""

    timeout_s: Annotated[float, Field(gt=0)] | None = None   # per attempt; None: the provider's own
    retries: Annotated[int, Field(ge=0, le=10)] = 0          # extra rounds over the targets
    backoff_s: Annotated[float, Field(ge=0)] = 0.25          # before round k: backoff_s * 2^(k-1)
    max_wait_s: Annotated[float, Field(ge=0)] = 5.0          # a longer wait (retry-after) ends retries
    cooldown: CooldownConfig = CooldownConfig()


class FallbackPolicyConfig(_PolicyBase):
    strategy: Literal["fallback"]
    targets: Annotated[list[str], Field(min_length=1)]


class WeightedTarget(_Strict):
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0


class WeightedPolicyConfig(_PolicyBase):
    strategy: Literal["weighted"]
    targets: Annotated[list[WeightedTarget], Field(min_length=1)]

    @field_validator("targets", mode="before")
    @classmethod
    def _bare_names(cls, v: object) -> object:
        """A bare model name is a target of weight 1."""
        return [{"model": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v


class LatencyPolicyConfig(_PolicyBase):
    strategy: Literal["latency"]
    targets: Annotated[list[str], Field(min_length=1)]
    explore: Annotated[float, Field(ge=0, le=1)] = 0.05     # share of requests sent to another target


PolicyConfig = Annotated[FallbackPolicyConfig | WeightedPolicyConfig | LatencyPolicyConfig,
                         Field(discriminator="strategy")]
STRATEGIES = ("fallback", "weighted", "latency")


def target_names(policy: FallbackPolicyConfig | WeightedPolicyConfig | LatencyPolicyConfig) -> list[str]:
    """The model names a policy routes to, in config order."""
    return [t.model if isinstance(t, WeightedTarget) else t for t in policy.targets]


ALERT_KINDS = ("threshold", "projected_overrun", "spend_spike", "error_rate")
AlertKind = Literal["threshold", "projected_overrun", "spend_spike", "error_rate"]
Percent = Annotated[int, Field(ge=1, le=1000)]


class WebhookConfig(_Strict):
    """One receiver of alert events: signed with `secret`, retried for up to `retry_for_s`.

    The URL must reach a public address unless `allow_private` (docs/alerts.md says why)."""

    url: str
    secret: str
    kinds: list[AlertKind] = ["threshold", "projected_overrun", "spend_spike", "error_rate"]
    format: Literal["json", "slack"] = "json"
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    retry_for_s: Annotated[float, Field(ge=0)] = 3600.0
    allow_private: bool = False  # may resolve to loopback, private or link-local addresses

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (user:password@); the receiver checks the "
                             "Tallygate-Signature header instead")
        return v

    @model_validator(mode="after")
    def _public_ip(self) -> WebhookConfig:
        host = urlsplit(self.url).hostname or ""
        if not self.allow_private and is_ip(host) and not is_public(host):
            raise ValueError(f"url: {host} is not a public address (loopback, private, link-local or "
                             "metadata range); set allow_private: true for a receiver on your own network")
        return self


class SpikeConfig(_Strict):
    """Spend of the last hour of a group against its own trailing baseline (see observe/spikes.py)."""

    group_by: list[str] = []  # 'key', 'label.<name>', 'tag_level.<n>'
    factor: Annotated[Decimal, Field(gt=1)] = Decimal(3)
    min_usd: Annotated[Decimal, Field(ge=0)] = Decimal("1.00")
    baseline_hours: Annotated[int, Field(ge=1, le=24 * 14)] = 24
    min_baseline_hours: Annotated[int, Field(ge=1)] = 3

    @field_validator("group_by")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for g in v:
            kind, _, arg = g.partition(".")
            ok = (g == "key" or (kind == "label" and bool(arg))
                  or (kind == "tag_level" and arg.isdigit() and 1 <= int(arg) <= 8))
            if not ok:
                raise ValueError(f"{g!r}: a group is 'key', 'label.<name>' or 'tag_level.<1-8>'")
        return v


class ErrorRateConfig(_Strict):
    """Error rate of each model and provider over `window_s` against its trailing baseline."""

    group_by: list[Literal["model", "provider"]] = ["model", "provider"]
    factor: Annotated[Decimal, Field(gt=1)] = Decimal(3)
    min_rate: Annotated[Decimal, Field(ge=0, le=1)] = Decimal("0.05")
    min_requests: Annotated[int, Field(ge=1)] = 20
    window_s: Annotated[int, Field(ge=60)] = 300
    baseline_windows: Annotated[int, Field(ge=1)] = 12


class AlertsConfig(_Strict):
    """`alerts:` in tallygate.yaml."""

    enabled: bool = True
    thresholds: list[Percent] = [50, 80, 100]
    scope_thresholds: dict[str, list[Percent]] = {}  # by key id or 'budget:<id>': its own list
    webhooks: list[WebhookConfig] = []
    spike: SpikeConfig = SpikeConfig()
    error_rate: ErrorRateConfig | None = ErrorRateConfig()
    evaluate_every_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class MetricsConfig(_Strict):
    """`metrics:` in tallygate.yaml: Prometheus `/metrics`."""

    enabled: bool = True
    key_labels: list[str] = []  # key labels copied onto request series; nothing else a client sets
    bearer_token: str | None = None


class TracingConfig(_Strict):
    """`tracing:` in tallygate.yaml; the exporter itself is configured by the OTEL_* variables."""

    enabled: bool = False  # prompts and completions are never put on spans


class ReportingConfig(_Strict):
    """`reporting:` in tallygate.yaml: the time zone of analytics days, months and invoices."""

    timezone: str = "UTC"  # an IANA name; `tz=` on a question overrides it

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zone(v)
        except ValueError:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as UTC, Europe/Berlin "
                             "or Asia/Kolkata") from None
        return "UTC" if v == "Etc/UTC" else v


class GatewayConfig(_Strict):
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    policies: dict[str, PolicyConfig] = {}
    alerts: AlertsConfig = AlertsConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    reporting: ReportingConfig = ReportingConfig()


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
